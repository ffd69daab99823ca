"""v1 async mode: file naming, the run ledger, the uproot writer, and whole RAT runs against serve.

The done-when runs use the ratpac-two client model (tests/ratpac_client.py): a first pass in async
mode (every PHOTONDATA answered SIM_COMPLETE_ASYNC), then the ROOTFILE replay reading the run file
entry by entry, compared event by event with a synchronous run of the same events and seed.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import uproot
import yaml
import zmq

from charon.engine.base import Photons
from charon.engine.registry import make_simulator
from charon.errors import ConfigError, WorkerProtocolError
from charon.process import open_simulator
from charon.protocol import tokens, v1
from charon.protocol import worker as wp
from charon.router.driver import Router
from charon.router.state import RouterState, ToClient, ToWorker
from charon.runs import ledger as lg
from charon.runs import naming
from charon.runs.writer import OUTPUT_BRANCHES, RunFile, read_output
from charon.server import Server
from charon.settings import EngineSettings, HeartbeatSettings, RouterSettings, RunSettings, load_settings
from charon.worker.driver import Worker
from tests import inproc, procs
from tests import ratpac_client as rc
from tests.router_support import FAST, metric, scrape, wait_for
from tests.test_ratpac_compat import event_flags, isotropic

ROOT = Path(__file__).resolve().parents[1]


# ---- naming ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "expected"), [
    ("output.root", "output.charon.ntuple.root"),
    ("run.v2.root", "run.charon.ntuple.root"),  # ChAR0N replaces the last remaining suffix too
    ("a.ntuple.root", "a.charon.ntuple.root"),
    ("a.root.root", "a.charon.ntuple.root"),
    ("x", "x.charon.ntuple.root"),
    ("sub/dir/r.root", "sub/dir/r.charon.ntuple.root"),
    ("a/../b.root", "b.charon.ntuple.root"),
    (None, "output.charon.ntuple.root"),
    ("/data/r.root", "r.charon.ntuple.root"),  # absolute: only the last component, inside outdir
])
def test_charon_names(filename: str | None, expected: str) -> None:
    assert naming.relative_name(filename) == PurePosixPath(expected)


def test_absolute_names_only_when_allowed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "r.root"
    assert naming.run_path(str(target), tmp_path / "out", allow_absolute=True) == \
        tmp_path / "elsewhere" / "r.charon.ntuple.root"
    assert naming.run_path(str(target), tmp_path / "out") == \
        Path(os.path.realpath(tmp_path / "out")) / "r.charon.ntuple.root"


@pytest.mark.parametrize("filename", ["../r.root", "a/../../r.root", "..", "r\x00.root", "x" * 2000])
def test_names_leaving_the_directory_are_refused(filename: str, tmp_path: Path) -> None:
    with pytest.raises(naming.RunNameRefused):
        naming.run_path(filename, tmp_path)


def test_a_symlink_out_of_the_directory_is_refused_where_the_file_is_written(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    name = naming.relative_name("link/r.root")  # fine by its text (the router's check)
    with pytest.raises(naming.RunNameRefused, match="leads out"):
        naming.resolve(name, tmp_path / "out")


def test_async_mode_needs_an_output_directory() -> None:
    settings = load_settings({"runs": {"async_mode": True}})
    with pytest.raises(ConfigError, match=r"runs.outdir \(--outdir / CHARON_RUNS__OUTDIR\)"):
        Server(settings, inproc.echo())


# ---- the ledger, sans-IO ---------------------------------------------------------------------------


def payload(event_id: int, n: int = 3) -> list[bytes]:
    return [tokens.PHOTONDATA, struct.pack("<II", event_id, n), *[b"\0" * (4 * n)] * 12]


def ledger(**kw: Any) -> lg.RunLedger:
    return lg.RunLedger(**{"flush_events": 2, "flush_bytes": 1 << 30, "idle_timeout_s": 60.0, **kw})


def send(led: lg.RunLedger, client: str, event_id: int, now: float = 0.0, env: bytes = b"e") -> list[lg.Action]:
    p = payload(event_id)
    out = led.photondata(client, [env], v1.decode_photondata(p), p, now)
    assert out is not None
    return out


def replies(actions: list[lg.Action]) -> list[list[bytes]]:
    return [[bytes(v1.as_view(f)) for f in a.frames] for a in actions if isinstance(a, lg.Reply)]


def test_ledger_records_each_event_id_once_in_arrival_order() -> None:
    led = ledger(flush_events=100)
    opened = led.run_begin("10.0.0.1", [b"e"], "run.root", 0.0)
    (run_id,) = [a.run_id for a in opened if isinstance(a, lg.Open)]
    seqs = []
    for event_id in (5, 3, 5, 9, 3):  # two resends
        actions = send(led, "10.0.0.1", event_id)
        assert replies(actions) == [[tokens.SIM_COMPLETE_ASYNC, struct.pack("<I", event_id)]]
        seqs += [a.seq for a in actions if isinstance(a, lg.Record)]
    assert seqs == [0, 1, 2]
    assert led.photondata("10.0.0.2", [b"e"], v1.decode_photondata(payload(1)), payload(1), 0.0) is None
    assert replies(led.run_end("10.0.0.1", [b"end"], 1.0)) == []  # ACK waits for the file
    assert replies(led.closed(run_id, 3)) == [[tokens.ACK]]
    assert led.open_runs == 0
    assert led.events_written == 3


def test_ledger_holds_replies_beyond_twice_the_batch_until_written() -> None:
    led = ledger(flush_events=2)
    (run_id,) = [a.run_id for a in led.run_begin("c", [b"e"], None, 0.0) if isinstance(a, lg.Open)]
    assert all(replies(send(led, "c", e)) for e in range(3))
    held = send(led, "c", 3)
    assert replies(held) == []  # 4 unwritten = 2 x flush_events
    assert replies(send(led, "c", 3)) == []  # its resend waits too
    assert replies(led.written(run_id, 2)) == [[tokens.SIM_COMPLETE_ASYNC, struct.pack("<I", 3)]] * 2
    run = led.run(run_id)
    assert run is not None
    assert [e.seq for e in run.retained] == [2, 3]  # written frames are released


def test_ledger_resume_gives_a_new_writer_what_is_not_on_disk() -> None:
    led = ledger(flush_events=10)
    (run_id,) = [a.run_id for a in led.run_begin("c", [b"e"], "r.root", 0.0) if isinstance(a, lg.Open)]
    for e in range(5):
        send(led, "c", e)
    led.written(run_id, 3)
    led.run_end("c", [b"end"], 1.0)
    resumed = led.resume(run_id)
    assert resumed[0] == lg.Open(run_id, PurePosixPath("r.charon.ntuple.root"), 3, 10, 1 << 30)
    assert [a.seq for a in resumed if isinstance(a, lg.Record)] == [3, 4]
    assert isinstance(resumed[-1], lg.Close)


def test_ledger_concurrent_runs_get_their_own_files_and_idle_runs_close() -> None:
    led = ledger(idle_timeout_s=30.0)
    names = [a.name for c in ("a", "b") for a in led.run_begin(c, [b"e"], "output.root", 0.0)
             if isinstance(a, lg.Open)]
    assert names == [PurePosixPath("output.charon.ntuple.root"), PurePosixPath("output_2.charon.ntuple.root")]
    send(led, "a", 1, now=20.0)
    closes = led.tick(40.0)
    assert [type(a) for a in closes] == [lg.Close]  # b idle since 0, a seen at 20
    assert led.closed_runs == {"idle": 1}


def test_ledger_refused_name_means_synchronous_answers() -> None:
    led = ledger()
    assert replies(led.run_begin("c", [b"e"], "../../etc/x.root", 0.0)) == [[tokens.ACK]]
    assert led.photondata("c", [b"e"], v1.decode_photondata(payload(1)), payload(1), 0.0) is None
    assert led.refused_names == 1


# ---- the writer ------------------------------------------------------------------------------------


def test_a_writer_killed_mid_run_leaves_a_readable_file_with_every_flushed_event(tmp_path: Path) -> None:
    """A real process appends and flushes 3 batches, then is SIGKILLed while the 4th is buffered."""
    path = tmp_path / "k.charon.ntuple.root"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from charon.engine.registry import make_simulator
        from charon.runs.writer import RunFile
        from charon.settings import EngineSettings
        from charon.source import isotropic_point
        sim = make_simulator(EngineSettings(backend="echo"))
        f = RunFile(__import__("pathlib").Path({str(path)!r}), sim.detector_info())
        for batch in range(4):
            events = [isotropic_point(10 * batch + i, 7 + i, (0.0, 0.0, 0.0), 420.0) for i in range(5)]
            hits = sim.simulate(events)
            f.append([e.event_id for e in events], hits)
            if batch < 3:
                f.flush()
                print("flushed", batch, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "services")})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split() == ["flushed", "0", "flushed", "1", "flushed", "2"]
    out = read_output(path)
    assert len(out["event_id"]) >= 15  # every flushed event (the unflushed basket may also be there)
    assert list(out["event_id"][:15]) == [10 * b + i for b in range(3) for i in range(5)]
    assert list(out["counts"][:15]) == [7 + i for _ in range(3) for i in range(5)]
    with uproot.open(path) as f:
        assert f["detinfo"].num_entries == 3000


def test_resume_copies_the_written_entries_and_continues(tmp_path: Path) -> None:
    sim = make_simulator(EngineSettings(backend="echo"))
    info = sim.detector_info()
    events = [isotropic(e, 4 + e, 0) for e in range(6)]
    hits = sim.simulate(events)
    path = tmp_path / "r.charon.ntuple.root"
    first = RunFile(path, info)
    first.append([0, 1, 2, 3], hits[:4])
    first.flush()  # the writer dies here; entries 0-2 were reported written, 3 was not
    second = RunFile.resume(path, info, keep=3)
    second.append([3, 4, 5], hits[3:])
    second.close()
    out = read_output(path)
    assert list(out["event_id"]) == [0, 1, 2, 3, 4, 5]
    assert list(out["counts"]) == [4, 5, 6, 7, 8, 9]
    assert not (tmp_path / "r.charon.ntuple.root.resume").exists()


# ---- whole runs against charon serve ---------------------------------------------------------------


N_EVENTS = 12
N_PHOTONS = 300
TCP = {"server": {"bind": "tcp://127.0.0.1:*"}}


def events() -> list[Photons]:
    return [isotropic(e, N_PHOTONS, event_flags(e)) for e in range(N_EVENTS)]


@pytest.fixture(scope="module")
def rat_geometry() -> np.ndarray[Any, Any]:
    return make_simulator(EngineSettings(backend="echo")).detector_info().positions().astype(np.float64)


@pytest.fixture(scope="module")
def sync_pes(rat_geometry: np.ndarray[Any, Any]) -> list[rc.EventPEs]:
    """The same events through a synchronous serve with the same engine and seed."""
    context: zmq.Context[Any] = zmq.Context()
    try:
        with open_simulator(EngineSettings(backend="numpy", seed=11)) as sim, \
                inproc.running(Server(inproc.settings(TCP), sim)) as server:
            client = rc.RatpacClient(server.endpoint, context, timeout_ms=30_000, rat_pmt_positions=rat_geometry)
            client.begin_of_run("output.root")
            pes = [client.event(p) for p in events()]
            assert client.run_end()
        assert client.warnings == []
        return pes
    finally:
        context.destroy(linger=0)


def assert_same_pes(replayed: list[rc.EventPEs], expected: list[rc.EventPEs]) -> None:
    assert len(replayed) == len(expected)
    for got, want in zip(replayed, expected, strict=True):
        assert got.num_pe == want.num_pe
        np.testing.assert_array_equal(got.channel, want.channel)
        np.testing.assert_array_equal(got.rat_pmt, want.rat_pmt)
        for name, values in want.arrays.items():
            np.testing.assert_array_equal(got.arrays[name], values, err_msg=name)
        assert got.process == want.process


def test_async_run_against_serve_replays_the_synchronous_hits(
        context: zmq.Context[Any], tmp_path: Path, rat_geometry: np.ndarray[Any, Any],
        sync_pes: list[rc.EventPEs]) -> None:
    settings = inproc.settings(TCP, {"engine": {"seed": 11}, "runs": {"async_mode": True, "outdir": str(tmp_path),
                                                                       "flush_events": 5}})
    with open_simulator(EngineSettings(backend="numpy", seed=11)) as sim, \
            inproc.running(Server(settings, sim)) as server:
        client = rc.RatpacClient(server.endpoint, context, timeout_ms=30_000, rat_pmt_positions=rat_geometry)
        client.begin_of_run("run.v2.root")
        first_pass = [client.event(p) for p in events()]
        first_pass.append(client.event(events()[3]))  # a resend of event 3: no second entry
        assert client.run_end()
        registry = server.service.registry
        assert inproc.sample(registry, "charon_run_events_written_total") == N_EVENTS
        assert inproc.sample(registry, "charon_runs_closed_total", reason="run_end") == 1
        assert inproc.sample(registry, "charon_runs_open") == 0
    assert client.warnings == []
    assert all(ex.ok and ex.sends == 1 for ex in client.exchanges)
    assert {pes.num_pe for pes in first_pass} == {0}  # SIM_COMPLETE_ASYNC: the hits are in the file
    assert [f.name for f in tmp_path.iterdir()] == ["run.charon.ntuple.root"]
    replayed, event_ids = rc.read_rootfile(tmp_path / "run.charon.ntuple.root", rat_geometry)
    assert event_ids == list(range(N_EVENTS))
    assert_same_pes(replayed, sync_pes)
    assert sum(p.num_pe for p in replayed) > 0


def two_source_endpoints(endpoint: str) -> Iterator[str]:
    """The same server reached from two loopback source addresses (two client hosts)."""
    host_port = endpoint.removeprefix("tcp://")
    for source in ("127.0.0.2", "127.0.0.3"):
        yield f"tcp://{source}:0;{host_port}"


def test_concurrent_runs_from_two_clients_get_their_own_files(
        context: zmq.Context[Any], tmp_path: Path, rat_geometry: np.ndarray[Any, Any]) -> None:
    settings = inproc.settings(TCP, {"runs": {"async_mode": True, "outdir": str(tmp_path), "flush_events": 3}})
    with inproc.running(Server(settings, inproc.echo())) as server:
        a, b = (rc.RatpacClient(e, context, timeout_ms=10_000, rat_pmt_positions=rat_geometry)
                for e in two_source_endpoints(server.endpoint))
        a.begin_of_run("output.root")
        b.begin_of_run("output.root")  # same name: the second open run gets a numbered file
        for e in range(7):  # interleaved
            a.event(isotropic(e, 10 + e, 0))
            b.event(isotropic(100 + e, 20 + e, 0))
        assert a.run_end()
        assert b.run_end()
        wait_for(lambda: inproc.sample(server.service.registry, "charon_runs_open") == 0, 5, "runs closed")
    files = {p.name: read_output(p) for p in tmp_path.iterdir()}
    assert set(files) == {"output.charon.ntuple.root", "output_2.charon.ntuple.root"}
    assert list(files["output.charon.ntuple.root"]["event_id"]) == list(range(7))
    assert list(files["output.charon.ntuple.root"]["counts"]) == [10 + e for e in range(7)]
    assert list(files["output_2.charon.ntuple.root"]["event_id"]) == [100 + e for e in range(7)]


def test_an_abandoned_run_is_closed_after_the_idle_timeout(context: zmq.Context[Any], tmp_path: Path) -> None:
    clock = inproc.FakeClock()
    settings = inproc.settings(TCP, {"runs": {"async_mode": True, "outdir": str(tmp_path), "flush_events": 100,
                                              "idle_timeout_s": 30}})
    with inproc.running(Server(settings, inproc.echo(), clock=clock)) as server:
        client = rc.RatpacClient(server.endpoint, context, timeout_ms=10_000, rat_pmt_count=3000)
        client.begin_of_run("gone.root")
        for e in range(3):
            client.event(isotropic(e, 5, 0))
        registry = server.service.registry
        assert inproc.sample(registry, "charon_runs_open") == 1
        clock.advance(31)  # the client died without RUN_END
        wait_for(lambda: inproc.sample(registry, "charon_runs_closed_total", reason="idle") == 1, 5, "idle close")
        wait_for(lambda: inproc.sample(registry, "charon_runs_open") == 0, 5, "run closed")
    assert list(read_output(tmp_path / "gone.charon.ntuple.root")["event_id"]) == [0, 1, 2]


# ---- behind the router: two worker processes, the run's writer killed mid-run ----------------------


@pytest.mark.timeout(180)
def test_async_run_behind_the_router_survives_its_writer_being_killed(
        context: zmq.Context[Any], tmp_path: Path, rat_geometry: np.ndarray[Any, Any],
        sync_pes: list[rc.EventPEs]) -> None:
    """``charon router --async-mode`` and two ``charon worker --outdir`` processes on one directory:
    the worker writing the run is SIGKILLed after its first flushes; the other one takes the run
    over from the last flushed entry. One file, every event once, in order, with the hits of the
    synchronous run."""
    env = {"CHARON_RUNS__FLUSH_EVENTS": "3", **FAST}
    worker_args = ("--seed", "11", "--outdir", str(tmp_path))
    with procs.router("--async-mode", env=env) as router, \
            procs.worker(router.workers_endpoint, *worker_args, backend="numpy", env=env) as w1, \
            procs.worker(router.workers_endpoint, *worker_args, backend="numpy", env=env) as w2:
        wait_for(lambda: metric(scrape(router.metrics), "charon_workers", 'state="idle"') == 2, 60, "2 workers")
        client = rc.RatpacClient(router.endpoint, context, timeout_ms=30_000, rat_pmt_positions=rat_geometry)
        client.begin_of_run("output.root")
        all_events = events()
        for photons in all_events[:7]:
            client.event(photons)

        def written(w: procs.Proc) -> float:
            return metric(scrape(w.metrics), "charon_worker_run_events_written_total")

        wait_for(lambda: written(w1) + written(w2) >= 6, 60, "two batches flushed")
        owner, other = (w1, w2) if written(w1) else (w2, w1)
        assert written(other) == 0, "one worker writes the run"
        owner.kill()  # SIGKILL: nothing more is written or closed by it
        for photons in all_events[7:]:
            client.event(photons)
        assert client.run_end()
        assert written(other) >= N_EVENTS - 6
        assert metric(scrape(router.metrics), "charon_runs_open") == 0
    assert client.warnings == []
    assert all(ex.ok for ex in client.exchanges), [(ex.header, ex.sends, ex.invalid) for ex in client.exchanges]
    assert [f.name for f in tmp_path.iterdir()] == ["output.charon.ntuple.root"]
    replayed, event_ids = rc.read_rootfile(tmp_path / "output.charon.ntuple.root", rat_geometry)
    assert event_ids == list(range(N_EVENTS))
    assert_same_pes(replayed, sync_pes)


# ---- the router's side, sans-IO: owners, loss, stale reports; the CHARONW1 run messages ------------


FP = "a" * 64
INFO = [struct.pack("<f", 1.0)] * 3 + [struct.pack("<i", 1)]


def router_state(flush_events: int = 2) -> RouterState:
    runs = RunSettings(async_mode=True, flush_events=flush_events)
    return RouterState(RouterSettings(), HeartbeatSettings(), runs=runs)


def to_worker(actions: list[Any], identity: bytes) -> list[Any]:
    """The CHARONW1 run messages ``actions`` send to ``identity``, decoded (heartbeats left out)."""
    msgs = [wp.decode_from_router(a.frames[1:]) for a in actions
            if isinstance(a, ToWorker) and a.frames[0] == identity]
    return [m for m in msgs if not isinstance(m, wp.Heartbeat)]


def client_replies(actions: list[Any]) -> list[list[bytes]]:
    return [[bytes(v1.as_view(f)) for f in a.frames[2:]] for a in actions if isinstance(a, ToClient)]


def test_router_gives_a_run_to_a_writer_when_one_registers_and_moves_it_when_it_is_lost() -> None:
    state = router_state()
    env = [b"c", b""]
    assert client_replies(state.on_client(env, [tokens.RUN_BEGIN, b"r.root"], 0.0, "10.1.1.1")) == [[tokens.ACK]]
    for e in range(3):  # no writer yet: answered, kept
        replies_ = client_replies(state.on_client(env, payload(e), 0.1, "10.1.1.1"))
        assert replies_ == [[tokens.SIM_COMPLETE_ASYNC, struct.pack("<I", e)]]
    state.on_worker(b"plain", wp.ready(FP, 1, "x", INFO), 0.2)  # takes no runs
    got = state.on_worker(b"w1", wp.ready(FP, 1, "x", INFO, runs=True), 0.3)
    msgs = to_worker(got, b"w1")
    assert isinstance(msgs[0], wp.RunOpen)
    assert (msgs[0].name, msgs[0].resume_from, msgs[0].flush_events) == ("r.charon.ntuple.root", 0, 2)
    assert [(m.seq, bytes(v1.as_view(m.payload[1]))) for m in msgs[1:] if isinstance(m, wp.RunEvent)] == \
        [(e, struct.pack("<II", e, 3)) for e in range(3)]
    run_id = msgs[0].run_id
    state.on_worker(b"w1", wp.run_written(run_id, 2), 0.4)
    state.on_worker(b"w2", wp.ready(FP, 1, "x", INFO, runs=True), 0.5)
    moved = to_worker(state.on_worker_gone(b"w1", 0.6), b"w2")
    assert isinstance(moved[0], wp.RunOpen)
    assert moved[0].resume_from == 2  # the flushed entries stay in the file
    assert [m.seq for m in moved if isinstance(m, wp.RunEvent)] == [2]
    assert state.on_worker(b"w1", wp.run_written(run_id, 3), 0.7) == []  # the former owner: ignored
    ending = state.on_client(env, [tokens.RUN_END], 0.8, "10.1.1.1")
    assert client_replies(ending) == []  # ACK once the file is closed
    assert to_worker(ending, b"w2") == [wp.RunClose(run_id)]
    assert client_replies(state.on_worker(b"w2", wp.run_written(run_id, 3, closed=True), 0.9)) == [[tokens.ACK]]
    assert state.runs is not None
    assert state.runs.open_runs == 0
    state.check_invariants()


def test_run_messages_round_trip_and_bad_ones_are_refused() -> None:
    assert wp.decode_from_router(wp.run_open(7, "a/b.charon.ntuple.root", 3, 500, 1 << 20)) == \
        wp.RunOpen(7, "a/b.charon.ntuple.root", 3, 500, 1 << 20)
    event = wp.decode_from_router(wp.run_event(7, 9, payload(1)))
    assert isinstance(event, wp.RunEvent)
    assert (event.run_id, event.seq, event.payload) == (7, 9, payload(1))
    assert wp.decode_from_router(wp.run_close(7)) == wp.RunClose(7)
    assert wp.decode_from_worker(wp.run_written(7, 12)) == wp.RunProgress(7, 12, False)
    assert wp.decode_from_worker(wp.run_written(7, 12, closed=True)) == wp.RunProgress(7, 12, True)
    ready = wp.decode_from_worker(wp.ready(FP, 2, "x", INFO, runs=True))
    assert isinstance(ready, wp.Ready)
    assert ready.runs
    plain = wp.decode_from_worker(wp.ready(FP, 2, "x", INFO))
    assert isinstance(plain, wp.Ready)
    assert not plain.runs
    for bad in (wp.run_open(7, "", 0, 1, 1), wp.run_open(7, "x", 0, 0, 1), wp.run_open(7, "x", 0, 1, 1)[:4],
                [wp.PROTOCOL, wp.RUN_OPEN, wp.token_frame(1), b"\xff", b"\0" * 20], wp.run_close(7)[:2]):
        with pytest.raises(WorkerProtocolError):
            wp.decode_from_router(bad)
    with pytest.raises(WorkerProtocolError):
        wp.decode_from_worker(wp.run_written(7, 1)[:3])


def test_a_name_leaving_the_directory_gets_synchronous_answers_and_no_file(
        context: zmq.Context[Any], tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    settings = inproc.settings(TCP, {"runs": {"async_mode": True, "outdir": str(outdir)}})
    with inproc.running(Server(settings, inproc.echo())) as server:
        client = rc.RatpacClient(server.endpoint, context, timeout_ms=10_000, rat_pmt_count=3000)
        client.begin_of_run("../escape.root")
        pes = client.event(isotropic(4, 25, 0))
        assert client.run_end()
        assert inproc.sample(server.service.registry, "charon_requests_total", kind="run_begin",
                             outcome="bad_filename") == 1
    assert pes.num_pe == 25  # SIM_COMPLETE: the hits went to RAT directly
    assert client.warnings == []
    assert not any(tmp_path.rglob("*.root"))


def test_the_spec_yaml_describes_the_file_the_writer_writes(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "proto-spec" / "charon-v1.yaml").read_text())["async_mode"]
    assert spec["file"]["suffix"] == naming.SUFFIX
    assert tuple(spec["file"]["strip_suffixes"]) == naming.STRIPPED
    assert spec["file"]["trees"]["output"] == OUTPUT_BRANCHES
    path = tmp_path / "y.charon.ntuple.root"
    sim = make_simulator(EngineSettings(backend="echo"))
    f = RunFile(path, sim.detector_info())
    f.append([1], sim.simulate([isotropic(1, 3, 0)]))
    f.close()
    with uproot.open(path) as written:
        types = {name: np.dtype(branch.interpretation.to_dtype).name for name, branch in written["detinfo"].items()}
        assert types == spec["file"]["trees"]["detinfo"]
        names = set(written["output"].keys())
    assert set(OUTPUT_BRANCHES) <= names
    assert {f"n{b}" for b in OUTPUT_BRANCHES if b != "event_id"} <= names  # uproot's counters


def test_charon_serve_killed_mid_run_leaves_every_flushed_event(context: zmq.Context[Any], tmp_path: Path) -> None:
    """``charon serve --async-mode`` SIGKILLed after its third flush: the file reads back with at
    least the nine events it reported written, in order."""
    env = {"CHARON_RUNS__FLUSH_EVENTS": "3"}
    with procs.serve("--async-mode", "--outdir", str(tmp_path), env=env) as server:
        client = rc.RatpacClient(server.endpoint, context, timeout_ms=20_000, rat_pmt_count=3000)
        client.begin_of_run("killed.root")
        for e in range(10):
            client.event(isotropic(e, 20 + e, 0))
        wait_for(lambda: metric(scrape(server.metrics), "charon_run_events_written_total") >= 9, 30, "3 flushes")
        server.kill()
    out = read_output(tmp_path / "killed.charon.ntuple.root")
    assert len(out["event_id"]) >= 9
    assert list(out["event_id"][:9]) == list(range(9))
    assert list(out["counts"][:9]) == [20 + e for e in range(9)]


def test_concurrent_runs_behind_the_router_are_spread_over_the_writers(
        context: zmq.Context[Any], tmp_path: Path, rat_geometry: np.ndarray[Any, Any]) -> None:
    router_settings = inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": inproc.endpoint("w")},
                                       "runs": {"async_mode": True, "flush_events": 2}})
    with inproc.running(Router(router_settings, context=context)) as router:
        worker_settings = inproc.settings({"worker": {"router": router.workers_endpoint},
                                           "runs": {"outdir": str(tmp_path)}})
        with inproc.running(Worker(worker_settings, inproc.echo(), context=context)) as w1, \
                inproc.running(Worker(worker_settings, inproc.echo(), context=context)) as w2:
            wait_for(lambda: router.service.state.idle_workers == 2, 10, "2 workers")
            a, b = (rc.RatpacClient(e, context, timeout_ms=10_000, rat_pmt_positions=rat_geometry)
                    for e in two_source_endpoints(router.endpoint))
            a.begin_of_run("a.root")
            b.begin_of_run("b.root")
            for e in range(5):
                a.event(isotropic(e, 5 + e, 0))
                b.event(isotropic(50 + e, 7 + e, 0))
            assert a.run_end()
            assert b.run_end()
            written = [inproc.sample(w.service.registry, "charon_worker_run_events_written_total") for w in (w1, w2)]
    assert sorted(written) == [5, 5], "one run per writer"
    assert list(read_output(tmp_path / "a.charon.ntuple.root")["event_id"]) == list(range(5))
    assert list(read_output(tmp_path / "b.charon.ntuple.root")["counts"]) == [7 + e for e in range(5)]


def test_the_recorder_reports_only_what_is_on_disk(tmp_path: Path) -> None:
    """A batch written while more events wait: the report counts the file's entries, never the
    buffered ones (a successor resumes from that count)."""
    from charon.runs.recorder import CLOSED, WRITTEN, Recorder, RunCommand
    from charon.service import RequestHandler

    reports: list[tuple[bytes, int]] = []
    recorder = Recorder(RequestHandler(inproc.echo()), tmp_path)
    recorder.report = lambda generation, kind, run_id, count: reports.append((kind, count))
    recorder.accept(RunCommand(1, lg.Open(5, PurePosixPath("r.charon.ntuple.root"), 0, 3, 1 << 30)))
    for seq in range(4):
        recorder.accept(RunCommand(1, lg.Record(5, seq, payload(seq))))
    assert recorder.due()
    recorder.step()
    assert reports == [(WRITTEN, 3)]
    assert len(read_output(tmp_path / "r.charon.ntuple.root")["event_id"]) == 3
    recorder.accept(RunCommand(1, lg.Close(5)))
    recorder.step()
    assert reports[-1] == (CLOSED, 4)


def test_all_runs_together_stay_under_the_total_bound() -> None:
    one_event = v1.decode_photondata(payload(0)).nbytes
    led = ledger(flush_events=100, max_total_bytes=4 * one_event)
    ids = {c: next(a.run_id for a in led.run_begin(c, [b"e"], f"{c}.root", 0.0) if isinstance(a, lg.Open))
           for c in ("a", "b")}
    assert replies(send(led, "a", 1))
    assert replies(send(led, "b", 1))
    assert replies(send(led, "a", 2))
    assert replies(send(led, "b", 2)) == []  # 4 events unwritten across the two runs: b waits
    assert replies(send(led, "a", 3)) == []  # and so does a
    released = replies(led.written(ids["a"], 2))  # a's writer frees two events' bytes
    assert released == [[tokens.SIM_COMPLETE_ASYNC, struct.pack("<I", 3)],
                        [tokens.SIM_COMPLETE_ASYNC, struct.pack("<I", 2)]]
    assert led.unwritten_bytes == 3 * one_event


def test_a_partial_batch_is_written_once_its_run_goes_quiet(tmp_path: Path) -> None:
    from charon.runs.recorder import IDLE_FLUSH_S, WRITTEN, Recorder, RunCommand
    from charon.service import RequestHandler

    clock = inproc.FakeClock()
    reports: list[tuple[bytes, int]] = []
    recorder = Recorder(RequestHandler(inproc.echo()), tmp_path, clock=clock)
    recorder.report = lambda generation, kind, run_id, count: reports.append((kind, count))
    recorder.accept(RunCommand(1, lg.Open(5, PurePosixPath("q.charon.ntuple.root"), 0, 100, 1 << 30)))
    recorder.accept(RunCommand(1, lg.Record(5, 0, payload(0))))
    assert not recorder.due()
    assert recorder.wait_s() == pytest.approx(IDLE_FLUSH_S)
    clock.advance(IDLE_FLUSH_S)
    assert recorder.due()
    recorder.step()
    assert reports == [(WRITTEN, 1)]
    assert recorder.wait_s() is None


def test_a_resent_run_begin_keeps_its_still_empty_run() -> None:
    led = ledger()
    led.run_begin("a", [b"e"], "output.root", 0.0)
    first = [a for a in led.run_begin("b", [b"e"], "output.root", 0.0) if isinstance(a, lg.Open)]
    again = led.run_begin("b", [b"e"], "output.root", 1.0)  # b's client timed out and resent it
    assert replies(again) == [[tokens.ACK]]
    assert [type(a) for a in again] == [lg.Reply]
    assert first[0].name == PurePosixPath("output_2.charon.ntuple.root")
    assert led.open_runs == 2
