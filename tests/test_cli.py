"""The command line as a user meets it, run in-process: flags, settings, exit codes, one-line errors.

``charon.cli.main`` runs here as the console script runs it (the real commands behind it; servers
it talks to run in-process too). The real ``python -m charon`` processes are in test_processes.py.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from charon import cli, commands
from charon.process import Stop
from charon.router.driver import Router
from charon.server import Server
from charon.settings import ALL_COMMANDS, FlagField, Settings, flags, load_settings
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import wait_for


@pytest.fixture(autouse=True)
def _keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main reconfigures logging for a process; here the process is pytest's."""
    monkeypatch.setattr("charon.runtime.setup_logging", lambda level: None)


def run(*argv: str) -> int:
    try:
        return cli.main(list(argv))
    except SystemExit as exc:  # argparse errors
        return int(exc.code or 0)


# ---- flags: declared once, next to their settings field ------------------------------------------


def example(declared: FlagField) -> tuple[list[str], object]:
    """Command-line words for ``declared``'s flag and the value the setting must get from them."""
    annotation, default = declared.info.annotation, declared.info.default
    if annotation is bool:
        return [declared.flag.name], True
    if typing.get_origin(annotation) is typing.Literal:
        value = next(c for c in typing.get_args(annotation) if c != default)
        return [declared.flag.name, value], value
    base = next(a for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None))
    if base is Path:
        return [declared.flag.name, "/tmp/charon-flag-test"], Path("/tmp/charon-flag-test")
    if base is int:
        return [declared.flag.name, str(default + 1)], default + 1
    if base is float:
        return [declared.flag.name, str(default + 0.5)], default + 0.5
    if declared.flag.metavar == "HOST:PORT":
        return [declared.flag.name, "127.0.0.1:9999"], "127.0.0.1:9999"
    return [declared.flag.name, "tcp://127.0.0.1:7777"], "tcp://127.0.0.1:7777"


def command_flags() -> Iterator[tuple[str, FlagField]]:
    for command in cli.COMMANDS:
        for declared in flags():
            if declared.flag.applies_to(command):
                yield command, declared


PAIRS = list(command_flags())


@pytest.mark.parametrize(("command", "declared"), PAIRS,
                         ids=[f"{c}{d.flag.name}={d.path}" for c, d in PAIRS])
def test_every_flag_of_every_command_reaches_its_setting(command: str, declared: FlagField) -> None:
    words, expected = example(declared)
    positional = {"cluster": ["check"], "detector": ["info"], "keys": ["generate", "DIR", "NAME"]}.get(command, [])
    args = cli.build_parser().parse_args([command, *positional, *words])
    settings = cli.settings_from_args(command, args)
    assert getattr(getattr(settings, declared.section), declared.field) == expected


def test_the_flag_pairs_cover_every_command_and_the_known_flags() -> None:
    assert {c for c, _ in PAIRS} == set(cli.COMMANDS)  # --log-level at least
    engine = {d.flag.name for c, d in PAIRS if c == "demo"}
    assert {"--device", "--threads", "--max-steps", "--cuda-device", "--ratdb", "--echo-delay"} <= engine
    for declared in flags():
        if declared.flag.commands != ALL_COMMANDS:
            assert set(declared.flag.commands) <= set(cli.COMMANDS), declared.path


@pytest.mark.parametrize("declared", [d for c, d in PAIRS if c == "demo"], ids=lambda d: d.flag.name)
def test_demo_hands_every_flag_to_its_server_through_the_environment(
        declared: FlagField, monkeypatch: pytest.MonkeyPatch) -> None:
    words, expected = example(declared)
    settings = cli.settings_from_args("demo", cli.build_parser().parse_args(["demo", *words]))
    env = commands.child_environment(settings)
    for name in [n for n in os.environ if n.upper().startswith("CHARON_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("CHARON_"):
            monkeypatch.setenv(name, value)
    child = load_settings()
    if declared.path not in ("log.level",):
        assert getattr(getattr(child, declared.section), declared.field) == expected
    assert child.server.bind == "tcp://127.0.0.1:*"


def test_config_bind_sets_both_client_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("config", "--bind", "tcp://*:7000") == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["server"]["bind"] == cfg["router"]["bind"] == "tcp://*:7000"


def test_config_prints_effective_settings_with_flag_over_env(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARON_ENGINE__SEED", "7")
    monkeypatch.setenv("CHARON_ROUTER__QUEUE_MAX_REQUESTS", "17")
    assert run("config", "--seed", "42", "--backend", "echo") == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["engine"]["seed"] == 42
    assert cfg["engine"]["backend"] == "echo"
    assert cfg["router"]["queue_max_requests"] == 17


# ---- errors: one line, the exit status the error carries -----------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("config", "--seed", "abc"), {}, "engine.seed (--seed / CHARON_ENGINE__SEED)"),
        (("config",), {"CHARON_ROUTER__QUEUE_DEADLINE_S": "-3"}, "router.queue_deadline_s"),
        (("config", "--backend", "gpu"), {}, "--backend: invalid choice: 'gpu'"),
        (("serve", "--bind", "5555"), {}, "server.bind (--bind / CHARON_SERVER__BIND)"),
        (("simulate", "--events", "0"), {}, "--events 0: must be at least 1"),
        (("simulate", "--source", "1,2"), {}, "--source '1,2': expected three numbers"),
        (("simulate", "--events", "x"), {}, "argument --events: invalid int value: 'x'"),
        (("serve", "--detector", "/nonexistent/det.npz"), {},
         ("invalid setting engine.detector (--detector / CHARON_ENGINE__DETECTOR) = '/nonexistent/det.npz': "
          "no such file")),
        (("serve", "--metrics-addr", "nonsense"), {}, "expected HOST:PORT, e.g. :9100"),
        (("worker", "--router", "localhost"), {}, "expected a ZeroMQ endpoint such as tcp://*:5555"),
        (("simulate", "--plot", "/nonexistent/dir/x.png"), {}, "--plot '/nonexistent/dir/x.png': directory"),
        (("simulate", "--photons", "-1"), {}, "--photons -1: must be between 0 and 100000000"),
        (("simulate", "--wavelength", "20"), {}, "--wavelength 20.0: must be between 60 and 1000 nm"),
        (("simulate", "--first-event", "-1"), {}, "--first-event -1: the 10 event ids must fit in uint32"),
        (("simulate", "--first-event", "4294967290"), {}, "--first-event 4294967290: the 10 event ids"),
        (("simulate", "--concurrency", "0", "--endpoint", "tcp://127.0.0.1:9"), {},
         "charon simulate: error: --concurrency 0: must be between 1 and 256"),
        (("flukaio-gateway", "--listen", "ipc:///tmp/charon-flukaio", "--echo"), {},
         "gateway.listen (--listen / CHARON_GATEWAY__LISTEN) = 'ipc:///tmp/charon-flukaio': FlukaIO needs"),
        (("flukaio-gateway", "--listen", "tcp://127.0.0.1:70000", "--echo"), {}, "port above 65535"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], env: dict[str, str], needle: str,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert run(*args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert needle in lines[0]


def test_a_detector_error_is_reported_as_what_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "det.npz"
    bad.write_bytes(b"not a detector")
    assert run("serve", "--backend", "echo", "--detector", str(bad), "--bind", "tcp://127.0.0.1:*") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"charon serve: error: detector file {str(bad)!r}")
    assert "invalid setting" not in err


def test_an_endpoint_that_cannot_be_bound_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with inproc.running(Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}), inproc.echo())) as s:
        assert run("router", "--bind", s.endpoint, "--workers-bind", "tcp://127.0.0.1:*",
                   "--metrics-addr", "127.0.0.1:0") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"charon router: error: cannot bind {s.endpoint}:")


def test_ping_without_server_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("ping", "--endpoint", "tcp://127.0.0.1:9", "--timeout", "0.2", "--retries", "1") == 1
    assert "no reply within 0.2 s after 2 tries" in capsys.readouterr().err


# ---- client commands against in-process servers --------------------------------------------------


@pytest.fixture
def server() -> Iterator[inproc.Running]:
    with inproc.running(Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}), inproc.echo())) as s:
        yield s


def _rows(out: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split(None, 1) for line in out.splitlines()[1:] if line.strip())}


def test_ping_info_simulate_against_a_server(server: inproc.Running, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("ping", "--endpoint", server.endpoint) == 0
    assert capsys.readouterr().out.startswith("ACK from")
    assert run("info", "--endpoint", server.endpoint) == 0
    assert "3000 channels" in capsys.readouterr().out
    assert run("simulate", "--endpoint", server.endpoint, "--events", "3", "--photons", "500") == 0
    rows = _rows(capsys.readouterr().out)
    assert (rows["events"], rows["photons"], rows["hits"]) == ("3", "1500", "1500")  # echo: a hit per photon


def test_simulate_plot_writes_a_picture(server: inproc.Running, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hits.png"
    assert run("simulate", "--endpoint", server.endpoint, "--events", "2", "--photons", "300",
               "--plot", str(out)) == 0
    assert f"hit map and hit-time histogram written to {out}" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_with_concurrency_keeps_every_worker_of_a_router_busy(
        context: zmq.Context[Any], capsys: pytest.CaptureFixture[str]) -> None:
    rs = inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": inproc.endpoint("workers")}})
    router = Router(rs, context=context)
    with inproc.running(router) as r:
        ws = inproc.settings({"worker": {"router": r.workers_endpoint}})
        workers = [Worker(ws, inproc.echo(delay_s=0.2), context=context) for _ in range(2)]
        with inproc.running(workers[0]), inproc.running(workers[1]):
            wait_for(lambda: router.state.idle_workers == 2, 10, "two workers")
            assert run("simulate", "--endpoint", r.endpoint, "--events", "12", "--photons", "100",
                       "--concurrency", "4") == 0
            out = capsys.readouterr().out
    assert "(4 requests in flight)" in out
    rows = _rows(out)
    assert (rows["events"], rows["hits"]) == ("12", "1200")
    per_worker = [inproc.sample(w.registry, "charon_worker_requests_total", outcome="ok") for w in workers]
    assert sum(per_worker) == 12
    assert min(per_worker) >= 2, per_worker


def test_settings_reach_a_service_started_by_its_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """``charon serve`` builds the service from the flags: the server it runs has them."""
    seen: list[Settings] = []

    def fake_run_service(service: Any, stop: Stop | None = None, announce: Any = None) -> int:
        seen.append(service.settings)
        return 0

    monkeypatch.setattr("charon.server.run_service", fake_run_service)
    assert run("serve", "--backend", "echo", "--seed", "5", "--legacy-pong", "--bind", "tcp://127.0.0.1:*") == 0
    assert (seen[0].engine.seed, seen[0].server.legacy_pong, seen[0].server.bind) == (5, True, "tcp://127.0.0.1:*")
