"""The sans-IO halves of CURVE authentication: the allow-list decision and which refusals are logged."""

from __future__ import annotations

import zmq

from charon.auth import AllowPolicy, RefusalLog, reason_of


def test_allow_policy_per_domain() -> None:
    policy = AllowPolicy()
    policy.add("clients", None)
    policy.add("workers", frozenset({b"W" * 40}))
    assert policy.allows("clients", b"anything")
    assert policy.allows("workers", b"W" * 40)
    assert not policy.allows("workers", b"X" * 40)
    assert not policy.allows("elsewhere", b"W" * 40)  # a domain nobody configured admits nobody


def test_a_refused_key_is_logged_once_and_memory_stays_bounded() -> None:
    log = RefusalLog(max_keys=3)
    assert log.key_refused("clients", b"a")
    assert not log.key_refused("clients", b"a")
    assert log.key_refused("workers", b"a")  # another socket: its own line
    for key in (b"b", b"c", b"d"):
        assert log.key_refused("clients", key)
    assert len(log._keys) == 3
    assert log.key_refused("clients", b"a")  # forgotten (least recently refused), logged again


def test_keyless_refusals_are_logged_once_a_minute_with_the_count() -> None:
    log = RefusalLog(interval_s=60.0)
    assert log.handshake_failed("clients", "no CURVE", 0.0) == 1
    assert [log.handshake_failed("clients", "no CURVE", t) for t in (0.1, 10.0, 59.9)] == [None, None, None]
    assert log.handshake_failed("clients", "another key", 1.0) == 1
    assert log.handshake_failed("clients", "no CURVE", 60.0) == 4  # three silent ones and this one
    assert log.handshake_failed("clients", "no CURVE", 61.0) is None


def test_reasons_read_as_words() -> None:
    assert "without CURVE" in reason_of(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                        zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    assert "another server public key" in reason_of(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                                    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
    assert "0x10000013" in reason_of(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, 0x10000013)
    assert "400" in reason_of(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400)
    assert "Broken pipe" in reason_of(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32)
