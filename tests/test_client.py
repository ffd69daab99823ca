"""The client's Lazy Pirate policy on a MockTransport: retries, timeouts, NO_WORKERS pauses, reply checks."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from charon.client import Client
from charon.engine.base import DetectorInfo
from charon.errors import ClientError, RequestFailed, ServerUnavailable
from charon.protocol import tokens, v1
from charon.source import isotropic_point
from charon.transport import MockTransport


def client(transport: MockTransport, retries: int = 3, sleeps: list[float] | None = None) -> Client:
    return Client("inproc://nowhere", timeout_s=2.5, retries=retries, transport=transport,
                  sleep=(sleeps.append if sleeps is not None else lambda _s: None))


def test_a_silent_server_gets_retries_plus_one_tries_each_on_a_fresh_socket() -> None:
    transport = MockTransport(lambda request: None)
    with pytest.raises(ServerUnavailable, match=r"no reply within 2.5 s after 4 tries"):
        client(transport).ping()
    assert transport.sent == [[tokens.PING]] * 4
    assert transport.waits == [2.5] * 4
    assert transport.resets == 4  # each try's socket abandoned: no late reply answers a resend


def test_a_late_server_answers_a_resend() -> None:
    answers = iter([None, None, [tokens.ACK]])
    transport = MockTransport(lambda request: next(answers))
    c = client(transport)
    assert c.ping() >= 0.0
    assert len(transport.sent) == 3
    assert transport.resets == 2


def test_no_workers_is_retried_after_growing_pauses_then_given_up() -> None:
    transport = MockTransport(lambda request: [tokens.NO_WORKERS])
    sleeps: list[float] = []
    with pytest.raises(ServerUnavailable, match="NO_WORKERS after 4 tries"):
        client(transport, sleeps=sleeps).run_end()
    assert sleeps == [0.1, 0.2, 0.4]  # none after the last try
    assert transport.resets == 0  # a reply arrived: the socket can send again


def test_no_workers_then_a_reply() -> None:
    answers = iter([[tokens.NO_WORKERS], [tokens.ACK]])
    sleeps: list[float] = []
    transport = MockTransport(lambda request: next(answers))
    client(transport, sleeps=sleeps).run_begin("run.root")
    assert transport.sent == [[tokens.RUN_BEGIN, b"run.root"]] * 2
    assert sleeps == [0.1]


def test_a_failed_event_is_not_resent() -> None:
    photons = isotropic_point(5, 10, (0.0, 0.0, 0.0), 420.0)
    transport = MockTransport(lambda request: v1.sim_failed(5))  # type: ignore[arg-type, return-value]
    with pytest.raises(RequestFailed, match="expected SIM_COMPLETE for event 5") as info:
        client(transport).simulate(photons)
    assert info.value.header == tokens.SIM_FAILED
    assert isinstance(info.value, ClientError)
    assert len(transport.sent) == 1


def test_simulate_sends_the_v1_request_and_returns_the_hits() -> None:
    photons = isotropic_point(7, 3, (0.0, 0.0, 0.0), 420.0)

    def echo(request: list[bytes]) -> list[bytes]:
        assert request == [bytes(v1.as_view(f)) for f in v1.photondata_request(7, photons.frames())]
        assert request[1] == struct.pack("<II", 7, 3)
        channel = np.arange(3, dtype="<u4").tobytes()
        return [tokens.SIM_COMPLETE, request[1][:4], channel, *request[5:13], request[13]]

    hits = client(MockTransport(echo)).simulate(photons)
    assert hits.channel.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(hits.time, photons.time)


def test_a_reply_for_another_event_is_refused() -> None:
    photons = isotropic_point(8, 1, (0.0, 0.0, 0.0), 420.0)
    transport = MockTransport(lambda request: v1.empty_sim_complete(9))  # type: ignore[arg-type, return-value]
    with pytest.raises(RequestFailed, match="echoes 09000000 for event 8"):
        client(transport).simulate(photons)


def test_detector_info_is_checked_and_decoded() -> None:
    info = DetectorInfo(np.array([1.0, 2.0], "<f4"), np.zeros(2, "<f4"), np.zeros(2, "<f4"), np.array([3, 4], "<i4"))
    transport = MockTransport(lambda request: v1.detector_info(*info.frames()))  # type: ignore[arg-type, return-value]
    got = client(transport).detector_info()
    assert got.x.tolist() == [1.0, 2.0]
    assert got.channel_type.tolist() == [3, 4]
    bad = MockTransport(lambda request: [tokens.DETECTOR_INFO, b"\0" * 4, b"", b"", b""])
    with pytest.raises(RequestFailed, match="differ in length"):
        client(bad).detector_info()


def test_close_closes_the_transport_and_a_mock_refuses_out_of_order_use() -> None:
    transport = MockTransport(lambda request: None)
    with client(transport):
        pass
    assert transport.closed
    transport.send([tokens.PING])
    with pytest.raises(RuntimeError, match="already waiting"):
        transport.send([tokens.PING])
