"""The Python FlukaIO server/client API over real loopback sockets: byte-exact against the captured
C library sessions, buffering and flush rules, handshake failures, timeouts, malformed input."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from charon.flukaio import codec
from charon.flukaio.client import connect
from charon.flukaio.codec import (
    DbleVar,
    End,
    Eob,
    FlukaIOProtocolError,
    HandshakeError,
    Hsk,
    IntVar,
    Ipt,
    Layout,
    Particle,
)
from charon.flukaio.connection import BufferFull, ConnectionClosed, FlukaIOTimeout
from charon.flukaio.server import Server
from charon.flukaio.vectors import load_stream, load_writes

VECTORS = Path(__file__).resolve().parents[1] / "proto-spec" / "vectors" / "flukaio"
SESSIONS = [
    ("legacy_c_3x2.c2s.hex", "legacy_c_3x2.s2c.hex", Layout.LEGACY),
    ("legacy_fortran_3x2.c2s.hex", "legacy_c_3x2.s2c.hex", Layout.LEGACY),
    ("current_c_3x2.c2s.hex", "current_c_3x2.s2c.hex", Layout.CURRENT),
]
SAMPLE = {"x": -0.6319439221, "y": 1.147679085, "z": 1.0, "tx": -3.856529999e-5, "ty": -2.004572999e-6,
          "tz": 5.004483739e-6, "m": 450.0, "pc": 4520.0, "t": 0.005, "weight": 1.0}


def recv_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@contextlib.contextmanager
def serving(handler: Callable[[Server], None], **kw: object) -> Iterator[int]:
    """A Server on 127.0.0.1:0 with ``handler`` running on a thread; yields the port."""
    server = Server(host="127.0.0.1", **kw)  # type: ignore[arg-type]
    port = server.start(0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            handler(server)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        thread.join(10)
        server.shutdown()
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def sample_server(server: Server) -> None:
    """The C sample server's logic on the Python API: echo particles, EOB for EOB, END for END."""
    with server.accept(timeout=10) as conn:
        conn.set_read_timeout(10)
        while True:
            message = conn.wait_message()
            if isinstance(message, Particle):
                conn.send_particle(message)
            elif isinstance(message, Eob):
                conn.send_eob()
            elif isinstance(message, End):
                conn.send_eoc()
                return


@pytest.mark.parametrize(("client_file", "server_file", "layout"), SESSIONS)
def test_python_server_answers_captured_sessions_byte_exactly(client_file: str, server_file: str,
                                                              layout: Layout) -> None:
    with serving(sample_server) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        for write in load_writes(VECTORS / client_file):
            sock.sendall(write)
        reply = recv_all(sock)
    assert reply == load_stream(VECTORS / server_file)


@pytest.mark.parametrize(("client_file", "server_file", "layout"), SESSIONS)
def test_python_client_sends_captured_sessions_byte_exactly(client_file: str, server_file: str,
                                                            layout: Layout) -> None:
    received = bytearray()
    answers = load_writes(VECTORS / server_file)  # the captured server writes: HSK, turn 1, turn 2, END

    def fake_c_server(server: Server) -> None:
        assert server._sock is not None
        server._sock.settimeout(10)
        peer, _ = server._sock.accept()
        decoder = codec.StreamDecoder()
        with peer:
            peer.settimeout(10)
            while answers:
                chunk = peer.recv(65536)
                assert chunk, "client closed early"
                received.extend(chunk)
                for message in decoder.feed(chunk):
                    if isinstance(message, Hsk | Eob | End):
                        peer.sendall(answers.pop(0))

    with serving(fake_c_server) as port:
        conn = connect("127.0.0.1", port, layout=layout, read_timeout=10)
        with conn:
            if "fortran" in client_file:
                conn.send_npart(56000)
                conn.send_brhono(1.2345)
            for turn in (1, 2):
                conn.send_ipt(turn, 0)
                for i in (1, 2, 3):
                    extra = {"aa": 1, "zz": 1} if layout is Layout.LEGACY else {"pdgid": 2212, "q": 1}
                    conn.send_particle(Particle(id=i, gen=1, **SAMPLE, **extra))  # type: ignore[arg-type]
                assert conn.pending_output > 0  # nothing leaves before EOB
                conn.send_eob()
                echoed = []
                while not isinstance(message := conn.wait_message(), Eob):
                    echoed.append(message)
                assert [p.id for p in echoed if isinstance(p, Particle)] == [1, 2, 3]
            conn.send_eoc()
            assert conn.wait_message() == End()
    assert bytes(received) == load_stream(VECTORS / client_file)


@contextlib.contextmanager
def raw_pair(**kw: object) -> Iterator[tuple[socket.socket, Server]]:
    """A listening Server and a raw client socket connected to it (accept not yet called)."""
    server = Server(host="127.0.0.1", **kw)  # type: ignore[arg-type]
    try:
        port = server.start(0)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            yield sock, server
    finally:
        server.shutdown()


@pytest.mark.parametrize(("layout", "per_write"), [(Layout.LEGACY, 98), (Layout.CURRENT, 77)])
def test_particles_flush_at_90_percent_of_10_kib(layout: Layout, per_write: int) -> None:
    with raw_pair(layout=layout) as (sock, server):
        sock.sendall(codec.encode(Hsk()))
        with server.accept(timeout=5) as conn:
            assert recv_exact(sock, 11) == codec.encode(Hsk())
            for i in range(per_write - 1):
                conn.send_particle(Particle(id=i))
            assert conn.pending_output == (per_write - 1) * layout.value < codec.FLUSH_THRESHOLD
            assert not readable(sock)
            conn.send_particle(Particle(id=per_write))
            assert conn.pending_output == 0
            assert len(recv_exact(sock, per_write * layout.value)) == per_write * layout.value
            conn.send_ipt(1, 2)
            assert conn.pending_output == 9  # IPT never flushes
            assert not readable(sock)
            for send in (conn.send_eob, conn.send_eoc, lambda: conn.send_npart(3),
                         lambda: conn.send_double(0, 1.5), lambda: conn.send_int(0, -1), conn.send_hsk):
                send()
                assert conn.pending_output == 0
            expected = (codec.encode(Ipt(1, 2)) + codec.EOB_BYTES + codec.END_BYTES + codec.encode(IntVar(0, 3))
                        + codec.encode(DbleVar(0, 1.5)) + codec.encode(IntVar(0, -1)) + codec.encode(Hsk()))
            assert recv_exact(sock, len(expected)) == expected


def recv_exact(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"closed after {len(out)} of {n} bytes"
        out += chunk
    return out


def readable(sock: socket.socket, wait: float = 0.05) -> bool:
    sock.settimeout(wait)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except TimeoutError:
        return False


def test_output_buffer_is_bounded() -> None:
    with raw_pair() as (sock, server):
        sock.sendall(codec.encode(Hsk()))
        with server.accept(timeout=5) as conn:
            for _ in range(codec.BUFFER_LEN // 9):
                conn.send_ipt(1, 1)
            with pytest.raises(BufferFull):
                conn.send_ipt(1, 1)


@pytest.mark.parametrize(("first", "reason"), [
    (codec.encode(Hsk(4, 0, 42)), "version"),
    (codec.encode(Hsk(2, 9, 42)), "version"),
    (codec.EOB_BYTES, "handshake"),
    (codec.encode(Particle(), Layout.LEGACY), "handshake"),
    (b"\x03\x00\x09", "unknown_type"),
    (b"\x00\x00\x06", "zero_size"),
])
def test_server_refuses_bad_handshake_without_reply(first: bytes, reason: str) -> None:
    with raw_pair(read_timeout=5) as (sock, server):
        sock.sendall(first)
        with pytest.raises(HandshakeError) as info:
            server.accept(timeout=5)
        assert info.value.reason == reason
        assert recv_all(sock) == b""  # closed, no reply


def test_server_echoes_any_key_and_ignores_minor() -> None:
    for hsk, reply in [("0b000603000100efbeadde", "0b000603000100efbeadde"),
                       ("0b0006030063002a000000", "0b0006030001002a000000")]:
        with raw_pair() as (sock, server):
            sock.sendall(bytes.fromhex(hsk))
            with server.accept(timeout=5) as conn:
                assert recv_exact(sock, 11) == bytes.fromhex(reply)
                assert conn.peer_key == codec.decode(bytes.fromhex(hsk)).key  # type: ignore[union-attr]


def test_server_handshake_timeout_and_accept_timeout() -> None:
    with raw_pair(read_timeout=0.2) as (sock, server):
        sock.sendall(codec.encode(Hsk())[:5])  # a peer that stops mid-message
        start = time.monotonic()
        with pytest.raises(FlukaIOTimeout):
            server.accept(timeout=5)
        assert time.monotonic() - start < 3
        assert recv_all(sock) == b""
    with Server(host="127.0.0.1") as server:
        server.start(0)
        with pytest.raises(FlukaIOTimeout):
            server.accept(timeout=0.1)


def test_server_accepts_the_next_client_after_a_refused_one() -> None:
    def handler(server: Server) -> None:
        with pytest.raises(HandshakeError):
            server.accept(timeout=5)
        with server.accept(timeout=5) as conn:
            conn.send_eob()

    with serving(handler) as port:
        with socket.create_connection(("127.0.0.1", port)) as bad:
            bad.sendall(codec.encode(Hsk(4, 1, 1)))
            assert recv_all(bad) == b""
        with connect("127.0.0.1", port, read_timeout=5) as conn:
            assert conn.wait_message() == Eob()


@pytest.mark.parametrize(("reply", "reason"), [
    (codec.encode(Hsk(2, 1, codec.DEFAULT_KEY)), "version"),
    (codec.encode(Hsk(3, 1, codec.DEFAULT_KEY + 1)), "key"),
    (codec.EOB_BYTES, "handshake"),
    (b"\x03\x00\x09", "unknown_type"),
])
def test_client_refuses_bad_server_reply(reply: bytes, reason: str) -> None:
    def bad_server(server: Server) -> None:
        assert server._sock is not None
        server._sock.settimeout(5)
        peer, _ = server._sock.accept()
        with peer:
            assert recv_exact(peer, 11) == codec.encode(Hsk())
            peer.sendall(reply)
            recv_all(peer)

    with serving(bad_server) as port, pytest.raises(HandshakeError) as info:
        connect("127.0.0.1", port, read_timeout=5)
    assert info.value.reason == reason


def test_client_accepts_other_minor_and_custom_key() -> None:
    def server_minor7(server: Server) -> None:
        assert server._sock is not None
        server._sock.settimeout(5)
        peer, _ = server._sock.accept()
        with peer:
            hsk = codec.decode(recv_exact(peer, 11))
            assert isinstance(hsk, Hsk)
            peer.sendall(codec.encode(Hsk(3, 7, hsk.key)))
            recv_all(peer)

    with serving(server_minor7) as port, connect("127.0.0.1", port, key=42, read_timeout=5) as conn:
        assert conn.peer_key == 42


def test_client_gets_connection_errors() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        connect("127.0.0.1", port, read_timeout=1)

    def silent(server: Server) -> None:
        assert server._sock is not None
        server._sock.settimeout(5)
        peer, _ = server._sock.accept()
        with peer:
            recv_all(peer)

    with serving(silent) as port, pytest.raises(FlukaIOTimeout):
        connect("127.0.0.1", port, read_timeout=0.2)


def test_receive_is_non_blocking_and_wait_reassembles_fragments() -> None:
    with raw_pair() as (sock, server):
        sock.sendall(codec.encode(Hsk()))
        with server.accept(timeout=5) as conn:
            assert conn.receive_message() is None
            message = codec.encode(Particle(id=5, pdgid=22), Layout.CURRENT) + codec.EOB_BYTES

            def dribble() -> None:
                for i in range(len(message)):
                    sock.sendall(message[i:i + 1])
                    time.sleep(0.002)

            writer = threading.Thread(target=dribble)
            writer.start()
            try:
                assert conn.wait_message(timeout=5) == Particle(id=5, pdgid=22)
                assert conn.wait_message(timeout=5) == Eob()
            finally:
                writer.join()
            assert conn.layout is Layout.CURRENT
            with pytest.raises(FlukaIOTimeout):
                conn.wait_message(timeout=0.05)
            sock.sendall(codec.END_BYTES)
            deadline = time.monotonic() + 5
            while (got := conn.receive_message()) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert got == End()


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x00\x00\x02", "zero_size"),
    (b"\x02\x00\x02", "short_size"),
    (b"\x20\x4e\x01", "oversize"),
    (b"\x03\x00\x09\x03\x00\x02", "unknown_type"),
    (b"\x17\x00\x01", "particle_size"),
    (b"\xc8\x00\x01", "particle_size"),
    (b"\x00\x03\x02", "size_mismatch"),
])
def test_malformed_input_raises_at_once(data: bytes, reason: str) -> None:
    with raw_pair() as (sock, server):
        sock.sendall(codec.encode(Hsk()))
        with server.accept(timeout=5) as conn:
            sock.sendall(data)
            start = time.monotonic()
            with pytest.raises(FlukaIOProtocolError) as info:
                conn.wait_message(timeout=5)
            assert info.value.reason == reason
            assert time.monotonic() - start < 2


def test_peer_close_and_close_mid_message() -> None:
    with raw_pair() as (sock, server):
        sock.sendall(codec.encode(Hsk()))
        with server.accept(timeout=5) as conn:
            sock.sendall(codec.EOB_BYTES[:2])
            sock.shutdown(socket.SHUT_WR)
            with pytest.raises(FlukaIOProtocolError) as info:
                conn.wait_message(timeout=5)
            assert info.value.reason == "truncated"
    with raw_pair() as (sock, server):
        sock.sendall(codec.encode(Hsk()))
        with server.accept(timeout=5) as conn:
            sock.shutdown(socket.SHUT_WR)
            with pytest.raises(ConnectionClosed):
                conn.wait_message(timeout=5)
        with pytest.raises(ConnectionClosed):
            conn.send_eob()


def test_server_start_rules() -> None:
    with Server(host="127.0.0.1") as server:
        port = server.start(0)
        assert port == server.port > 0
        with pytest.raises(codec.FlukaIOError):
            server.start(0)
        with Server(host="127.0.0.1") as other, pytest.raises(OSError):
            other.start(port)
