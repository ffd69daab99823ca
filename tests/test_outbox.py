"""The outbox between the simulation thread and the socket thread: no lost wake-up, no lost reply."""

from __future__ import annotations

import select
import threading

from charon.worker.outbox import Outbox, Reply


def _woken(outbox: Outbox, timeout_s: float) -> bool:
    return bool(select.select([outbox.fd], [], [], timeout_s)[0])


def test_a_put_wakes_the_reader_and_take_returns_replies_in_order() -> None:
    outbox = Outbox()
    try:
        assert not _woken(outbox, 0.0)
        outbox.put(Reply(1, 7, [b"a"]))
        outbox.put(Reply(1, 8, [b"b"]))
        assert _woken(outbox, 1.0)
        assert [r.token for r in outbox.take()] == [7, 8]
        assert not _woken(outbox, 0.0)  # the wake-up bytes were drained with the replies
        assert outbox.take() == []
    finally:
        outbox.close()


def test_more_puts_than_the_pipe_holds_neither_block_nor_lose_replies() -> None:
    outbox = Outbox()
    try:
        n = 200_000  # well over a pipe's 64 KiB of wake-up bytes
        for i in range(n):
            outbox.put(Reply(0, i, []))
        assert _woken(outbox, 1.0)
        assert [r.token for r in outbox.take()] == list(range(n))
    finally:
        outbox.close()


def test_concurrent_writers_every_reply_arrives_once() -> None:
    outbox = Outbox()
    got: list[int] = []
    try:
        def write(k: int) -> None:
            for i in range(5_000):
                outbox.put(Reply(0, k * 10_000 + i, []))

        writers = [threading.Thread(target=write, args=(k,)) for k in range(4)]
        for w in writers:
            w.start()
        while len(got) < 20_000:
            assert _woken(outbox, 5.0)
            got.extend(r.token for r in outbox.take())
        for w in writers:
            w.join()
        got.extend(r.token for r in outbox.take())
    finally:
        outbox.close()
    assert sorted(got) == sorted(k * 10_000 + i for k in range(4) for i in range(5_000))


def test_a_put_after_close_is_dropped_quietly() -> None:
    outbox = Outbox()
    outbox.close()
    outbox.put(Reply(0, 1, []))  # the simulation outlived its driver: nothing to wake, no error
    outbox.close()
