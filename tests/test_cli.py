"""The command line as a user meets it: real subprocesses, exit codes, single-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from charon import cli, commands
from charon.settings import ALL_COMMANDS, FlagField, flags, load_settings
from tests import procs


def charon(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "charon", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def test_config_prints_effective_settings_with_flag_over_env() -> None:
    result = charon("config", "--seed", "42", "--backend", "echo",
                    env={"CHARON_ENGINE__SEED": "7", "CHARON_ROUTER__QUEUE_MAX_REQUESTS": "17"})
    assert result.returncode == 0, result.stderr
    cfg = json.loads(result.stdout)
    assert cfg["engine"]["seed"] == 42
    assert cfg["engine"]["backend"] == "echo"
    assert cfg["router"]["queue_max_requests"] == 17


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
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], env: dict[str, str], needle: str) -> None:
    result = charon(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]


def test_ping_without_server_fails_cleanly() -> None:
    result = charon("ping", "--endpoint", "tcp://127.0.0.1:9", "--timeout", "0.2", "--retries", "1")
    assert result.returncode == 1
    assert "no reply within 0.2 s after 2 tries" in result.stderr


def test_ping_info_simulate_against_a_server() -> None:
    with procs.serve() as server:
        ping = charon("ping", "--endpoint", server.endpoint)
        assert ping.returncode == 0, ping.stderr
        assert ping.stdout.startswith("ACK from")
        info = charon("info", "--endpoint", server.endpoint)
        assert "3000 channels" in info.stdout
        sim = charon("simulate", "--endpoint", server.endpoint, "--events", "3", "--photons", "500")
        assert sim.returncode == 0, sim.stderr
        rows = dict(line.split(None, 1) for line in sim.stdout.splitlines()[1:] if line.strip())
        assert rows["events"].strip() == "3"
        assert rows["photons"].strip() == "1500"
        assert rows["hits"].strip() == "1500"  # echo: one hit per photon


def test_demo_runs_the_embedded_default() -> None:
    result = charon("demo", "--events", "2", "--photons", "2000", env={"CHARON_ENGINE__BACKEND": "echo"})
    assert result.returncode == 0, result.stderr
    assert "server ready on tcp://127.0.0.1:" in result.stdout
    assert "photons/s" in result.stdout
    assert "4000" in result.stdout


def test_simulate_plot_writes_a_picture(tmp_path: Path) -> None:
    out = tmp_path / "hits.png"
    with procs.serve() as server:
        sim = charon("simulate", "--endpoint", server.endpoint, "--events", "2", "--photons", "300",
                     "--plot", str(out))
    assert sim.returncode == 0, sim.stderr
    assert f"hit map and hit-time histogram written to {out}" in sim.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_with_concurrency_keeps_every_worker_of_a_router_busy() -> None:
    slow = {"CHARON_HEARTBEAT__INTERVAL_S": "0.2"}
    with procs.router(env=slow) as router, \
            procs.worker(router.workers_endpoint, "--echo-delay", "0.2", env=slow) as w1, \
            procs.worker(router.workers_endpoint, "--echo-delay", "0.2", env=slow) as w2:
        sim = charon("simulate", "--endpoint", router.endpoint, "--events", "12", "--photons", "100",
                     "--concurrency", "4")
        assert sim.returncode == 0, sim.stderr
        assert "(4 requests in flight)" in sim.stdout
        rows = dict(line.split(None, 1) for line in sim.stdout.splitlines()[1:] if line.strip())
        assert rows["events"].strip() == "12"
        assert rows["hits"].strip() == "1200"
        per_worker = []
        for w in (w1, w2):
            text = urllib.request.urlopen(w.metrics_url, timeout=5).read().decode()
            match = re.search(r'^charon_worker_requests_total\{outcome="ok"\} ([0-9.]+)$', text, re.MULTILINE)
            per_worker.append(float(match.group(1)) if match else 0.0)
        assert sum(per_worker) == 12
        assert min(per_worker) >= 2, per_worker


def test_simulate_concurrency_out_of_range_is_one_line() -> None:
    result = charon("simulate", "--concurrency", "0", "--endpoint", "tcp://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr.strip() == "charon simulate: error: --concurrency 0: must be between 1 and 256"


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
    positional = ["check"] if command == "cluster" else []
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


def test_config_bind_sets_both_client_endpoints() -> None:
    result = charon("config", "--bind", "tcp://*:7000")
    assert result.returncode == 0, result.stderr
    cfg = json.loads(result.stdout)
    assert cfg["server"]["bind"] == cfg["router"]["bind"] == "tcp://*:7000"
