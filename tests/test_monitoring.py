"""Monitoring the chart ships, checked with real Prometheus tools against real charon processes.

* the PrometheusRule, rendered by helm, passes ``promtool check rules`` and the unit tests in
  ``tests/prometheus/`` (``promtool test rules``);
* every dashboard query parses (as recording rules through ``promtool check rules``);
* end to end: a real Prometheus scrapes a running router and worker on loopback while traffic
  runs; every dashboard, alert and KEDA-trigger expression evaluates, every metric they select returns data
  (the DCGM GPU panel is exempt: no GPU exporter here), and no alert condition holds on the
  healthy system.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from charon.client import Client
from charon.errors import ServerUnavailable
from charon.source import isotropic_point
from tests import procs
from tests.tooling import CHART, ROOT, run, tool

DASHBOARD = CHART / "dashboards" / "charon.json"
PROM_TESTS = ROOT / "tests" / "prometheus"
# Metrics only an external exporter provides; their panels may be empty here.
EXEMPT_METRICS = {"DCGM_FI_DEV_GPU_UTIL"}
NAMESPACE = RELEASE = "charon"
#: The live router's queue bound, and an event that can never fit in it (48 bytes per photon).
QUEUE_MAX_BYTES = 4 * 1024**2
TOO_BIG_PHOTONS = QUEUE_MAX_BYTES // 48 + 1000
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^{}]*)\}")


def _render_rules() -> dict[str, Any]:
    helm = tool("helm")
    res = run(helm, "template", RELEASE, str(CHART), "-n", NAMESPACE,
              "-f", str(CHART / "ci" / "monitoring-values.yaml"), "--show-only", "templates/prometheusrule.yaml",
              check=True)
    rule = yaml.safe_load(res.stdout)
    assert rule["kind"] == "PrometheusRule"
    return {"groups": rule["spec"]["groups"]}


def _keda_query() -> str:
    helm = tool("helm")
    res = run(helm, "template", RELEASE, str(CHART), "-n", NAMESPACE,
              "-f", str(CHART / "ci" / "keda-values.yaml"), "--show-only", "templates/keda-scaledobject.yaml",
              check=True)
    (trigger,) = yaml.safe_load(res.stdout)["spec"]["triggers"]
    return str(trigger["metadata"]["query"])


def _dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of the dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def _concrete(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by values Prometheus accepts."""
    return (expr.replace("$__rate_interval", "1m").replace("$namespace", NAMESPACE)
            .replace("$release", RELEASE))


def _write_rules(path: Path, groups: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(groups, sort_keys=False))


def _dashboard_as_recording_rules() -> dict[str, Any]:
    rules = [{"record": f"charon_dashboard:expr_{i}", "expr": _concrete(expr)}
             for i, (_, expr) in enumerate(_dashboard_exprs())]
    return {"groups": [{"name": "charon-dashboard", "rules": rules}]}


# --- static checks ------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check(tmp_path: Path) -> None:
    promtool = tool("promtool")
    rules = tmp_path / "alerts.rules.yml"
    groups = _render_rules()
    _write_rules(rules, groups)
    res = run(promtool, "check", "rules", str(rules))
    assert res.returncode == 0, res.stdout + res.stderr
    n_alerts = sum(len(g["rules"]) for g in groups["groups"])
    assert n_alerts >= 7
    assert f"SUCCESS: {n_alerts} rules found" in res.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The parse check is real: a broken expression fails with promtool's parse error."""
    promtool = tool("promtool")
    rules = tmp_path / "broken.rules.yml"
    _write_rules(rules, {"groups": [{"name": "x", "rules": [
        {"record": "x:y", "expr": "sum(rate(charon_photons_total[5m]) by"}]}]})
    res = run(promtool, "check", "rules", str(rules))
    assert res.returncode != 0
    assert "parse error" in res.stdout + res.stderr


def test_alert_rule_unit_tests(tmp_path: Path) -> None:
    promtool = tool("promtool")
    _write_rules(tmp_path / "alerts.rules.yml", _render_rules())
    for test_file in sorted(PROM_TESTS.glob("*_test.yml")):
        shutil.copy(test_file, tmp_path / test_file.name)
        res = run(promtool, "test", "rules", str(tmp_path / test_file.name), cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "SUCCESS" in res.stdout + res.stderr


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    promtool = tool("promtool")
    rules = tmp_path / "dashboard.rules.yml"
    _write_rules(rules, _dashboard_as_recording_rules())
    res = run(promtool, "check", "rules", str(rules))
    assert res.returncode == 0, res.stdout + res.stderr


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert "uid" not in dash or dash["uid"] in (None, "")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "release"} <= set(variables)

    def datasources(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield value
                else:
                    yield from datasources(value)
        elif isinstance(node, list):
            for item in node:
                yield from datasources(item)

    for ds in datasources(dash["panels"]):
        assert ds == {"type": "prometheus", "uid": "${datasource}"}, ds
    exprs = _dashboard_exprs()
    for title, expr in exprs:
        if not any(m in expr for m in EXEMPT_METRICS):
            assert 'namespace=~"$namespace"' in expr, title
            assert 'charon_release=~"$release"' in expr, title
    text = " ".join(e for _, e in exprs)
    for needed in ("charon_photons_total", "charon_hits_total", "charon_queue_depth", "charon_workers",
                   'phase="queue"', 'phase="service"', 'outcome!="ok"', "DCGM_FI_DEV_GPU_UTIL",
                   "histogram_quantile(0.99", "histogram_quantile(0.5", 'outcome=~"dropped_.*"',
                   "charon_auth_refused_total"):
        assert needed in text, needed
    # Panels do not overlap on the grid.
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
        assert g["x"] + g["w"] <= 24


# --- live: real Prometheus, real router and worker ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def _get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return json.load(resp)["data"]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _traffic(endpoint: str, events: int, first_event: int = 0) -> None:
    with Client(endpoint, timeout_s=20, retries=0) as client:
        for i in range(3 * events):
            client.ping()
            if i < events:
                client.simulate(isotropic_point(first_event + i, 2000, (0.0, 0.0, 0.0), 420.0))
        # One request the router cannot understand, so the failures-by-outcome series exists.
        client.request([b"NONSENSE"])
    if first_event == 0:
        # One well-formed event larger than the router's queue bound (router.queue_max_bytes in the
        # test): dropped without a reply, so the dropped-requests series exists.
        with Client(endpoint, timeout_s=1.0, retries=0) as client, pytest.raises(ServerUnavailable):
            client.simulate(isotropic_point(10**6, TOO_BIG_PHOTONS, (0.0, 0.0, 0.0), 420.0))


@pytest.mark.timeout(150)
def test_prometheus_scrapes_router_and_worker_and_every_query_has_data(tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    with procs.router(env={"CHARON_ROUTER__QUEUE_MAX_BYTES": str(QUEUE_MAX_BYTES)}) as router, procs.worker(router.workers_endpoint, backend="echo") as worker:
        rules = tmp_path / "alerts.rules.yml"
        _write_rules(rules, _render_rules())
        _write_rules(tmp_path / "dashboard.rules.yml", _dashboard_as_recording_rules())
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules), str(tmp_path / "dashboard.rules.yml")],
            "scrape_configs": [
                {"job_name": f"charon-{role}", "static_configs": [{
                    "targets": [proc.metrics],
                    "labels": {"namespace": NAMESPACE, "charon_release": RELEASE, "charon_component": role},
                }]}
                for role, proc in (("router", router), ("worker", worker))
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log = (tmp_path / "prometheus.log").open("w")
        prom = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            _wait(lambda: urllib.request.urlopen(base + "/-/ready", timeout=2).status == 200, 30, "Prometheus ready")
            _traffic(router.endpoint, events=20)
            _wait(lambda: len(_query(base, 'up{job=~"charon-.*"} == 1')) == 2, 40, "both targets up")
            # Let a few more scrapes see the traffic so rates are defined.
            _wait(lambda: len(_query(base, "charon_photons_total > 0")) >= 1, 20, "traffic scraped")
            _traffic(router.endpoint, events=10, first_event=20)
            # Rates need the second burst in a later scrape than the first (30 events x 2000 photons),
            # from the router and the worker, which are scraped independently.
            _wait(lambda: len(_query(base, "charon_photons_total >= 60000 or charon_worker_photons_total >= 60000"))
                  == 2, 20, "second burst scraped from both")
            _check_live(base)
        finally:
            prom.terminate()
            try:
                prom.wait(15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
            log.close()


def _check_live(base: str) -> None:
    alerts = [r for g in _render_rules()["groups"] for r in g["rules"]]
    exprs = [(f"panel {title!r}", _concrete(e)) for title, e in _dashboard_exprs()]
    exprs += [(f"alert {a['alert']}", a["expr"]) for a in alerts]
    exprs += [("KEDA trigger", _keda_query())]
    # 1. Every selected metric returns data (the metric names match what the code exports).
    for where, expr in exprs:
        for name, matchers in SELECTOR.findall(expr):
            if name in EXEMPT_METRICS:
                continue
            selector = f"{name}{{{matchers}}}"
            assert _query(base, selector), f"{where}: {selector} returned no data"
    # 2. Every dashboard expression and the autoscaler's query evaluate to data (GPU panel exempt).
    for where, expr in exprs:
        if where.startswith(("panel", "KEDA")) and not any(m in expr for m in EXEMPT_METRICS):
            assert _query(base, expr), f"{where}: {expr} returned no data"
    # 3. The healthy system trips no alert condition (evaluated directly, ignoring `for`).
    for a in alerts:
        assert _query(base, a["expr"]) == [], f"alert {a['alert']} condition holds on a healthy system"
    # 4. Prometheus itself evaluates the shipped rules without errors; nothing pending or firing.
    groups = _get(base, "/api/v1/rules")["groups"]
    assert {r["name"] for g in groups for r in g["rules"]} >= {a["alert"] for a in alerts}
    for g in groups:
        for r in g["rules"]:
            assert r["health"] in {"ok", "unknown"}, (r["name"], r.get("lastError"))
    assert _get(base, "/api/v1/alerts")["alerts"] == []
    # 5. The numbers are the traffic's: 30 events x 2000 photons passed through the router.
    photons = float(_query(base, 'sum(charon_photons_total{charon_component="router"})')[0]["value"][1])
    assert photons == 30 * 2000
    worker_photons = float(_query(base, 'sum(charon_worker_photons_total{charon_component="worker"})')[0]["value"][1])
    assert worker_photons == 30 * 2000
