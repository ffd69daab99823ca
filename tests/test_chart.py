"""The Helm chart, rendered by real helm and validated against the Kubernetes API schemas.

Every values variant in ``charts/charon/ci/`` is rendered with ``helm template`` and checked by
``kubernetes-validate --strict`` (the apiserver's OpenAPI schemas); the custom kinds the chart can
emit (Prometheus Operator, KEDA) have no schema there and are checked structurally here instead.
On top come the checks a schema cannot make: selectors match pod labels, Services point at named
container ports, workers are wired to the router's worker Service, GPU requests, probes, security
contexts, and the environment the pods get is accepted by charon's own settings loader.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from charon.settings import Settings
from tests.tooling import CHART, ROOT, run, tool

KUBE_VERSION = "1.30.0"
RELEASE = "charon"
NAMESPACE = "charon"
VALUES_FILES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
VARIANTS = ["default", *VALUES_FILES]
# Custom resources: no schema in kubernetes-validate; validated structurally below.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"}
Manifest = dict[str, Any]


def _values_args(variant: str) -> list[str]:
    return [] if variant == "default" else ["-f", str(CHART / "ci" / variant)]


def helm_template(*args: str) -> tuple[int, str, str]:
    helm = tool("helm")
    res = run(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
              "--kube-version", KUBE_VERSION, *args)
    return res.returncode, res.stdout, res.stderr


@functools.cache
def _rendered_text(variant: str, extra: tuple[str, ...] = ()) -> str:
    rc, out, err = helm_template(*_values_args(variant), *extra)
    assert rc == 0, f"helm template ({variant}) failed:\n{err}"
    return out


def render(variant: str = "default", *extra: str) -> list[Manifest]:
    docs = [d for d in yaml.safe_load_all(_rendered_text(variant, tuple(extra))) if d]
    assert all(isinstance(d, dict) and "kind" in d for d in docs)
    return docs


def by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str, name: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(deploy: Manifest) -> Manifest:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(ctr: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in ctr.get("env", []) if "value" in e}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- lint and schema validation -----------------------------------------------------------------


def test_helm_lint_strict_passes_for_every_variant() -> None:
    helm = tool("helm")
    for variant in VARIANTS:
        res = run(helm, "lint", "--strict", str(CHART), *_values_args(variant))
        assert res.returncode == 0, f"helm lint --strict ({variant}):\n{res.stdout}{res.stderr}"
        assert "0 chart(s) failed" in res.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_pass_kubernetes_validate_strict(variant: str, tmp_path: Path) -> None:
    validator = tool("kubernetes-validate")
    out = tmp_path / "rendered.yaml"
    out.write_text(_rendered_text(variant))
    res = run(validator, "--strict", "-k", KUBE_VERSION, str(out), timeout=120)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    unknown = set(re.findall(r"Couldn't find schema for kind (\w+)", text))
    assert unknown <= CRD_KINDS, f"kinds without a schema outside the CRD allowlist: {unknown - CRD_KINDS}"
    kinds = {d["kind"] for d in render(variant)}
    # Every non-CRD object was really validated (not silently skipped).
    for kind in kinds - CRD_KINDS:
        assert re.search(rf"passed for resource {kind.lower()}/", text, re.IGNORECASE), (kind, text)


@pytest.mark.parametrize("kube_version", ["1.25.0", "1.37.0"])
def test_every_variant_validates_against_the_oldest_and_newest_supported_api(kube_version: str,
                                                                             tmp_path: Path) -> None:
    """Chart.yaml says kubeVersion >= 1.25: no API the chart uses is missing there or removed since."""
    validator = tool("kubernetes-validate")
    out = tmp_path / "all.yaml"
    out.write_text("---\n".join(_rendered_text(v) for v in VARIANTS))
    res = run(validator, "--strict", "-k", kube_version, str(out), timeout=120)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    assert set(re.findall(r"Couldn't find schema for kind (\w+)", text)) <= CRD_KINDS


def test_kubernetes_validate_catches_a_broken_manifest(tmp_path: Path) -> None:
    """The validator is not a no-op: a misspelt field in a rendered Deployment fails strict mode."""
    validator = tool("kubernetes-validate")
    broken = _rendered_text("default").replace("  replicas: 1\n", "  replica: 1\n", 1)
    out = tmp_path / "broken.yaml"
    out.write_text(broken)
    res = run(validator, "--strict", "-k", KUBE_VERSION, str(out), timeout=120)
    assert res.returncode != 0
    assert "replica" in res.stdout + res.stderr


def test_yamllint_accepts_chart_files_and_rendered_output(tmp_path: Path) -> None:
    yamllint = tool("yamllint")
    out = tmp_path / "rendered.yaml"
    out.write_text("".join(_rendered_text(v) for v in VARIANTS))
    # The dashboard JSON inside its ConfigMap has long lines; toYaml writes unindented sequences.
    config = "{extends: relaxed, rules: {line-length: disable, indentation: {indent-sequences: whatever}}}"
    files = [str(out), str(CHART / "values.yaml"), str(CHART / "Chart.yaml"),
             *(str(p) for p in sorted((CHART / "ci").glob("*.yaml")))]
    res = run(yamllint, "-s", "-d", config, *files)
    assert res.returncode == 0, res.stdout + res.stderr


# --- negative: the values schema and the template guards ----------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "worker.replicas=abc"], "worker.replicas"),
        (["--set", "router.replicas=one"], "router.replicas"),
        (["--set", "worker.replica=2"], "replica"),
        (["--set", "wroker.replicas=2"], "wroker"),
        (["--set", "config.router.queue_deadline_s=-1"], "config.router.queue_deadline_s"),
        (["--set", "config.engine.backend=cuda"], "config.engine.backend"),
        (["--set", "config.enigne.seed=1"], "enigne"),
        (["--set", "config.worker.router=http://x"], "config.worker.router"),
        (["--set", "router.service.type=Ingress"], "router.service.type"),
        (["--set", "autoscaling.keda.enabled=true", "--set", "autoscaling.hpa.enabled=true"],
         "mutually exclusive"),
        (["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true"],
         "mutually exclusive"),
        (["--set", "config.metrics.enabled=false"], "config.metrics.enabled"),
    ],
)
def test_invalid_values_fail_helm_template_with_the_key_named(args: list[str], message: str) -> None:
    rc, _, err = helm_template(*args)
    assert rc != 0
    assert message in err, err


def test_global_values_are_allowed() -> None:
    rc, _, err = helm_template("--set", "global.imageRegistry=example.org")
    assert rc == 0, err


# --- structure ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_workloads_selectors_services_and_ports_fit_together(variant: str) -> None:
    docs = render(variant)
    workloads = by_kind(docs, "Deployment")
    assert {d["metadata"]["name"] for d in workloads} >= {"charon-router", "charon-worker"}
    pod_labels = {}
    for d in workloads:
        tmpl_labels = d["spec"]["template"]["metadata"]["labels"]
        assert _matches(d["spec"]["selector"]["matchLabels"], tmpl_labels)
        assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert tmpl_labels["app.kubernetes.io/instance"] == RELEASE
        pod_labels[d["metadata"]["name"]] = (tmpl_labels, {p["name"]: p["containerPort"]
                                                           for p in container(d).get("ports", [])})
    for svc in by_kind(docs, "Service"):
        selected = [(labels, ports) for labels, ports in pod_labels.values()
                    if _matches(svc["spec"]["selector"], labels)]
        assert len(selected) == 1, f"Service {svc['metadata']['name']} selects {len(selected)} workloads"
        _, ports = selected[0]
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, (svc["metadata"]["name"], port)
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        assert any(_matches(pdb["spec"]["selector"]["matchLabels"], labels) for labels, _ in pod_labels.values())
    for np_ in by_kind(docs, "NetworkPolicy"):
        selected = [ports for labels, ports in pod_labels.values()
                    if _matches(np_["spec"]["podSelector"]["matchLabels"], labels)]
        assert len(selected) == 1
        for rule in np_["spec"]["ingress"]:
            for port in rule["ports"]:
                assert port["port"] in selected[0], (np_["metadata"]["name"], port)


@pytest.mark.parametrize("variant", VARIANTS)
def test_worker_is_wired_to_the_router_worker_service(variant: str) -> None:
    docs = render(variant)
    worker = container(one(docs, "Deployment", "charon-worker"))
    endpoint = env_of(worker)["CHARON_WORKER__ROUTER"]
    m = re.fullmatch(r"tcp://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)", endpoint)
    assert m, endpoint
    svc = one(docs, "Service", m.group(1))
    assert m.group(2) == NAMESPACE
    assert svc["spec"]["type"] == "ClusterIP"
    port = next(p for p in svc["spec"]["ports"] if p["port"] == int(m.group(3)))
    router = container(one(docs, "Deployment", "charon-router"))
    router_ports = {p["name"]: p["containerPort"] for p in router["ports"]}
    assert router_ports[port["targetPort"]] == int(m.group(3))
    # ... and the router really binds that port for workers.
    assert env_of(router)["CHARON_ROUTER__WORKERS_BIND"] == f"tcp://*:{router_ports['workers']}"
    assert env_of(router)["CHARON_ROUTER__BIND"] == f"tcp://*:{router_ports['zmq']}"
    assert router["args"] == ["router"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_environment_is_accepted_by_the_settings_loader(variant: str, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Values become CHARON_* variables that charon's own loader parses without error."""
    docs = render(variant)
    for deploy in by_kind(docs, "Deployment"):
        env = env_of(container(deploy))
        charon_env = {k: v for k, v in env.items() if k.startswith("CHARON_")}
        assert charon_env
        for key in list(os.environ):
            if key.startswith("CHARON_"):
                monkeypatch.delenv(key)
        for k, v in charon_env.items():
            monkeypatch.setenv(k, v)
        settings = Settings()
        for k, v in charon_env.items():
            section, field = k.removeprefix("CHARON_").lower().split("__")
            got = getattr(getattr(settings, section), field)
            assert str(got).lower() == v.lower() or float(got) == float(v), (k, v, got)


def test_config_values_reach_every_role_as_environment() -> None:
    docs = render("gpu-values.yaml")
    for name in ("charon-router", "charon-worker"):
        env = env_of(container(one(docs, "Deployment", name)))
        assert env["CHARON_ROUTER__QUEUE_MAX_BYTES"] == "8589934592"  # no float exponent
        assert env["CHARON_WORKER__DRAIN_GRACE_S"] == "55.5"
        assert env["CHARON_ENGINE__DEVICE"] == "cuda"
    # An explicit config value wins over the chart's derived default.
    rc, out, err = helm_template("--set", "config.worker.router=tcp://elsewhere:7000")
    assert rc == 0, err
    worker = next(d for d in yaml.safe_load_all(out) if d and d["metadata"]["name"] == "charon-worker"
                  and d["kind"] == "Deployment")
    assert env_of(container(worker))["CHARON_WORKER__ROUTER"] == "tcp://elsewhere:7000"


@pytest.mark.parametrize(("variant", "drain", "margin"),
                         [("default", 25, 5), ("gpu-values.yaml", 55.5, 5)])
def test_worker_grace_period_covers_the_drain_setting(variant: str, drain: float, margin: int) -> None:
    spec = one(render(variant), "Deployment", "charon-worker")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == math.ceil(drain) + margin
    assert Settings().worker.drain_grace_s == 25  # the chart's fallback mirrors the settings default


def test_gpu_worker_requests_gpus_and_tolerates_the_gpu_taint() -> None:
    docs = render("gpu-values.yaml")
    deploy = one(docs, "Deployment", "charon-worker")
    spec = deploy["spec"]["template"]["spec"]
    ctr = container(deploy)
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert ctr["args"] == ["worker"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["runtimeClassName"] == "nvidia"
    assert deploy["spec"]["replicas"] == 4
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    # Default values: one GPU per worker, no runtime class, no selector.
    default = one(render(), "Deployment", "charon-worker")
    assert container(default)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "runtimeClassName" not in default["spec"]["template"]["spec"]
    # The router never lands on GPU nodes because of a toleration.
    router = one(render("gpu-values.yaml"), "Deployment", "charon-router")["spec"]["template"]["spec"]
    assert "tolerations" not in router
    assert "nvidia.com/gpu" not in str(container(one(docs, "Deployment", "charon-router"))["resources"])


def test_cpu_only_worker_runs_builtin_engine_without_gpu() -> None:
    deploy = one(render("cpu-only-values.yaml"), "Deployment", "charon-worker")
    spec = deploy["spec"]["template"]["spec"]
    ctr = container(deploy)
    assert ctr["args"] == ["worker", "--backend", "builtin"]
    assert "nvidia.com/gpu" not in str(ctr["resources"])
    assert "tolerations" not in spec
    assert "runtimeClassName" not in spec
    assert env_of(ctr)["CHARON_ENGINE__DEVICE"] == "cpu"


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_are_locked_down(variant: str) -> None:
    docs = render(variant)
    pods = [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")] + \
           [d["spec"] for d in by_kind(docs, "Pod")]
    assert pods
    for spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        mounts_ok = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for ctr in spec["containers"] + spec.get("initContainers", []):
            sc = ctr["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "add" not in sc["capabilities"]
            assert sc["runAsUser"] != 0
            for mount in ctr.get("volumeMounts", []):
                # writable: emptyDirs, and the import cache and run-file volumes a user names for them
                assert mount["name"] in mounts_ok or mount.get("readOnly") is True \
                    or mount["mountPath"] in ("/var/cache/charon/detectors", "/var/lib/charon/runs"), mount


def test_worker_kernel_cache_is_a_writable_emptydir() -> None:
    deploy = one(render(), "Deployment", "charon-worker")
    ctr = container(deploy)
    cache = env_of(ctr)["CHARON_ENGINE__KERNEL_CACHE_DIR"]
    mount = next(m for m in ctr["volumeMounts"] if m["mountPath"] == cache)
    volume = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["sizeLimit"] == "2Gi"
    assert any(m["mountPath"] == "/tmp" for m in ctr["volumeMounts"])


def test_worker_detector_and_import_cache_come_from_the_named_volumes() -> None:
    deploy = one(render("detector-values.yaml"), "Deployment", "charon-worker")
    ctr = container(deploy)
    env = env_of(ctr)
    assert env["CHARON_ENGINE__DETECTOR"] == "/etc/charon/detector/experiment/geometry.gdml"
    assert env["CHARON_ENGINE__RATDB"] == "/etc/charon/detector/experiment/ratdb_dump.json"
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    assert mounts["/etc/charon/detector"]["readOnly"] is True
    assert volumes[mounts["/etc/charon/detector"]["name"]]["persistentVolumeClaim"]["claimName"] == "detectors"
    cache = mounts[env["CHARON_ENGINE__DETECTOR_CACHE_DIR"]]
    assert volumes[cache["name"]]["persistentVolumeClaim"]["claimName"] == "charon-import-cache"
    # without a detector file: the reference detector, no detector volumes
    plain = container(one(render(), "Deployment", "charon-worker"))
    assert "CHARON_ENGINE__DETECTOR" not in env_of(plain)
    assert all(m["mountPath"] != "/etc/charon/detector" for m in plain["volumeMounts"])


def test_async_mode_workers_write_run_files_to_the_named_claim() -> None:
    docs = render("async-values.yaml")
    deploy = one(docs, "Deployment", "charon-worker")
    ctr = container(deploy)
    env = env_of(ctr)
    assert env["CHARON_RUNS__OUTDIR"] == "/var/lib/charon/runs"
    assert env["CHARON_RUNS__ASYNC_MODE"] == "true"
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in ctr["volumeMounts"] if m["mountPath"] == env["CHARON_RUNS__OUTDIR"])
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "charon-runs"
    assert not mount.get("readOnly")
    router = env_of(container(one(docs, "Deployment", "charon-router")))
    assert router["CHARON_RUNS__ASYNC_MODE"] == "true"
    assert "CHARON_RUNS__OUTDIR" not in router  # the router writes no files
    plain = container(one(render(), "Deployment", "charon-worker"))
    assert "CHARON_RUNS__OUTDIR" not in env_of(plain)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--set", "config.runs.async_mode=true"], "worker.runs.claimName"),
     (["--set", "worker.runs.mountPath=relative"], "worker.runs.mountPath"),
     (["--set", "worker.detector.file=geo.gdml"], "worker.detector.volume"),
     (["--set", "worker.detector.ratdb=pmt.json"], "worker.detector.file"),
     (["--set", "worker.detector.file=/abs/geo.gdml"], "worker.detector.file")],
)
def test_detector_values_are_checked(args: list[str], message: str) -> None:
    rc, _, err = helm_template(*args)
    assert rc != 0
    assert message in err, err


@pytest.mark.parametrize("name", ["charon-router", "charon-worker"])
def test_probes_use_health_endpoints_on_the_metrics_port(name: str) -> None:
    ctr = container(one(render(), "Deployment", name))
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert ctr["startupProbe"]["httpGet"]["port"] == "metrics"
    port = next(p for p in ctr["ports"] if p["name"] == "metrics")
    assert env_of(ctr)["CHARON_METRICS__ADDR"] == f"0.0.0.0:{port['containerPort']}"


def test_pdb_only_with_more_than_one_worker() -> None:
    assert by_kind(render(), "PodDisruptionBudget") == []
    pdb = one(render("gpu-values.yaml"), "PodDisruptionBudget", "charon-worker")
    assert pdb["spec"]["maxUnavailable"] == 1
    # An autoscaler's minimum counts, not the static replica count.
    assert len(by_kind(render("keda-values.yaml"), "PodDisruptionBudget")) == 1


def test_worker_topology_spread_is_soft_over_nodes() -> None:
    template = one(render(), "Deployment", "charon-worker")["spec"]["template"]
    (tsc,) = template["spec"]["topologySpreadConstraints"]
    assert tsc["whenUnsatisfiable"] == "ScheduleAnyway"
    assert tsc["topologyKey"] == "kubernetes.io/hostname"
    assert _matches(tsc["labelSelector"]["matchLabels"], template["metadata"]["labels"])


def test_network_policies_open_only_the_needed_ports() -> None:
    docs = render("external-values.yaml")
    router = one(docs, "NetworkPolicy", "charon-router")
    rules = {r["ports"][0]["port"]: r.get("from") for r in router["spec"]["ingress"]}
    assert set(rules) == {"zmq", "workers", "metrics"}
    assert {"ipBlock": {"cidr": "192.0.2.0/24"}} in rules["zmq"]
    # The in-release gateway and helm test pod always reach the client port.
    components = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                  for p in rules["zmq"] if "podSelector" in p}
    assert components == {"gateway", "test"}
    assert rules["workers"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "charon", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "worker"}}}]
    assert rules["metrics"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring"
    worker = one(docs, "NetworkPolicy", "charon-worker")
    assert [r["ports"][0]["port"] for r in worker["spec"]["ingress"]] == ["metrics"]
    # Default: the client port is open to anyone (no "from").
    default_rules = one(render(), "NetworkPolicy", "charon-router")["spec"]["ingress"]
    assert "from" not in default_rules[0]


@pytest.mark.parametrize(("variant", "svc_type"),
                         [("default", "ClusterIP"), ("external-values.yaml", "LoadBalancer"),
                          ("nodeport-values.yaml", "NodePort")])
def test_client_service_type_and_port(variant: str, svc_type: str) -> None:
    svc = one(render(variant), "Service", "charon-router")
    assert svc["spec"]["type"] == svc_type
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 5555
    if variant == "nodeport-values.yaml":
        assert port["nodePort"] == 30555
    if variant == "external-values.yaml":
        assert svc["spec"]["loadBalancerSourceRanges"] == ["192.0.2.0/24"]
        assert svc["spec"]["externalTrafficPolicy"] == "Local"
    internal = one(render(variant), "Service", "charon-router-internal")
    assert internal["spec"]["type"] == "ClusterIP"
    assert {p["name"]: p["port"] for p in internal["spec"]["ports"]} == {"workers": 6667, "metrics": 9100}


def test_helm_test_pod_pings_and_simulates_through_the_router() -> None:
    docs = render()
    (pod,) = by_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    worker_image = container(one(docs, "Deployment", "charon-worker"))["image"]
    client = "tcp://charon-router.charon.svc:5555"
    (ping,) = pod["spec"]["initContainers"]
    (sim,) = pod["spec"]["containers"]
    assert ping["image"] == sim["image"] == worker_image
    assert ping["args"] == ["ping", "--endpoint", client]
    assert sim["args"] == ["simulate", "--events", "2", "--photons", "1000", "--endpoint", client]
    assert env_of(sim)["CHARON_CLIENT__TIMEOUT_S"] == "120"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_gateway_is_optional_and_forwards_to_the_router() -> None:
    assert not [d for d in render() if d["metadata"]["name"].endswith("-gateway")]
    docs = render("gateway-values.yaml")
    deploy = one(docs, "Deployment", "charon-gateway")
    ctr = container(deploy)
    assert ctr["args"] == ["flukaio-gateway", "--router", "tcp://charon-router.charon.svc:5555"]
    assert env_of(ctr)["CHARON_GATEWAY__LISTEN"] == "tcp://*:14999"
    svc = one(docs, "Service", "charon-gateway")
    assert svc["spec"]["type"] == "NodePort"
    assert {p["name"]: p.get("nodePort") for p in svc["spec"]["ports"]}["flukaio"] == 31499
    assert ctr["image"].startswith("charon-worker:")


def test_image_overrides_and_digests() -> None:
    rc, out, err = helm_template("--set", "router.image.repository=reg.example/charon-router",
                                 "--set", "router.image.tag=abc123",
                                 "--set", "worker.image.digest=sha256:" + "0" * 64)
    assert rc == 0, err
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert container(one(docs, "Deployment", "charon-router"))["image"] == "reg.example/charon-router:abc123"
    assert container(one(docs, "Deployment", "charon-worker"))["image"] == "charon-worker@sha256:" + "0" * 64


def test_labels_follow_helm_conventions() -> None:
    for d in render("monitoring-values.yaml"):
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "charon"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["helm.sh/chart"] == "charon-0.1.0"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", d["metadata"]["name"])
        assert len(d["metadata"]["name"]) <= 63


def test_long_release_names_stay_within_63_characters() -> None:
    helm = tool("helm")
    name = "a-very-long-release-name-that-goes-on-and-on-forever"
    res = run(helm, "template", name, str(CHART), "-f", str(CHART / "ci" / "gateway-values.yaml"))
    assert res.returncode == 0, res.stderr
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(res.stdout) if d]
    assert all(len(n) <= 63 and not n.endswith("-") for n in names), names
    per_kind = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(res.stdout) if d]
    assert len(set(per_kind)) == len(per_kind)


# --- custom resources (no apiserver schema offline: structural checks) --------------------------


def test_service_monitor_selects_the_metrics_services() -> None:
    docs = render("monitoring-values.yaml")
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = [s for s in by_kind(docs, "Service") if _matches(sm["spec"]["selector"]["matchLabels"],
                                                                s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in selected} == {"charon-router-internal", "charon-worker-metrics"}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert all("metrics" in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    targets = {r["targetLabel"] for r in endpoint["relabelings"]}
    assert {"charon_release", "charon_component"} <= targets
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


def test_pod_monitor_selects_router_and_worker_pods() -> None:
    docs = render("podmonitor-values.yaml")
    (pm,) = by_kind(docs, "PodMonitor")
    exprs = {e["key"]: e["values"] for e in pm["spec"]["selector"]["matchExpressions"]}
    for deploy in by_kind(docs, "Deployment"):
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] in v for k, v in exprs.items())
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"


def test_prometheus_rule_has_the_four_symptom_alerts() -> None:
    (rule,) = by_kind(render("monitoring-values.yaml"), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"CharonNoReadyWorkers", "CharonQueueSaturated", "CharonRequestsFailing",
            "CharonWorkersFlapping"} <= set(alerts)
    for alert in alerts.values():
        assert 'charon_release="charon"' in alert["expr"]
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert alert["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", alert["for"])


def test_keda_scaled_object_scales_workers_on_queue_depth() -> None:
    docs = render("keda-values.yaml")
    (so,) = by_kind(docs, "ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == "charon-worker"
    assert so["spec"]["minReplicaCount"] >= 1
    assert so["spec"]["maxReplicaCount"] == 16
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    assert meta["ignoreNullValues"] == "false"
    # Outstanding requests: the queue alone reads 0 while every worker is busy.
    assert meta["query"] == ('sum(charon_queue_depth{namespace="charon", charon_release="charon", '
                             'charon_component="router"}) + sum(charon_in_flight{namespace="charon", '
                             'charon_release="charon", charon_component="router"})')
    assert all(isinstance(v, str) for v in meta.values())  # KEDA metadata is map[string]string
    assert float(meta["threshold"]) == 3
    # The autoscaler owns the count: the Deployment leaves replicas unset.
    assert "replicas" not in one(docs, "Deployment", "charon-worker")["spec"]
    assert not by_kind(docs, "HorizontalPodAutoscaler")


def test_hpa_scales_workers_on_the_external_queue_metric() -> None:
    docs = render("hpa-values.yaml")
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "charon-worker"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "charon_outstanding_requests"
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"charon_release": RELEASE}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "2"}
    assert "replicas" not in one(docs, "Deployment", "charon-worker")["spec"]
    assert not by_kind(docs, "ScaledObject")


def test_dashboard_configmap_carries_the_sidecar_label_and_valid_json() -> None:
    docs = render("monitoring-values.yaml")
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if "charon.json" in d.get("data", {})]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "charon"
    dashboard = json.loads(cm["data"]["charon.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "charon.json").read_text())
    assert len(cm["data"]["charon.json"]) < 1024 * 1024


def test_ci_values_files_cover_the_documented_variants() -> None:
    assert {"gpu-values.yaml", "cpu-only-values.yaml", "keda-values.yaml", "monitoring-values.yaml",
            "external-values.yaml", "gateway-values.yaml"} <= set(VALUES_FILES)
    assert (ROOT / "charts" / "charon" / "values.schema.json").exists()
