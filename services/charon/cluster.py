"""``charon cluster check|status``: a preflight before ``helm install`` and a view of a release.

``check`` asks the cluster what the chart will need: nodes advertising allocatable GPUs (when the
workers use them), the Prometheus Operator and KEDA CRDs (when the values turn those features on),
the external-metrics API (HPA), the runtime class, and permission to create every kind of object
the release renders (SelfSubjectAccessReview). Each finding is one line saying what to do.
``status`` lists the release's router, worker and gateway pods with readiness, restarts and GPUs.

All cluster access goes through :class:`ClusterAPI`, a handful of calls returning the API server's
JSON. :class:`KubernetesAPI` implements it with the ``kubernetes`` client (imported lazily: the
``cluster`` extra); tests drive the same logic with recorded responses.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from charon.errors import ClusterUnavailable, ConfigError

Json = dict[str, Any]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_UNAVAILABLE = 2

CHART_NAME = "charon"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
MONITORING_GROUP = "monitoring.coreos.com"
EXTERNAL_METRICS_API = "v1beta1.external.metrics.k8s.io"


class InvalidValues(ConfigError, ValueError):
    """A values file whose key has the wrong type (what ``helm install`` would reject too)."""


class ClusterAPI(Protocol):
    """The few API calls charon needs; every method returns the server's JSON (or None on 404)."""

    def list_nodes(self) -> Json: ...

    def get_namespace(self, name: str) -> Json | None: ...

    def get_crd(self, name: str) -> Json | None: ...

    def get_api_service(self, name: str) -> Json | None: ...

    def get_runtime_class(self, name: str) -> Json | None: ...

    def access_review(self, attributes: Mapping[str, str]) -> Json: ...

    def list_pods(self, namespace: str, label_selector: str) -> Json: ...


# --- values -------------------------------------------------------------------------------------


def _get(values: Mapping[str, Any] | None, dotted: str, default: Any) -> Any:
    node: Any = values or {}
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return default if node is None else node


def _typed(values: Mapping[str, Any] | None, dotted: str, default: Any, kind: type, what: str) -> Any:
    value = _get(values, dotted, default)
    # bool is an int subclass: a count given as true/false is as wrong as one given as text.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidValues(f"{dotted} must be {what}, got {value!r}")
    return value


def _flag(values: Mapping[str, Any] | None, dotted: str, default: bool) -> bool:
    return bool(_typed(values, dotted, default, bool, "true or false"))


def _count(values: Mapping[str, Any] | None, dotted: str, default: int) -> int:
    return int(_typed(values, dotted, default, int, "an integer"))


def _text(values: Mapping[str, Any] | None, dotted: str, default: str) -> str:
    return str(_typed(values, dotted, default, str, "a string"))


@dataclass(frozen=True)
class Plan:
    """What a release with the given values needs from the cluster (chart defaults filled in)."""

    gpu: bool
    gpu_resource: str
    gpus_per_worker: int
    workers: int
    node_selector: dict[str, str]
    runtime_class: str
    service_monitor: bool
    pod_monitor: bool
    prometheus_rule: bool
    dashboards: bool
    keda: bool
    hpa: bool
    gateway: bool
    network_policy: bool
    tests: bool

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None) -> Plan:
        gpu = _flag(values, "worker.gpu.enabled", True)
        keda = _flag(values, "autoscaling.keda.enabled", False)
        hpa = _flag(values, "autoscaling.hpa.enabled", False)
        if keda:
            workers = _count(values, "autoscaling.keda.minReplicaCount", 1)
        elif hpa:
            workers = _count(values, "autoscaling.hpa.minReplicas", 1)
        else:
            workers = _count(values, "worker.replicas", 1)
        selector = {**_typed(values, "worker.nodeSelector", {}, dict, "a mapping"),
                    **(_typed(values, "worker.gpu.nodeSelector", {}, dict, "a mapping") if gpu else {})}
        return cls(
            gpu=gpu,
            gpu_resource=_text(values, "worker.gpu.resourceName", DEFAULT_GPU_RESOURCE),
            gpus_per_worker=_count(values, "worker.gpu.count", 1),
            workers=workers,
            node_selector={str(k): str(v) for k, v in selector.items()},
            runtime_class=_text(values, "worker.gpu.runtimeClassName", "") if gpu else "",
            service_monitor=_flag(values, "metrics.serviceMonitor.enabled", False),
            pod_monitor=_flag(values, "metrics.podMonitor.enabled", False),
            prometheus_rule=_flag(values, "metrics.prometheusRule.enabled", False),
            dashboards=_flag(values, "dashboards.enabled", False),
            keda=keda,
            hpa=hpa,
            gateway=_flag(values, "gateway.enabled", False),
            network_policy=_flag(values, "networkPolicy.enabled", True),
            tests=_flag(values, "tests.enabled", True),
        )

    def resources(self) -> list[tuple[str, str]]:
        """(API group, resource) of every object kind the release creates, plus Helm's own Secret."""
        out = [("", "secrets"), ("", "services"), ("", "serviceaccounts"), ("apps", "deployments"),
               ("policy", "poddisruptionbudgets")]
        if self.tests:
            out.append(("", "pods"))
        if self.network_policy:
            out.append(("networking.k8s.io", "networkpolicies"))
        if self.dashboards:
            out.append(("", "configmaps"))
        if self.service_monitor:
            out.append((MONITORING_GROUP, "servicemonitors"))
        if self.pod_monitor:
            out.append((MONITORING_GROUP, "podmonitors"))
        if self.prometheus_rule:
            out.append((MONITORING_GROUP, "prometheusrules"))
        if self.keda:
            out.append(("keda.sh", "scaledobjects"))
        if self.hpa:
            out.append(("autoscaling", "horizontalpodautoscalers"))
        return out


# --- findings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    level: str  # "ok" | "warn" | "fail"
    text: str

    def line(self) -> str:
        return f"{self.level.upper():4} {self.text}"


def _quantity(value: Any) -> int:
    """Integer extended-resource quantity ("4", 4); anything else counts as 0."""
    try:
        return int(str(value))
    except ValueError:
        return 0


def _node_ready(node: Json) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _tolerated(taint: Json, tolerations: list[Json]) -> bool:
    for tol in tolerations:
        if tol.get("effect") not in (None, "", taint.get("effect")):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, "", taint.get("key")):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def check_gpu_nodes(api: ClusterAPI, plan: Plan, values: Mapping[str, Any] | None) -> list[Finding]:
    nodes = api.list_nodes().get("items") or []
    if not plan.gpu:
        return [Finding("ok", f"CPU-only workers (worker.gpu.enabled=false): no GPU needed, {len(nodes)} node(s)")]
    res = plan.gpu_resource
    tolerations = list(_typed(values, "worker.tolerations", [], list, "a list")) + list(_typed(
        values, "worker.gpu.tolerations", [{"key": res, "operator": "Exists", "effect": "NoSchedule"}], list, "a list"))
    usable: list[tuple[str, int]] = []
    excluded: list[str] = []
    for node in nodes:
        name = node.get("metadata", {}).get("name", "?")
        gpus = _quantity(node.get("status", {}).get("allocatable", {}).get(res, 0))
        if gpus <= 0:
            continue
        labels = node.get("metadata", {}).get("labels") or {}
        blocking = [t for t in node.get("spec", {}).get("taints") or []
                    if t.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(t, tolerations)]
        if node.get("spec", {}).get("unschedulable"):
            excluded.append(f"{name} (cordoned)")
        elif not _node_ready(node):
            excluded.append(f"{name} (not Ready)")
        elif any(labels.get(k) != v for k, v in plan.node_selector.items()):
            excluded.append(f"{name} (does not match nodeSelector)")
        elif blocking:
            excluded.append(f"{name} (taint {blocking[0].get('key')}={blocking[0].get('value', '')}:"
                            f"{blocking[0].get('effect')} not tolerated)")
        else:
            usable.append((name, gpus))
    findings: list[Finding] = []
    if not usable:
        hint = (f"install the NVIDIA device plugin or GPU Operator so nodes advertise {res}, "
                "or set worker.gpu.enabled=false for CPU-only workers")
        detail = f"; GPU nodes left out: {', '.join(excluded)}" if excluded else ""
        findings.append(Finding("fail", f"no schedulable node advertises allocatable {res}{detail}: {hint}"))
        return findings
    total = sum(g for _, g in usable)
    listing = ", ".join(f"{n}={g}" for n, g in usable)
    findings.append(Finding("ok", f"{len(usable)} GPU node(s) with {total} allocatable {res} ({listing})"))
    need = plan.workers * plan.gpus_per_worker
    if need > total:
        findings.append(Finding("warn", f"{plan.workers} worker(s) x {plan.gpus_per_worker} GPU need {need} {res} "
                                f"but only {total} are allocatable: {need - total} worker(s) will stay Pending; "
                                "lower worker.replicas or add GPU nodes"))
    if excluded:
        findings.append(Finding("warn", f"GPU node(s) workers cannot use: {', '.join(excluded)}"))
    return findings


def check_crds(api: ClusterAPI, plan: Plan) -> list[Finding]:
    wanted = []
    if plan.service_monitor:
        wanted.append(("servicemonitors." + MONITORING_GROUP, "metrics.serviceMonitor.enabled",
                       "install the Prometheus Operator (e.g. kube-prometheus-stack)"))
    if plan.pod_monitor:
        wanted.append(("podmonitors." + MONITORING_GROUP, "metrics.podMonitor.enabled",
                       "install the Prometheus Operator (e.g. kube-prometheus-stack)"))
    if plan.prometheus_rule:
        wanted.append(("prometheusrules." + MONITORING_GROUP, "metrics.prometheusRule.enabled",
                       "install the Prometheus Operator (e.g. kube-prometheus-stack)"))
    if plan.keda:
        wanted.append(("scaledobjects.keda.sh", "autoscaling.keda.enabled",
                       "install KEDA (helm install keda kedacore/keda -n keda --create-namespace)"))
    findings = []
    for crd, flag, todo in wanted:
        if api.get_crd(crd) is None:
            findings.append(Finding("fail", f"CRD {crd} missing but {flag}=true: {todo}, or set {flag}=false"))
        else:
            findings.append(Finding("ok", f"CRD {crd} present"))
    if plan.hpa:
        svc = api.get_api_service(EXTERNAL_METRICS_API)
        available = svc is not None and any(
            c.get("type") == "Available" and c.get("status") == "True"
            for c in (svc.get("status", {}).get("conditions") or []))
        if available:
            findings.append(Finding("ok", f"external metrics API {EXTERNAL_METRICS_API} available for the HPA"))
        else:
            findings.append(Finding("fail", f"external metrics API {EXTERNAL_METRICS_API} not available but "
                                    "autoscaling.hpa.enabled=true: install prometheus-adapter with the "
                                    "charon_queue_depth rule (docs/kubernetes.md), or use autoscaling.keda"))
    return findings


def check_namespace_and_runtime(api: ClusterAPI, plan: Plan, namespace: str) -> list[Finding]:
    findings = []
    if api.get_namespace(namespace) is None:
        findings.append(Finding("warn", f"namespace {namespace} does not exist: "
                                "add --create-namespace to helm install"))
    else:
        findings.append(Finding("ok", f"namespace {namespace} exists"))
    if plan.runtime_class:
        if api.get_runtime_class(plan.runtime_class) is None:
            findings.append(Finding("fail", f"RuntimeClass {plan.runtime_class} (worker.gpu.runtimeClassName) "
                                    "does not exist: create it (GPU Operator does) or set it to \"\""))
        else:
            findings.append(Finding("ok", f"RuntimeClass {plan.runtime_class} exists"))
    return findings


def check_permissions(api: ClusterAPI, plan: Plan, namespace: str) -> list[Finding]:
    denied = []
    for group, resource in plan.resources():
        review = api.access_review({"namespace": namespace, "verb": "create", "group": group,
                                    "resource": resource})
        status = review.get("status") or {}
        if not status.get("allowed"):
            kind = f"{resource}.{group}" if group else resource
            reason = status.get("reason") or status.get("evaluationError") or "denied"
            denied.append(f"{kind} ({reason})")
    if denied:
        return [Finding("fail", f"you may not create in namespace {namespace}: {'; '.join(denied)}: "
                        "ask a cluster admin for a Role/RoleBinding allowing create on these resources")]
    return [Finding("ok", f"allowed to create all {len(plan.resources())} kinds of objects of the release "
                    f"in namespace {namespace}")]


def check(api: ClusterAPI, namespace: str, values: Mapping[str, Any] | None) -> list[Finding]:
    plan = Plan.from_values(values)
    return [*check_namespace_and_runtime(api, plan, namespace), *check_gpu_nodes(api, plan, values),
            *check_crds(api, plan), *check_permissions(api, plan, namespace)]


# --- status -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodRow:
    component: str
    name: str
    phase: str
    ready: bool
    restarts: int
    node: str
    gpus: int
    reason: str

    def line(self) -> str:
        state = self.reason or self.phase
        return (f"{self.component:8} {self.name:48} {'ready' if self.ready else 'NOT READY':9} "
                f"{state:18} restarts={self.restarts:<4} gpus={self.gpus} node={self.node or '-'}")


def _pod_row(pod: Json, gpu_resource: str) -> PodRow:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    statuses = status.get("containerStatuses") or []
    ready = bool(statuses) and all(s.get("ready") for s in statuses)
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    reason = ""
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            reason = str(waiting["reason"])
    if not reason and status.get("phase") == "Pending":
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                reason = str(c.get("reason") or "Unschedulable")
    running = status.get("phase") in ("Running", "Pending") and bool(spec.get("nodeName"))
    gpus = sum(_quantity(((c.get("resources") or {}).get("limits") or {}).get(gpu_resource, 0))
               for c in spec.get("containers") or []) if running else 0
    return PodRow(
        component=(meta.get("labels") or {}).get("app.kubernetes.io/component", "?"),
        name=meta.get("name", "?"), phase=status.get("phase", "?"), ready=ready, restarts=restarts,
        node=spec.get("nodeName", ""), gpus=gpus, reason=reason,
    )


def status(api: ClusterAPI, namespace: str, release: str, gpu_resource: str = DEFAULT_GPU_RESOURCE
           ) -> tuple[list[str], bool]:
    """Lines describing the release's pods, and whether the release looks healthy."""
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/name={CHART_NAME}"
    pods = api.list_pods(namespace, selector).get("items") or []
    rows = sorted((_pod_row(p, gpu_resource) for p in pods
                   if (p.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component") != "test"),
                  key=lambda r: (r.component, r.name))
    if not rows:
        missing = (f"no pods of release {release} in namespace {namespace}: is it installed? "
                   f"(helm list -n {namespace})")
        return [missing], False
    lines = [r.line() for r in rows]
    summary = []
    healthy = True
    for component in ("router", "worker", "gateway"):
        group = [r for r in rows if r.component == component]
        if not group:
            if component != "gateway":
                healthy = False
                summary.append(f"{component}s 0")
            continue
        ready = sum(r.ready for r in group)
        healthy = healthy and ready > 0
        summary.append(f"{component}s {ready}/{len(group)} ready")
    gpus = sum(r.gpus for r in rows)
    restarts = sum(r.restarts for r in rows)
    lines.append(f"release {namespace}/{release}: {', '.join(summary)}; {gpu_resource} in use {gpus}; "
                 f"restarts {restarts}")
    return lines, healthy


# --- the real API -------------------------------------------------------------------------------


class KubernetesAPI:
    """:class:`ClusterAPI` over the ``kubernetes`` client, returning the server's raw JSON."""

    def __init__(self) -> None:
        try:
            import kubernetes
            from kubernetes.config.config_exception import ConfigException
        except ImportError:
            raise ClusterUnavailable("the kubernetes client is not installed: pip install 'charon[cluster]'") from None
        # The loaders are untyped; through Any the call type-checks with or without the stubs.
        load_kube_config: Any = kubernetes.config.load_kube_config
        load_incluster_config: Any = kubernetes.config.load_incluster_config
        try:
            load_kube_config()
        except (ConfigException, OSError, TypeError) as exc:
            try:
                load_incluster_config()
            except ConfigException:
                raise ClusterUnavailable(
                    f"no Kubernetes configuration found ({str(exc).strip().rstrip('.')}; not in a pod): "
                    "set KUBECONFIG or run where kubectl works") from None
        client = kubernetes.client
        config = client.Configuration.get_default_copy()
        config.retries = 0  # fail fast with one clear line instead of logged retries
        self._host = str(config.host)
        api = client.ApiClient(config)
        self._core = client.CoreV1Api(api)
        self._ext = client.ApiextensionsV1Api(api)
        self._reg = client.ApiregistrationV1Api(api)
        self._node = client.NodeV1Api(api)
        self._authz = client.AuthorizationV1Api(api)

    def _call(self, method: Any, *args: Any, missing_ok: bool = False, **kwargs: Any) -> Json | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            resp = method(*args, _preload_content=False, _request_timeout=15, **kwargs)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            if exc.status in (401, 403) and missing_ok:
                return None
            raise ClusterUnavailable(f"API server answered {exc.status} {exc.reason}") from None
        except HTTPError as exc:
            reason = str(getattr(exc, "reason", None) or exc)
            errno = re.search(r"\[Errno -?\d+\] [^\"')]+", reason)
            why = errno.group(0).strip() if errno else type(exc).__name__
            raise ClusterUnavailable(f"cannot reach the API server at {self._host}: {why}") from None
        data: Json = json.loads(resp.data)
        return data

    def _must(self, method: Any, *args: Any, **kwargs: Any) -> Json:
        result = self._call(method, *args, **kwargs)
        assert result is not None
        return result

    def list_nodes(self) -> Json:
        return self._must(self._core.list_node)

    def get_namespace(self, name: str) -> Json | None:
        return self._call(self._core.read_namespace, name, missing_ok=True)

    def get_crd(self, name: str) -> Json | None:
        return self._call(self._ext.read_custom_resource_definition, name, missing_ok=True)

    def get_api_service(self, name: str) -> Json | None:
        return self._call(self._reg.read_api_service, name, missing_ok=True)

    def get_runtime_class(self, name: str) -> Json | None:
        return self._call(self._node.read_runtime_class, name, missing_ok=True)

    def access_review(self, attributes: Mapping[str, str]) -> Json:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": dict(attributes)}}
        return self._must(self._authz.create_self_subject_access_review, body)

    def list_pods(self, namespace: str, label_selector: str) -> Json:
        return self._must(self._core.list_namespaced_pod, namespace, label_selector=label_selector)


# --- entry point --------------------------------------------------------------------------------


def run(command: str, api: ClusterAPI, namespace: str, release: str, values: Mapping[str, Any] | None,
        out: TextIO) -> int:
    """Run ``check`` or ``status`` against ``api``; returns the exit status."""
    if command == "check":
        findings = check(api, namespace, values)
        out.writelines(f.line() + "\n" for f in findings)
        failed = sum(f.level == "fail" for f in findings)
        warned = sum(f.level == "warn" for f in findings)
        verdict = "not ready to install" if failed else "ready to install"
        out.write(f"charon cluster check: {verdict} ({failed} failed, {warned} warning(s))\n")
        return EXIT_FINDINGS if failed else EXIT_OK
    if command == "status":
        plan = Plan.from_values(values)
        lines, healthy = status(api, namespace, release, plan.gpu_resource)
        out.writelines(line + "\n" for line in lines)
        return EXIT_OK if healthy else EXIT_FINDINGS
    raise ValueError(f"unknown cluster command {command!r}: check or status")


def main(command: str, namespace: str, release: str, values: dict[str, object] | None = None) -> int:
    """``charon cluster check|status``: 0 fine, 1 findings/unhealthy, 2 no cluster to talk to."""
    try:
        Plan.from_values(values)  # a mistyped values file is reported before any cluster access
        api = KubernetesAPI()
        return run(command, api, namespace, release, values, sys.stdout)
    except ClusterUnavailable as exc:
        sys.stderr.write(f"charon cluster: {exc}\n")
        return EXIT_UNAVAILABLE
    except InvalidValues as exc:
        sys.stderr.write(f"charon cluster: --values: {exc}\n")
        return EXIT_UNAVAILABLE
