"""The chart's CURVE wiring, rendered by real helm: Secrets mounted where the settings point.

The kubelet's part is played here: each rendered Secret volume (with its ``items``) is laid out in
a temporary directory from Secrets holding keys made by ``charon keys generate``, the pod's
``CHARON_SECURITY__*`` environment is pointed at it, and charon's own loaders must accept what
they find. So the key names the chart documents, the mounts and the settings agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from charon import curve
from charon.settings import SecuritySettings
from tests.test_chart import by_kind, container, env_of, helm_template, one, render

CURVE = "curve-values.yaml"
MOUNT = "/etc/charon/curve"
SECRETS = ("charon-curve-router", "charon-curve-workers", "charon-curve-worker", "charon-curve-clients",
           "charon-curve-client")


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"])


def curve_volumes(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v["secret"] for v in spec.get("volumes", []) if v["name"].startswith("curve-")}


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """The Secrets docs/security.md tells the user to create, from real key files."""
    keys = tmp_path_factory.mktemp("keys")
    for name in ("router", "worker", "client", "alice"):
        curve.generate(keys, name)

    def files(*names: str) -> dict[str, bytes]:
        return {n: (keys / n).read_bytes() for n in names}

    return {
        "charon-curve-router": files("router.key", "router.key_secret"),
        "charon-curve-workers": files("worker.key"),
        "charon-curve-worker": files("worker.key_secret"),
        "charon-curve-clients": files("client.key", "alice.key"),
        "charon-curve-client": files("client.key_secret"),
    }


def kubelet(ctr: dict[str, Any], spec: dict[str, Any], secrets: dict[str, dict[str, bytes]],
            root: Path) -> SecuritySettings:
    """Lay out the container's curve mounts under ``root``; its security settings, re-rooted."""
    volumes = curve_volumes(spec)
    for mount in ctr.get("volumeMounts", []):
        if mount["name"] not in volumes:
            continue
        assert mount["mountPath"].startswith(MOUNT + "/")
        assert mount.get("readOnly") is True
        source = volumes[mount["name"]]
        data = secrets[source["secretName"]]
        target = root / mount["mountPath"].removeprefix(MOUNT + "/")
        target.mkdir(parents=True)
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            (target / item["path"]).write_bytes(data[item["key"]])
    fields = {k.removeprefix("CHARON_SECURITY__").lower(): v.replace(MOUNT, str(root))
              for k, v in env_of(ctr).items() if k.startswith("CHARON_SECURITY__")}
    return SecuritySettings(**fields)


def workloads(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """role -> (pod spec, its containers), for every pod the chart runs."""
    out = {}
    for d in by_kind(docs, "Deployment") + by_kind(docs, "Pod"):
        spec = pod_spec(d)
        role = d["metadata"]["labels"]["app.kubernetes.io/component"]
        out[role] = (spec, [*spec.get("initContainers", []), *spec["containers"]])
    return out


def test_every_pod_loads_the_keys_the_chart_mounts(secrets: dict[str, dict[str, bytes]], tmp_path: Path) -> None:
    pods = workloads(render(CURVE))
    assert set(pods) == {"router", "worker", "gateway", "test"}
    router_spec, (router_ctr,) = pods["router"]
    keys = curve.router_keys(kubelet(router_ctr, router_spec, secrets, tmp_path / "router"))
    assert keys is not None
    assert keys.clients.allowed is not None
    assert len(keys.clients.allowed) == 2
    assert keys.workers.allowed is not None
    assert len(keys.workers.allowed) == 1
    router_public = keys.clients.keys.public

    worker_spec, (worker_ctr,) = pods["worker"]
    worker = curve.worker_keys(kubelet(worker_ctr, worker_spec, secrets, tmp_path / "worker"))
    assert worker is not None
    assert worker.server_public == router_public
    assert worker.keys.public in keys.workers.allowed

    for role in ("gateway", "test"):
        spec, ctrs = pods[role]
        for i, ctr in enumerate(ctrs):
            client = curve.client_keys(kubelet(ctr, spec, secrets, tmp_path / f"{role}{i}"))
            assert client is not None, (role, ctr["name"])
            assert client.server_public == router_public, (role, ctr["name"])
            assert client.keys.public in keys.clients.allowed


def test_the_router_secret_key_stays_in_the_router_pod() -> None:
    for role, (spec, _) in workloads(render(CURVE)).items():
        for name, secret in curve_volumes(spec).items():
            if secret["secretName"] != "charon-curve-router" or role == "router":
                continue
            assert [i["key"] for i in secret["items"]] == ["router.key"], (role, name)


def test_secret_files_are_not_world_readable() -> None:
    for role, (spec, _) in workloads(render(CURVE)).items():
        own = curve_volumes(spec)["curve-own"]
        assert own["defaultMode"] == 0o440, role
        assert [i["path"] for i in own["items"]] == [f"{'client' if role in ('gateway', 'test') else role}.key_secret"]


def test_curve_off_by_default_leaves_no_trace() -> None:
    for doc in by_kind(render(), "Deployment"):
        assert not curve_volumes(pod_spec(doc))
        assert not [k for k in env_of(container(doc)) if k.startswith("CHARON_SECURITY__")]


def test_without_a_client_list_the_router_takes_any_client_key() -> None:
    docs = render(CURVE, "--set", "security.curve.clients.secretName=", "--set", "security.curve.client.secretName=")
    router = env_of(container(one(docs, "Deployment", "charon-router")))
    assert "CHARON_SECURITY__CURVE_CLIENTS" not in router
    assert router["CHARON_SECURITY__CURVE_WORKERS"] == f"{MOUNT}/workers"
    gateway = env_of(container(one(docs, "Deployment", "charon-gateway")))
    assert "CHARON_SECURITY__CURVE_SECRET_KEY" not in gateway  # a fresh key pair per start
    assert gateway["CHARON_SECURITY__CURVE_SERVER_KEY"] == f"{MOUNT}/server/router.key"


@pytest.mark.parametrize(("unset", "message"), [
    ("router", "security.curve.router.secretName is needed with security.curve.enabled"),
    ("workers", "security.curve.workers.secretName is needed with security.curve.enabled"),
    ("worker", "security.curve.worker.secretName is needed with security.curve.enabled"),
    ("client", "security.curve.client.secretName is needed with security.curve.clients.secretName"),
])
def test_a_missing_secret_fails_the_render_naming_the_value(unset: str, message: str) -> None:
    rc, _, err = helm_template("-f", str(Path(__file__).resolve().parents[1] / "charts" / "charon" / "ci" / CURVE),
                               "--set", f"security.curve.{unset}.secretName=")
    assert rc != 0
    assert message in err


def test_a_bad_secret_name_is_refused_by_the_schema() -> None:
    rc, _, err = helm_template("--set", "security.curve.router.secretName=Not_A_Name")
    assert rc != 0
    assert "security.curve.router.secretName" in err or "secretName" in err
