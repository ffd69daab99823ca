"""What a worker's reply must be before the router forwards it to a client (sans-IO, no numpy).

A worker is a peer on the network, not part of the router: a buggy or hostile one could send hit
frames of unequal length or channel ids beyond the detector, which the ratpac-two client reads
without bounds checks. :func:`reply_problem` says what is wrong with a reply (None when it may be
forwarded); the router then treats the worker as failed (:mod:`charon.router.state`). The rules
are the client's own (``protocol.v1.check_sim_complete``) made exact: the frame count a charon
worker sends, the 4-byte event-id echo, ten hit frames of one length, every channel below the
pool detector's PMT count. The other answers a working worker may give pass when well formed:
SIM_FAILED and ChAR0N's SIM_COMPLETE_ASYNC (two frames, the event id), UNKNOWN_REQUEST (one).
A v2 job is answered by a JOB_DONE naming exactly the job's events in order, each OK hits frame of
the size its count says, every channel below P.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from charon.errors import CharonError, InvalidReply
from charon.protocol import tokens, v1, v2
from charon.protocol.v1 import Frame, as_view

_U32 = struct.Struct("<I")


def reply_problem(kind: str, event_id: int | None, payload: Sequence[Frame], n_channels: int | None,
                  v2_events: Sequence[v2.Event] = ()) -> str | None:
    """Why ``payload`` is no valid answer to a ``kind`` job for ``event_id``; None when it is.

    ``n_channels`` is the pool's PMT count (P), None while no worker has told the router its
    detector (a pool of ChAR0N workers only): then channel ids cannot be checked. ``v2_events``
    are the events of a v2 job (kind ``simulate_v2``).
    """
    if not payload:
        return "an empty reply"
    if kind == "simulate_v2":
        return _job_done_problem(payload, v2_events, n_channels)
    header = v1.header_of(payload)
    if header == tokens.UNKNOWN_REQUEST:
        # A worker that cannot answer this kind (a ChAR0N worker asked for DETECTOR_INFO): a
        # failure of the request, not of the worker; the router handles it as one.
        return None if len(payload) == 1 else f"UNKNOWN_REQUEST has {len(payload)} frames, needs 1"
    if kind == "photondata":
        assert event_id is not None
        if header == tokens.SIM_COMPLETE:
            return _sim_complete_problem(payload, event_id, n_channels)
        if header in (tokens.SIM_FAILED, tokens.SIM_COMPLETE_ASYNC):  # ChAR0N's async mode
            if len(payload) != 2:
                return f"{header.decode()} has {len(payload)} frames, needs 2"
            return _echo_problem(payload[1], event_id)
        return f"{_shown(header)} does not answer PHOTONDATA"
    if kind == "detector_info":
        if header != tokens.DETECTOR_INFO:
            return f"{_shown(header)} does not answer DETECTOR_INFO"
        if len(payload) != tokens.DETECTOR_INFO_FRAMES:
            return f"DETECTOR_INFO has {len(payload)} frames, needs {tokens.DETECTOR_INFO_FRAMES}"
        try:
            v1.check_detector_info(payload)
        except InvalidReply as exc:
            return str(exc)
        return None
    return f"no reply is expected to a {kind} job"


def _sim_complete_problem(payload: Sequence[Frame], event_id: int, n_channels: int | None) -> str | None:
    if len(payload) != tokens.SIM_COMPLETE_FRAMES:
        return f"SIM_COMPLETE has {len(payload)} frames, needs {tokens.SIM_COMPLETE_FRAMES}"
    echo = _echo_problem(payload[1], event_id)
    if echo is not None:
        return echo
    lengths = [len(as_view(f)) for f in payload[2:]]
    if lengths[0] % 4 or any(n != lengths[0] for n in lengths):
        return f"SIM_COMPLETE hit frames differ in length or are not 4-byte arrays: {lengths}"
    if n_channels is not None and lengths[0]:
        highest = max(as_view(payload[2]).cast("I")) if _LITTLE else _highest_swapped(payload[2])
        if highest >= n_channels:
            return f"SIM_COMPLETE channel {highest} >= the detector's {n_channels} channels"
    return None


def _job_done_problem(payload: Sequence[Frame], events: Sequence[v2.Event], n_channels: int | None) -> str | None:
    try:
        done = v2.decode_job_done(payload)
    except CharonError as exc:
        return f"not a JOB_DONE: {exc}"
    got = [(o.event.tag, o.event.event_id) for o in done.outcomes]
    want = [(e.tag, e.event_id & 0xFFFFFFFF) for e in events]
    if got != want:
        return f"JOB_DONE answers events {got[:4]}..., the job held {want[:4]}..."
    for o in done.outcomes:
        if o.code is v2.ErrorCode.OK and n_channels is not None and o.n_hits:
            channels = as_view(o.hits)[: 4 * o.n_hits]
            highest = max(channels.cast("I")) if _LITTLE else _highest_swapped(channels)
            if highest >= n_channels:
                return f"JOB_DONE channel {highest} >= the detector's {n_channels} channels"
    return None


def _echo_problem(frame: Frame, event_id: int) -> str | None:
    echo = as_view(frame)
    if len(echo) != 4:
        return f"event-id frame is {len(echo)} bytes, needs 4"
    got = _U32.unpack(echo)[0]
    if got != event_id & 0xFFFFFFFF:
        return f"reply for event {got}, the request was event {event_id}"
    return None


def _shown(header: bytes) -> str:
    return repr(header[:32])


_LITTLE = struct.pack("=I", 1) == struct.pack("<I", 1)


def _highest_swapped(frame: Frame) -> int:  # pragma: no cover - big-endian hosts only
    import array

    channels = array.array("I")
    channels.frombytes(as_view(frame))
    channels.byteswap()
    return max(channels)
