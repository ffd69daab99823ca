"""``charon cluster check|status`` against API server responses kept in tests/fixtures/cluster.

There is no API server in CI. The fixtures are JSON documents in the API's own shapes (NodeList,
CustomResourceDefinition, APIService, RuntimeClass, SelfSubjectAccessReview, PodList), served two
ways: :class:`RecordedAPI` answers the :class:`charon.cluster.ClusterAPI` seam directly (fast, many
scenarios), and a loopback HTTP server answers the real ``kubernetes`` client at the real API paths
for the CLI run end to end (kubeconfig, client, HTTP, JSON).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import pytest

from charon import cluster
from tests.tooling import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "cluster"
Json = dict[str, Any]


class RecordedAPI:
    """A ClusterAPI that answers from a recorded scenario and logs the calls made."""

    def __init__(self, *names: str) -> None:
        self.data: Json = {}
        for name in names:
            self.data.update(json.loads((FIXTURES / name).read_text()))
        self.calls: list[tuple[str, str]] = []

    def _named(self, key: str, name: str) -> Json | None:
        self.calls.append((key, name))
        return next((o for o in self.data.get(key, []) if o["metadata"]["name"] == name), None)

    def list_nodes(self) -> Json:
        self.calls.append(("nodes", ""))
        return dict(self.data["nodes"])

    def get_namespace(self, name: str) -> Json | None:
        return self._named("namespaces", name)

    def get_crd(self, name: str) -> Json | None:
        return self._named("crds", name)

    def get_api_service(self, name: str) -> Json | None:
        return self._named("apiservices", name)

    def get_runtime_class(self, name: str) -> Json | None:
        return self._named("runtimeclasses", name)

    def access_review(self, attributes: Mapping[str, str]) -> Json:
        self.calls.append(("access", f"{attributes['group']}/{attributes['resource']}"))
        for review in self.data["access_reviews"]:
            attrs = review["spec"]["resourceAttributes"]
            if all(attrs.get(k) == v for k, v in attributes.items()):
                return dict(review)
        raise AssertionError(f"no recorded review for {dict(attributes)}")

    def list_pods(self, namespace: str, label_selector: str) -> Json:
        self.calls.append(("pods", f"{namespace}?{label_selector}"))
        return dict(self.data["pods"])


def _run(command: str, api: RecordedAPI, values: Json | None = None, namespace: str = "charon"
         ) -> tuple[int, list[str]]:
    out = io.StringIO()
    rc = cluster.run(command, api, namespace, "charon", values, out)
    return rc, out.getvalue().splitlines()


FULL_VALUES: Json = {
    "worker": {"replicas": 4, "gpu": {"runtimeClassName": "nvidia"}},
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "dashboards": {"enabled": True},
    "autoscaling": {"keda": {"enabled": True, "minReplicaCount": 2}},
}


def test_check_passes_on_a_prepared_gpu_cluster() -> None:
    api = RecordedAPI("gpu-cluster.json")
    rc, lines = _run("check", api, FULL_VALUES)
    assert rc == 0, lines
    assert not [line for line in lines if line.startswith(("FAIL", "WARN"))], lines
    assert "OK   2 GPU node(s) with 6 allocatable nvidia.com/gpu (gpu-a100-0=4, gpu-a100-1=2)" in lines
    assert "OK   CRD scaledobjects.keda.sh present" in lines
    assert "OK   RuntimeClass nvidia exists" in lines
    assert lines[-1] == "charon cluster check: ready to install (0 failed, 0 warning(s))"
    # Permission checked for every kind the release renders with these values (and Helm's Secret).
    reviewed = {name for kind, name in api.calls if kind == "access"}
    assert {"/secrets", "apps/deployments", "monitoring.coreos.com/servicemonitors",
            "monitoring.coreos.com/prometheusrules", "keda.sh/scaledobjects", "/configmaps",
            "networking.k8s.io/networkpolicies", "policy/poddisruptionbudgets"} <= reviewed
    assert "monitoring.coreos.com/podmonitors" not in reviewed


def test_check_reports_what_to_do_on_a_bare_cluster() -> None:
    rc, lines = _run("check", RecordedAPI("no-gpu.json"), FULL_VALUES)
    assert rc == 1
    fails = [line for line in lines if line.startswith("FAIL")]
    text = "\n".join(lines)
    assert "no schedulable node advertises allocatable nvidia.com/gpu" in text
    assert "install the NVIDIA device plugin or GPU Operator" in text
    assert "worker.gpu.enabled=false" in text
    assert ("FAIL CRD servicemonitors.monitoring.coreos.com missing but metrics.serviceMonitor.enabled=true: "
            "install the Prometheus Operator (e.g. kube-prometheus-stack), or set "
            "metrics.serviceMonitor.enabled=false") in lines
    assert any("scaledobjects.keda.sh missing" in f and "install KEDA" in f for f in fails)
    assert any("RuntimeClass nvidia" in f for f in fails)
    (perm,) = [f for f in fails if "may not create" in f]
    assert "networkpolicies.networking.k8s.io" in perm
    assert "servicemonitors.monitoring.coreos.com" in perm
    assert "Role/RoleBinding" in perm
    assert "WARN namespace charon does not exist: add --create-namespace to helm install" in lines
    assert lines[-1].startswith("charon cluster check: not ready to install (")
    assert all(len(line.splitlines()) == 1 for line in lines)


def test_cpu_only_values_need_no_gpu_and_no_crds() -> None:
    values = {"worker": {"gpu": {"enabled": False}}, "networkPolicy": {"enabled": False}}
    api = RecordedAPI("no-gpu.json")
    rc, lines = _run("check", api, values)
    assert "OK   CPU-only workers (worker.gpu.enabled=false): no GPU needed, 2 node(s)" in lines
    assert not [c for c in api.calls if c[0] == "crds"]
    assert rc == 0, lines  # only the missing namespace, a warning


def test_gpu_nodes_that_workers_cannot_use_are_named() -> None:
    rc, lines = _run("check", RecordedAPI("gpu-unusable.json"), {"networkPolicy": {"enabled": True}})
    assert rc == 1
    (fail,) = [line for line in lines if line.startswith("FAIL")]
    assert "gpu-0 (cordoned)" in fail
    assert "gpu-1 (taint dedicated=training:NoSchedule not tolerated)" in fail
    assert "gpu-2 (not Ready)" in fail


def test_check_warns_when_gpus_cannot_hold_every_worker() -> None:
    rc, lines = _run("check", RecordedAPI("gpu-cluster.json"), {"worker": {"replicas": 8}})
    assert rc == 0
    warn = [line for line in lines if line.startswith("WARN")]
    assert warn == [("WARN 8 worker(s) x 1 GPU need 8 nvidia.com/gpu but only 6 are allocatable: 2 worker(s) "
                     "will stay Pending; lower worker.replicas or add GPU nodes")]


def test_node_selector_restricts_the_gpu_nodes() -> None:
    values = {"worker": {"gpu": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}}}
    rc, lines = _run("check", RecordedAPI("gpu-cluster.json"), values)
    assert rc == 1
    assert any("gpu-a100-0 (does not match nodeSelector)" in line for line in lines)


def test_hpa_needs_the_external_metrics_api() -> None:
    values = {"autoscaling": {"hpa": {"enabled": True}}}
    rc, lines = _run("check", RecordedAPI("gpu-cluster.json"), values)
    assert rc == 0
    assert "OK   external metrics API v1beta1.external.metrics.k8s.io available for the HPA" in lines
    rc, lines = _run("check", RecordedAPI("no-gpu.json"), {**values, "worker": {"gpu": {"enabled": False}}})
    assert rc == 1
    assert any(line.startswith("FAIL external metrics API") and "prometheus-adapter" in line for line in lines)


def test_status_lists_pods_readiness_restarts_and_gpus() -> None:
    api = RecordedAPI("pods-degraded.json")
    rc, lines = _run("status", api)
    assert ("pods", "charon?app.kubernetes.io/instance=charon,app.kubernetes.io/name=charon") in api.calls
    assert rc == 0  # degraded but serving: a router and some workers are ready
    assert len(lines) == 6  # 5 pods (the finished helm test pod left out) + summary
    crash = next(line for line in lines if "kq7tz" in line)
    assert "NOT READY" in crash
    assert "CrashLoopBackOff" in crash
    assert "restarts=7" in crash
    pending = next(line for line in lines if "zz8wr" in line)
    assert "Unschedulable" in pending
    assert "gpus=0" in pending
    assert lines[-1] == ("release charon/charon: routers 1/1 ready, workers 2/4 ready; nvidia.com/gpu in use 3; "
                         "restarts 8")


def test_status_without_a_release_says_so() -> None:
    rc, lines = _run("status", RecordedAPI("pods-none.json"))
    assert rc == 1
    assert lines == ["no pods of release charon in namespace charon: is it installed? (helm list -n charon)"]


def test_fixtures_have_the_api_shapes() -> None:
    """The recorded documents are what the API returns (kinds, apiVersions), not ad-hoc dicts."""
    for path in FIXTURES.glob("*.json"):
        data = json.loads(path.read_text())
        assert data["description"]
        if "nodes" in data:
            assert data["nodes"]["kind"] == "NodeList"
            assert all("allocatable" in n["status"] for n in data["nodes"]["items"])
        for crd in data.get("crds", []):
            assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        for review in data.get("access_reviews", []):
            assert review["kind"] == "SelfSubjectAccessReview"
        if "pods" in data:
            assert data["pods"]["kind"] == "PodList"


def test_unknown_command_is_rejected() -> None:
    with pytest.raises(ValueError, match="check or status"):
        cluster.run("nuke", RecordedAPI("pods-none.json"), "charon", "charon", None, io.StringIO())


def test_cli_without_kubeconfig_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "CHARON_"))}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "missing-kubeconfig"))
    for action in ("check", "status"):
        res = subprocess.run([sys.executable, "-m", "charon", "cluster", action], capture_output=True,
                             text=True, timeout=60, env=env, check=False)
        assert res.returncode == 2, res.stderr
        assert res.stdout == ""
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "no Kubernetes configuration found" in res.stderr


# --- the real client over HTTP ------------------------------------------------------------------


class _FakeAPIServer:
    """A loopback HTTP server answering the API paths charon calls from a recorded scenario."""

    def __init__(self, *names: str) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        data: Json = {}
        for name in names:
            data.update(json.loads((FIXTURES / name).read_text()))
        self.requests: list[str] = []
        requests = self.requests

        def named(key: str, name: str) -> Json | None:
            return next((o for o in data.get(key, []) if o["metadata"]["name"] == name), None)

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: Json | None) -> None:
                if body is None:
                    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                            "code": 404, "message": f"{self.path} not found"}
                    code = 404
                else:
                    code = 200
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                requests.append("GET " + self.path)
                path = self.path.split("?", 1)[0]
                parts = path.strip("/").split("/")
                if path == "/api/v1/nodes":
                    self._reply(data["nodes"])
                elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 4:
                    self._reply(named("namespaces", parts[3]))
                elif parts[:3] == ["api", "v1", "namespaces"] and parts[4:] == ["pods"]:
                    self._reply(data["pods"])
                elif parts[:4] == ["apis", "apiextensions.k8s.io", "v1", "customresourcedefinitions"]:
                    self._reply(named("crds", parts[4]))
                elif parts[:4] == ["apis", "apiregistration.k8s.io", "v1", "apiservices"]:
                    self._reply(named("apiservices", parts[4]))
                elif parts[:4] == ["apis", "node.k8s.io", "v1", "runtimeclasses"]:
                    self._reply(named("runtimeclasses", parts[4]))
                else:
                    self._reply(None)

            def do_POST(self) -> None:
                requests.append("POST " + self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                attrs = body["spec"]["resourceAttributes"]
                for review in data["access_reviews"]:
                    recorded = review["spec"]["resourceAttributes"]
                    if all(recorded.get(k) == attrs.get(k) for k in ("namespace", "verb", "group", "resource")):
                        self._reply(review)
                        return
                self._reply(None)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "recorded",
            "clusters": [{"name": "recorded", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "alice", "user": {"token": "recorded-token"}}],
            "contexts": [{"name": "recorded", "context": {"cluster": "recorded", "user": "alice"}}],
        }))
        return path


def _cli(tmp_path: Path, server: _FakeAPIServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "CHARON_"))}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(server.kubeconfig(tmp_path / "kubeconfig")))
    return subprocess.run([sys.executable, "-m", "charon", "cluster", *args, "--namespace", "charon",
                           "--release", "charon"], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_cli_check_through_the_kubernetes_client(tmp_path: Path) -> None:
    """`charon cluster check` end to end: CLI, kubeconfig, the kubernetes client, HTTP, JSON."""
    import yaml

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(FULL_VALUES))
    with _FakeAPIServer("gpu-cluster.json") as server:
        res = _cli(tmp_path, server, "check", "--values", str(values))
        ok = res.returncode, res.stdout, res.stderr
        requests = list(server.requests)
    assert ok[0] == 0, ok
    assert "OK   2 GPU node(s) with 6 allocatable nvidia.com/gpu (gpu-a100-0=4, gpu-a100-1=2)" in res.stdout
    assert "GET /api/v1/nodes" in requests
    assert "GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/scaledobjects.keda.sh" in requests
    assert "GET /apis/node.k8s.io/v1/runtimeclasses/nvidia" in requests
    # secrets, services, serviceaccounts, deployments, PDBs, test pod, network policies, dashboard
    # ConfigMaps, ServiceMonitor, PrometheusRule, ScaledObject
    assert requests.count("POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews") == 11

    with _FakeAPIServer("no-gpu.json") as server:
        res = _cli(tmp_path, server, "check", "--values", str(values))
    assert res.returncode == 1, res.stderr
    assert "FAIL CRD servicemonitors.monitoring.coreos.com missing" in res.stdout


def test_cli_status_through_the_kubernetes_client(tmp_path: Path) -> None:
    with _FakeAPIServer("pods-degraded.json") as server:
        res = _cli(tmp_path, server, "status")
        requests = list(server.requests)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1].startswith("release charon/charon: routers 1/1 ready, workers 2/4 ready")
    (pods,) = [r for r in requests if "/pods" in r]
    assert pods.startswith("GET /api/v1/namespaces/charon/pods?labelSelector=app.kubernetes.io")


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("worker:\n  replicas: abc\n", "worker.replicas must be an integer, got 'abc'"),
    ("worker:\n  gpu:\n    enabled: 'no'\n", "worker.gpu.enabled must be true or false, got 'no'"),
    ("worker:\n  nodeSelector: [gpu]\n", "worker.nodeSelector must be a mapping, got ['gpu']"),
])
def test_cli_names_a_mistyped_values_key_in_one_line(tmp_path: Path, yaml_text: str, message: str) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "CHARON_"))}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "absent"))
    res = subprocess.run([sys.executable, "-m", "charon", "cluster", "check", "--values", str(values)],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"charon cluster: --values: {message}"], res.stderr


def test_cli_reports_an_unreachable_api_server_in_one_line(tmp_path: Path) -> None:
    with _FakeAPIServer("pods-none.json") as server:
        kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    # The server is gone: connection refused.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "CHARON_"))}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(kubeconfig))
    res = subprocess.run([sys.executable, "-m", "charon", "cluster", "status"], capture_output=True, text=True,
                         timeout=90, env=env, check=False)
    assert res.returncode == 2
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"cannot reach the API server at http://127.0.0.1:{server.port}: [Errno 111] Connection refused" in res.stderr
