"""CURVE end to end on 127.0.0.1: who is served, who gets nothing, and how a wrong setting is reported.

``charon serve``, ``charon router`` and real workers run in-process on TCP loopback (CURVE needs
TCP: libzmq does not run it over inproc), each server on its own zmq context, as each process has
its own. Refused peers are raw sockets the test configures: a plain one (no CURVE), one holding
an unlisted key, one holding another server's public key. None may get any reply; each refusal is
counted in ``charon_auth_refused_total{socket}``; an allowed client is served.
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from charon import cli
from charon.client import Client
from charon.curve import ClientKeys, KeyPair, generate, load_public, load_secret
from charon.errors import ConfigError, ServerUnavailable
from charon.protocol import tokens
from charon.protocol import worker as wp
from charon.router.driver import Router
from charon.server import Server
from charon.worker.driver import Worker
from tests import inproc
from tests.router_support import check_sim_complete, photondata, wait_for

NO_REPLY_S = 0.7


@pytest.fixture(autouse=True)
def _keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main reconfigures logging for a process; here the process is pytest's."""
    monkeypatch.setattr("charon.runtime.setup_logging", lambda level: None)


@dataclass(frozen=True)
class Keys:
    root: Path
    clients: Path  # allowed client certificates (public only)
    workers: Path  # allowed worker certificates (public only)

    def secret(self, name: str) -> Path:
        return self.root / "secret" / f"{name}.key_secret"

    def public(self, name: str) -> Path:
        return self.root / "secret" / f"{name}.key"

    def pair(self, name: str) -> KeyPair:
        return load_secret(self.secret(name))

    def client(self, name: str, server: str = "server") -> ClientKeys:
        return ClientKeys(load_public(self.public(server)), self.pair(name))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("curve")
    for name in ("server", "other-server", "alice", "mallory", "worker-0", "rogue"):
        generate(root / "secret", name)
    clients, workers = root / "clients", root / "workers"
    clients.mkdir()
    workers.mkdir()
    shutil.copy(root / "secret" / "alice.key", clients)
    shutil.copy(root / "secret" / "worker-0.key", workers)
    return Keys(root, clients, workers)


def server_security(keys: Keys, **extra: str) -> dict[str, dict[str, Any]]:
    return {"security": {"curve_secret_key": str(keys.secret("server")), "curve_clients": str(keys.clients),
                         **extra}}


def dealer(ctx: zmq.Context[Any], endpoint: str, curve: ClientKeys | None) -> zmq.Socket[Any]:
    """A raw peer: a DEALER (REQ framing by hand), CURVE-configured or plain."""
    sock: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        sock.curve_serverkey = curve.server_public
        sock.curve_publickey = curve.keys.public
        sock.curve_secretkey = curve.keys.secret
    sock.connect(endpoint)
    return sock


def refused(service: Any, socket: str) -> float:
    return inproc.sample(service.registry, "charon_auth_refused_total", socket=socket)


def expect_nothing(ctx: zmq.Context[Any], service: Any, endpoint: str, curve: ClientKeys | None,
                   what: str) -> None:
    """A peer that sends PING and PHOTONDATA gets no reply at all, and its refusal is counted."""
    before = refused(service, "clients")
    sock = dealer(ctx, endpoint, curve)
    try:
        sock.send_multipart([b"", tokens.PING])
        sock.send_multipart([b"", *photondata(7, 10)])
        assert not sock.poll(int(NO_REPLY_S * 1000)), f"{what} got a reply"
        wait_for(lambda: refused(service, "clients") > before, 10, f"{what} counted as refused")
    finally:
        sock.close(linger=0)


REFUSED_CLIENTS = [
    ("a plain client", None),
    ("an unlisted client key", ("mallory", "server")),
    ("another server's public key", ("alice", "other-server")),
]


def refused_curve(keys: Keys, spec: tuple[str, str] | None) -> ClientKeys | None:
    return None if spec is None else keys.client(*spec)


def test_serve_with_curve_serves_an_allowed_client_and_nothing_else(keys: Keys) -> None:
    service = Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}, server_security(keys)), inproc.echo())
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        with inproc.log_lines() as logs, inproc.running(service) as handle:
            for what, spec in REFUSED_CLIENTS:
                expect_nothing(ctx, service, handle.endpoint, refused_curve(keys, spec), what)
            # the same unlisted key again: counted again, logged once
            expect_nothing(ctx, service, handle.endpoint, keys.client("mallory"), "mallory again")
            mallory = load_public(keys.public("mallory")).decode()
            logs.wait_for("clients socket: refused a ")  # the plain peer and the one with another server key
            assert logs.text().count(mallory) == 1, logs.text()
            with Client(handle.endpoint, timeout_s=0.3, retries=1, context=ctx,
                        curve=keys.client("mallory")) as refused_client, \
                    pytest.raises(ServerUnavailable, match="server allows this key"):
                refused_client.ping()
            with Client(handle.endpoint, timeout_s=10, retries=0, context=ctx, curve=keys.client("alice")) as alice:
                alice.ping()
                check_sim_complete(alice.request(photondata(3, 40)), 3, 40)
            assert inproc.sample(service.registry, "charon_requests_total", kind="photondata", outcome="ok") == 1
            assert inproc.sample(service.registry, "charon_requests_total", kind="ping", outcome="ok") == 1
    finally:
        ctx.destroy(linger=0)


def test_serve_without_a_client_list_serves_any_client_key_but_no_plain_client(keys: Keys) -> None:
    security = {"security": {"curve_secret_key": str(keys.secret("server"))}}
    service = Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}, security), inproc.echo())
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        with inproc.running(service) as handle:
            expect_nothing(ctx, service, handle.endpoint, None, "a plain client")
            public, secret = zmq.curve_keypair()
            fresh = ClientKeys(load_public(keys.public("server")), KeyPair(public, secret))
            with Client(handle.endpoint, timeout_s=10, retries=0, context=ctx, curve=fresh) as anyone:
                anyone.ping()
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
def curve_router(keys: Keys) -> Iterator[tuple[Router, inproc.Running]]:
    settings = inproc.settings({"router": {"bind": "tcp://127.0.0.1:*", "workers_bind": "tcp://127.0.0.1:*"}},
                               server_security(keys, curve_workers=str(keys.workers)))
    service = Router(settings)
    with inproc.running(service) as handle:
        yield service, handle


def registered(router: Router) -> int:
    return len(router.state.workers)


def test_router_with_curve_admits_listed_workers_and_clients_only(
        keys: Keys, curve_router: tuple[Router, inproc.Running]) -> None:
    router, handle = curve_router
    ctx: zmq.Context[Any] = zmq.Context()
    rogues: list[zmq.Socket[Any]] = []
    try:
        worker_security = {"security": {"curve_secret_key": str(keys.secret("worker-0")),
                                        "curve_server_key": str(keys.public("server"))}}
        good = Worker(inproc.settings({"worker": {"router": handle.workers_endpoint}}, worker_security), inproc.echo())
        unlisted_security = {"security": {"curve_secret_key": str(keys.secret("rogue")),
                                          "curve_server_key": str(keys.public("server"))}}
        unlisted = Worker(inproc.settings({"worker": {"router": handle.workers_endpoint}}, unlisted_security),
                          inproc.echo())
        with inproc.log_lines() as logs, inproc.running(good), inproc.running(unlisted):
            wait_for(lambda: registered(router) == 1, 10, "the listed worker registered")
            logs.wait_for("closed this connection for good (it refused this worker's CURVE key)")
            assert not unlisted.http.health.ready
            # Rogue workers: a ChAR0N READY on a plain socket, CHARONW1 READY with an unlisted key
            # and with another server's key. Each keeps its connection open and retrying.
            for spec in (None, ("rogue", "server"), ("worker-0", "other-server")):
                before = refused(router, "workers")
                rogue = dealer(ctx, handle.workers_endpoint, refused_curve(keys, spec))
                rogues.append(rogue)
                rogue.send_multipart([tokens.PPP_READY] if spec is None else
                                     wp.ready(good.handler.simulator.fingerprint, 1024, "rogue", [b"\0" * 4] * 4))
                wait_for(lambda b=before: refused(router, "workers") > b, 10, f"rogue worker {spec} refused")
            logs.wait_for(load_public(keys.public("rogue")).decode())
            assert registered(router) == 1
            for what, spec in REFUSED_CLIENTS:
                expect_nothing(ctx, router, handle.endpoint, refused_curve(keys, spec), what)
            with Client(handle.endpoint, timeout_s=10, retries=0, context=ctx, curve=keys.client("alice")) as alice:
                alice.ping()
                for event in range(20):
                    check_sim_complete(alice.request(photondata(event, 30 + event)), event, 30 + event)
            assert registered(router) == 1
            assert all(not r.poll(0) for r in rogues), "a rogue worker was sent something"
            assert inproc.sample(router.registry, "charon_requests_total", kind="photondata", outcome="ok") == 20
    finally:
        for r in rogues:
            r.close(linger=0)
        ctx.destroy(linger=0)


# ---- configuration errors ------------------------------------------------------------------------


HALF = [
    ("serve", {"curve_clients": "clients"}, "security.curve_secret_key"),
    ("router", {"curve_clients": "clients"}, "security.curve_secret_key"),
    ("router", {"curve_workers": "workers"}, "security.curve_secret_key"),
    ("router", {"curve_secret_key": "secret/server.key_secret"}, "security.curve_workers"),
    ("worker", {"curve_secret_key": "secret/worker-0.key_secret"}, "security.curve_server_key"),
    ("worker", {"curve_server_key": "secret/server.key"}, "security.curve_secret_key"),
    ("client", {"curve_secret_key": "secret/alice.key_secret"}, "security.curve_server_key"),
]


def _service(role: str, security: dict[str, str]) -> Any:
    settings = inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"},
                                "router": {"bind": "tcp://127.0.0.1:*", "workers_bind": "tcp://127.0.0.1:*"}},
                               {"security": security})
    if role == "serve":
        return Server(settings, inproc.echo())
    if role == "router":
        return Router(settings)
    return Worker(settings, inproc.echo())


@pytest.mark.parametrize(("role", "given", "missing"), HALF)
def test_half_configuration_is_refused_at_start_up_naming_the_setting(
        keys: Keys, role: str, given: dict[str, str], missing: str) -> None:
    security = {k: str(keys.root / v) for k, v in given.items()}
    for k in ("curve_clients", "curve_workers"):
        if k in security:
            security[k] = str(getattr(keys, k.split("_")[1]))
    if role == "client":
        from charon.curve import client_keys
        from charon.settings import SecuritySettings

        with pytest.raises(ConfigError) as err:
            client_keys(SecuritySettings(**security))  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigError) as err:
            inproc.start(_service(role, security))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(missing + " (--"), message
    assert err.value.setting == missing


@pytest.mark.parametrize(("setting", "file", "why"), [
    ("curve_secret_key", "secret/server.key", "holds no secret key"),
    ("curve_secret_key", "secret/nothing.key_secret", "no such file"),
    ("curve_clients", "secret/alice.key", "no such directory"),
    ("curve_clients", "empty", "holds no public certificate"),
    ("curve_clients", "garbage", "not a ZeroMQ certificate"),
])
def test_unusable_certificates_are_one_line_errors(keys: Keys, tmp_path: Path, setting: str, file: str,
                                                   why: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "x.key").write_text("metadata\ncurve\n    public-key = \"short\"\n")
    root = tmp_path if file in ("empty", "garbage") else keys.root
    security = {"curve_secret_key": str(keys.secret("server")), setting: str(root / file)}
    with pytest.raises(ConfigError, match=why) as err:
        inproc.start(_service("serve", security))
    assert f"security.{setting}" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("argv", [
    ["router", "--curve-clients", "{clients}"],
    ["serve", "--backend", "echo", "--curve-clients", "{clients}"],
    ["worker", "--backend", "echo", "--curve-secret-key", "{secret}"],
    ["ping", "--curve-secret-key", "{secret}"],
    ["flukaio-gateway", "--router", "tcp://127.0.0.1:1", "--curve-secret-key", "{secret}"],
])
def test_half_configuration_on_the_command_line_exits_2_with_one_line(
        keys: Keys, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(clients=keys.clients, secret=keys.secret("alice")) for a in argv]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"charon {argv[0]}: error: security.curve_"), err
    assert "is needed with" in err


# ---- charon keys generate ------------------------------------------------------------------------


def test_keys_generate_writes_zeromq_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "new" / "dir"
    assert cli.main(["keys", "generate", str(target), "router"]) == 0
    out = capsys.readouterr().out
    public_file, secret_file = target / "router.key", target / "router.key_secret"
    assert str(public_file) in out
    assert str(secret_file) in out
    public, none = zmq.auth.load_certificate(public_file)
    public2, secret = zmq.auth.load_certificate(secret_file)
    assert none is None
    assert secret is not None
    assert public == public2
    assert zmq.curve_public(secret) == public
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    # pyzmq's own loader reads the directory as an allow-list
    assert set(zmq.auth.load_certificates(target)) == {public}
    # never overwritten
    before = secret_file.read_bytes()
    assert cli.main(["keys", "generate", str(target), "router"]) == 2
    assert "exists" in capsys.readouterr().err
    assert secret_file.read_bytes() == before


@pytest.mark.parametrize("name", ["", "../x", ".hidden"])
def test_keys_generate_refuses_a_bad_name(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "generate", str(tmp_path), name]) == 2
    assert "NAME" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---- the FlukaIO gateway's upstream --------------------------------------------------------------


def test_gateway_upstream_reaches_a_curve_server_with_its_keys_only(keys: Keys) -> None:
    import numpy as np

    from charon.flukaio import codec
    from charon.flukaio.codec import Hsk, Layout, Particle, StreamDecoder
    from charon.flukaio.gateway import router_backend_factory
    from tests.test_flukaio_gateway import gateway, photon_batch, port_of, run_batches, wait_for_log

    server = Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}, server_security(keys)), inproc.echo())
    with inproc.running(server) as handle:
        batch = photon_batch(50, Layout.CURRENT, np.random.default_rng(3))
        allowed = {"gateway": {"router": handle.endpoint},
                   "security": {"curve_secret_key": str(keys.secret("alice")),
                                "curve_server_key": str(keys.public("server"))}}
        settings = inproc.settings({"gateway": {"listen": "tcp://127.0.0.1:0"}}, allowed)
        with gateway(router_backend_factory(settings), allowed) as gw:
            reply = run_batches(port_of(gw), Layout.CURRENT, [(4, batch)])
        messages = StreamDecoder(Layout.CURRENT).feed(reply)
        assert sum(isinstance(m, Particle) for m in messages) == 50  # echo: one hit per photon
        assert inproc.sample(server.registry, "charon_requests_total", kind="photondata", outcome="ok") == 1

        before = refused(server, "clients")
        unlisted = {"gateway": {"router": handle.endpoint}, "client": {"timeout_s": 0.5, "retries": 0},
                    "security": {"curve_secret_key": str(keys.secret("mallory")),
                                 "curve_server_key": str(keys.public("server"))}}
        settings = inproc.settings({"gateway": {"listen": "tcp://127.0.0.1:0"}}, unlisted)
        with gateway(router_backend_factory(settings), unlisted) as gw:
            assert run_batches(port_of(gw), Layout.CURRENT, [(5, batch)]) == codec.encode(Hsk())
            wait_for_log(gw, r"simulation failed: .*; closing without reply")
        assert refused(server, "clients") > before
        assert inproc.sample(server.registry, "charon_requests_total", kind="photondata", outcome="ok") == 1


def test_ping_info_and_simulate_commands_with_curve(keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    service = Server(inproc.settings({"server": {"bind": "tcp://127.0.0.1:*"}}, server_security(keys)), inproc.echo())
    with inproc.running(service) as handle:
        curve = ["--curve-server-key", str(keys.public("server")), "--curve-secret-key", str(keys.secret("alice"))]
        common = ["--endpoint", handle.endpoint, "--timeout", "10", "--retries", "0"]
        assert cli.main(["ping", *common, *curve]) == 0
        assert cli.main(["info", *common, *curve]) == 0
        assert cli.main(["simulate", *common, *curve, "--events", "2", "--photons", "100"]) == 0
        out = capsys.readouterr().out
        assert f"ACK from {handle.endpoint}" in out
        assert "3000 channels" in out
        assert "hits" in out
        refused = ["--endpoint", handle.endpoint, "--timeout", "0.3", "--retries", "0"]
        assert cli.main(["ping", *refused]) == 1  # plain: nothing comes back
        assert cli.main(["ping", *refused, "--curve-server-key", str(keys.public("server"))]) == 1  # fresh key
        assert "server allows this key" in capsys.readouterr().err
    assert inproc.sample(service.registry, "charon_requests_total", kind="photondata", outcome="ok") == 2


def test_a_curve_router_that_cannot_bind_stops_cleanly(keys: Keys) -> None:
    """The authenticator and monitor started before the bind are stopped again (the context ends)."""
    from charon.errors import StartupError
    from tests.router_support import free_port

    blocker: zmq.Context[Any] = zmq.Context()
    taken = blocker.socket(zmq.ROUTER)
    port = free_port()
    taken.bind(f"tcp://127.0.0.1:{port}")
    try:
        settings = inproc.settings({"router": {"bind": f"tcp://127.0.0.1:{port}", "workers_bind": "tcp://127.0.0.1:*"}},
                                   server_security(keys, curve_workers=str(keys.workers)))
        with pytest.raises(StartupError, match="cannot bind"):
            inproc.start(Router(settings))
    finally:
        taken.close(linger=0)
        blocker.term()


def test_demo_runs_its_embedded_server_plain_whatever_the_environment(keys: Keys) -> None:
    from charon import commands
    from charon.settings import load_settings

    settings = load_settings({"security": {"curve_secret_key": str(keys.secret("server")),
                                           "curve_clients": str(keys.clients)}})
    env = commands.child_environment(settings)
    assert not [k for k in env if k.startswith("CHARON_SECURITY__")]
