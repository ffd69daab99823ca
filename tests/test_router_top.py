"""``charon top``: histogram percentiles, rendering, and a real ``--once`` against a running router (in-process)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import zmq

from charon import top
from charon.router.driver import Router
from charon.settings import load_settings
from charon.top import parse, quantile, render
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import Requester, check_sim_complete, photondata, wait_for


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    # 10 observations <= 1 s, 10 more in (1, 2]: the median is at the top of the first bucket,
    # p75 halfway through the second.
    buckets = [(1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)]
    assert quantile(0.5, buckets) == pytest.approx(1.0)
    assert quantile(0.75, buckets) == pytest.approx(1.5)
    assert quantile(0.99, buckets) == pytest.approx(1.98)
    assert quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert quantile(0.99, [(1.0, 1.0), (math.inf, 100.0)]) == 1.0  # beyond the last finite bound


TEXT = """\
# TYPE charon_queue_depth gauge
charon_queue_depth 7.0
# TYPE charon_workers gauge
charon_workers{state="idle"} 2.0
charon_workers{state="busy"} 3.0
# TYPE charon_photons_total counter
charon_photons_total 5000.0
# TYPE charon_requests_total counter
charon_requests_total{kind="photondata",outcome="ok"} 5.0
charon_requests_total{kind="photondata",outcome="deadline"} 1.0
# TYPE charon_request_duration_seconds histogram
charon_request_duration_seconds_bucket{le="0.001",phase="total"} 2.0
charon_request_duration_seconds_bucket{le="0.01",phase="total"} 6.0
charon_request_duration_seconds_bucket{le="+Inf",phase="total"} 6.0
charon_request_duration_seconds_count{phase="total"} 6.0
charon_request_duration_seconds_sum{phase="total"} 0.02
"""


def test_parse_and_render_a_snapshot() -> None:
    snap = parse(TEXT, at=10.0)
    assert snap.gauges["charon_queue_depth"] == 7
    assert snap.gauges["workers_busy"] == 3
    assert snap.requests["photondata", "deadline"] == 1
    screen = render(snap, None, "http://x/metrics")
    assert "idle 2   busy 3" in screen
    assert "queue     7 requests" in screen
    assert "5,000 total" in screen
    # 6 observations: p50 is the 3rd, inside (1 ms, 10 ms].
    assert "total" in screen
    assert "3.25 ms" in screen
    later = parse(TEXT.replace("charon_photons_total 5000.0", "charon_photons_total 25000.0"), at=12.0)
    assert "10,000/s" in render(later, snap, "x")


def test_a_restarted_router_shows_its_new_counts_not_negative_rates() -> None:
    before = parse(TEXT, at=10.0)
    after = parse(TEXT.replace("charon_photons_total 5000.0", "charon_photons_total 400.0")
                  .replace('le="0.001",phase="total"} 2.0', 'le="0.001",phase="total"} 1.0')
                  .replace('phase="total"} 6.0', 'phase="total"} 1.0'), at=12.0)
    screen = render(after, before, "x")
    assert "photons   200/s" in screen  # 400 photons counted since the restart, over 2 s
    assert "-" not in screen.split("photons", 1)[1].split("\n", 1)[0]
    assert "0.50 ms" in screen  # p50 of the one observation since the restart, in (0, 1 ms]


def test_top_once_against_a_router_under_traffic(context: zmq.Context[Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    router = Router(inproc.settings({"router": {"bind": inproc.endpoint("clients"),
                                                "workers_bind": inproc.endpoint("workers")},
                                     "metrics": {"enabled": True, "addr": "127.0.0.1:0"}}), context=context)
    with inproc.running(router) as r, inproc.running(
            Worker(inproc.settings({"worker": {"router": r.workers_endpoint}}), inproc.echo(), context=context)):
        wait_for(lambda: router.state.idle_workers == 1, 10, "worker")
        req = Requester(context, r.endpoint)
        try:
            for i in range(5):
                check_sim_complete(req.request(photondata(i, 100)), i, 100)
        finally:
            req.close()
        wait_for(lambda: inproc.sample(router.registry, "charon_photons_total") == 500, 5, "500 photons counted")
        assert top.main(load_settings(), f"http://{r.ready['metrics']}/metrics", 1.0, once=True) == 0
    out = capsys.readouterr().out
    assert "idle 1   busy 0" in out
    assert "500 total" in out
    assert "photondata    ok" in out


def test_top_once_reports_an_unreachable_router_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert top.main(load_settings(), "http://127.0.0.1:9/metrics", 1.0, once=True) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot read http://127.0.0.1:9/metrics" in err
