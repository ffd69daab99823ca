"""``charon top``: a live terminal view of a router's (or server's) Prometheus metrics.

It scrapes ``/metrics`` every interval and shows workers idle/busy, queue depth, requests and
photons per second, and latency percentiles computed from the histogram buckets of the last
interval (as ``histogram_quantile`` over a rate would). Parsing and rendering are plain functions
of the scraped text, so they are tested without a terminal.
"""

from __future__ import annotations

import math
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from charon.settings import Settings

_CLEAR = "\x1b[H\x1b[2J"


@dataclass
class Snapshot:
    """The samples ``top`` shows, from one scrape."""

    at: float
    gauges: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    requests: dict[tuple[str, str], float] = field(default_factory=dict)
    #: phase -> sorted [(upper bound, cumulative count)]
    buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def parse(text: str, at: float) -> Snapshot:
    snap = Snapshot(at)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("charon_queue_depth", "charon_queue_bytes", "charon_in_flight"):
                snap.gauges[s.name] = s.value
            elif s.name == "charon_workers":
                snap.gauges[f"workers_{s.labels.get('state', '')}"] = s.value
            elif s.name in ("charon_photons_total", "charon_hits_total", "charon_requeued_total",
                            "charon_deduplicated_total", "charon_workers_expired_total"):
                snap.counters[s.name] = s.value
            elif s.name == "charon_workers_refused_total":
                snap.counters[s.name] = snap.counters.get(s.name, 0.0) + s.value
            elif s.name == "charon_requests_total":
                snap.requests[s.labels["kind"], s.labels["outcome"]] = s.value
            elif s.name == "charon_request_duration_seconds_bucket":
                le = s.labels["le"]
                bound = math.inf if le == "+Inf" else float(le)
                snap.buckets.setdefault(s.labels["phase"], []).append((bound, s.value))
    for series in snap.buckets.values():
        series.sort()
    return snap


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Linear interpolation inside the bucket holding the q-th observation (Prometheus' rule)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: report its bound
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return None


def _delta_buckets(cur: list[tuple[float, float]], prev: list[tuple[float, float]] | None
                   ) -> list[tuple[float, float]]:
    if not prev or len(prev) != len(cur) or cur[-1][1] < prev[-1][1]:
        return cur  # no earlier scrape, or the counters restarted with the process
    return [(b, c - p) for (b, c), (_, p) in zip(cur, prev, strict=True)]


def _increase(cur: float, prev: float) -> float:
    """Counter increase between scrapes; a counter that went down was reset (as Prometheus' rate)."""
    return cur - prev if cur >= prev else cur


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"


def render(cur: Snapshot, prev: Snapshot | None, source: str) -> str:
    """The screen for one scrape; rates and percentiles over the interval since ``prev`` if given."""
    dt = cur.at - prev.at if prev else 0.0
    window = f"last {dt:.1f} s" if prev and dt > 0 else "since start"

    def rate(name: str) -> str:
        total = cur.counters.get(name, 0.0)
        if prev and dt > 0:
            return f"{_increase(total, prev.counters.get(name, 0.0)) / dt:,.0f}/s"
        return f"{total:,.0f} total"

    answered = sum(cur.requests.values())
    failed = sum(v for (_, outcome), v in cur.requests.items() if outcome != "ok")
    req_rate = (f"{_increase(answered, sum(prev.requests.values())) / dt:,.1f}/s" if prev and dt > 0
                else f"{answered:,.0f} total")
    g = cur.gauges
    lines = [
        f"charon top - {source} - {time.strftime('%H:%M:%S')} ({window})",
        "",
        (f"workers   idle {g.get('workers_idle', 0):.0f}   busy {g.get('workers_busy', 0):.0f}"
        f"   in flight {g.get('charon_in_flight', 0):.0f}"),
        f"queue     {g.get('charon_queue_depth', 0):.0f} requests   {g.get('charon_queue_bytes', 0) / 1e6:,.1f} MB",
        f"requests  {req_rate}   not ok {failed:,.0f} total",
        f"photons   {rate('charon_photons_total')}   hits {rate('charon_hits_total')}",
        (f"requeued  {cur.counters.get('charon_requeued_total', 0):,.0f}   deduplicated "
        f"{cur.counters.get('charon_deduplicated_total', 0):,.0f}   workers expired "
        f"{cur.counters.get('charon_workers_expired_total', 0):,.0f}   refused "
        f"{cur.counters.get('charon_workers_refused_total', 0):,.0f}"),
        "",
        f"{'latency':10s}{'p50':>12s}{'p99':>12s}",
    ]
    for phase in ("queue", "service", "total"):
        series = _delta_buckets(cur.buckets.get(phase, []), prev.buckets.get(phase) if prev else None)
        lines.append(f"{phase:10s}{_ms(quantile(0.5, series)):>12s}{_ms(quantile(0.99, series)):>12s}")
    by_outcome = sorted(cur.requests.items())
    if by_outcome:
        lines += ["", "requests by kind/outcome (total)"]
        lines += [f"  {kind:14s}{outcome:18s}{n:>12,.0f}" for (kind, outcome), n in by_outcome]
    return "\n".join(lines)


def scrape(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return str(resp.read().decode("utf-8"))


def main(settings: Settings, metrics_url: str, interval_s: float, once: bool) -> int:
    """Show the metrics at ``metrics_url``; ``once`` prints a single snapshot and exits."""
    del settings  # the view needs only the URL
    prev: Snapshot | None = None
    try:
        while True:
            try:
                cur = parse(scrape(metrics_url), time.monotonic())
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if once:
                    print(f"charon top: cannot read {metrics_url}: {exc}", file=sys.stderr)
                    return 1
                print(f"{_CLEAR}charon top - {metrics_url}: {exc} (retrying)", flush=True)
                time.sleep(interval_s)
                continue
            if once:
                print(render(cur, None, metrics_url))
                return 0
            print(_CLEAR + render(cur, prev, metrics_url), flush=True)
            prev = cur
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return 0
