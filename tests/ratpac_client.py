"""A model of ratpac-two's Chroma/ChAR0N client (PR #127, ``src/core/src/Chroma.cc``) in Python.

Tests use it to show that charon serves the deployed C++ client: it opens a fresh REQ socket for
every request (LINGER 0), polls with a timeout, resends on a new socket after a timeout, and
accepts or rejects replies with the same rules, flaws included:

* an invalid reply is logged and the *same* socket is polled again, burning a full timeout;
* the retry counter is an unsigned ``size_t``: an invalid reply on the poll that brings it to 0
  makes it wrap, and the client never gives up (here: :class:`RetryTrap` after ``max_polls``);
* after accepting ``SIM_COMPLETE`` the client indexes the nine other hit arrays and its PMT map by
  channel id without bounds checks (here: :class:`ClientCrash`);
* ``DETECTOR_INFO`` positions are read as float32 with count = bytes / 4 and must match the RAT
  PMT count (else ``Log::Die``, here :class:`ClientDied`), then matched by position.

It is written from the client's behaviour, not from charon's codec, so it can disagree with it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import zmq

log = logging.getLogger(__name__)

SIZE_MAX = 2**64 - 1
PEDATA_NPARTS = 11
PMT_MATCH_MM = 1e-2

PING = b"PING"
RUN_BEGIN = b"RUN_BEGIN"
RUN_END = b"RUN_END"
DETECTOR_INFO = b"DETECTOR_INFO"
PHOTONDATA = b"PHOTONDATA"
ACK = b"ACK"
SIM_COMPLETE = b"SIM_COMPLETE"
SIM_COMPLETE_ASYNC = b"SIM_COMPLETE_ASYNC"

BULK_REEMIT = 0x200
SURFACE_REEMIT = 0x80
CHERENKOV = 0x400
SCINTILLATION = 0x800

T = TypeVar("T")


class ClientDied(Exception):
    """The real client would call ``Log::Die`` and abort the run."""


class ClientCrash(Exception):
    """The real client would read out of bounds (std::out_of_range or undefined behaviour)."""


class RetryTrap(Exception):
    """The real client would keep resending forever (retry counter wrapped around)."""


class Rejected(Exception):
    """A reply the client's validator rejects (it logs it and polls again)."""


class PhotonSource(Protocol):
    """Anything with the twelve per-photon arrays of a Geant4 event (e.g. charon's Photons)."""

    event_id: int
    x: npt.NDArray[Any]
    y: npt.NDArray[Any]
    z: npt.NDArray[Any]
    dx: npt.NDArray[Any]
    dy: npt.NDArray[Any]
    dz: npt.NDArray[Any]
    polx: npt.NDArray[Any]
    poly: npt.NDArray[Any]
    polz: npt.NDArray[Any]
    wavelength: npt.NDArray[Any]
    time: npt.NDArray[Any]
    flags: npt.NDArray[Any]


@dataclass
class Exchange:
    """What one ``do_send_and_recv`` call did on the wire."""

    header: bytes
    sends: int = 0
    polls: int = 0
    replies: list[list[bytes]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    ok: bool = False


@dataclass
class EventPEs:
    """The photoelectrons the client writes into the RAT DS for one event."""

    event_id: int
    num_pe: int
    channel: npt.NDArray[np.uint32]
    rat_pmt: npt.NDArray[np.int64]
    arrays: dict[str, npt.NDArray[Any]]
    process: list[str]


def creator_process(flags: int) -> str:
    """RAT creator-process name the client derives from a hit's Chroma flags."""
    if flags & (BULK_REEMIT | SURFACE_REEMIT):
        return "Reemission"
    if flags & CHERENKOV:
        return "Cerenkov"
    if flags & SCINTILLATION:
        return "Scintillation"
    return "Unknown"


def _floats(frame: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(frame[: len(frame) // 4 * 4], dtype="<f4")


def _uints(frame: bytes) -> npt.NDArray[np.uint32]:
    return np.frombuffer(frame[: len(frame) // 4 * 4], dtype="<u4")


# ---- validators (``readmsg`` and friends), usable without sockets ---------------------------------


def validate_ack(reply: Sequence[bytes]) -> None:
    if reply[0] != ACK:
        raise Rejected(f"expected ACK, got {reply[0][:32]!r}")


def validate_detector_info(reply: Sequence[bytes]) -> tuple[npt.NDArray[np.float32], ...]:
    """Frame 0 == DETECTOR_INFO; x, y, z read as float32 (count = bytes/4); frame 4 read and dropped."""
    if reply[0] != DETECTOR_INFO:
        raise Rejected(f"expected DETECTOR_INFO, got {reply[0][:32]!r}")
    if len(reply) < 5:
        raise ClientCrash(f"DETECTOR_INFO with {len(reply)} frames: reads past the message")
    x, y, z = (_floats(f) for f in reply[1:4])
    np.frombuffer(reply[4][: len(reply[4]) // 4 * 4], dtype="<i4")  # read, then unused
    return x, y, z


def validate_photondata(reply: Sequence[bytes], event_id: int) -> list[bytes] | None:
    """``PEData::readmsg``: the hit frames of a valid SIM_COMPLETE, None for a valid async reply."""
    header = reply[0]
    echo = struct.pack("<I", event_id & 0xFFFFFFFF)
    if header == SIM_COMPLETE and len(reply) > PEDATA_NPARTS:
        if len(reply[1]) < 4:
            raise ClientCrash(f"event id frame of {len(reply[1])} bytes: memcpy reads past it")
        if reply[1][:4] != echo:
            raise Rejected(f"SIM_COMPLETE for event {reply[1][:4].hex()}, sent {echo.hex()}")
        return list(reply[2:12])
    if header == SIM_COMPLETE_ASYNC and len(reply) == 2:
        if len(reply[1]) < 4:
            raise ClientCrash(f"event id frame of {len(reply[1])} bytes: memcpy reads past it")
        if reply[1][:4] != echo:
            raise Rejected(f"SIM_COMPLETE_ASYNC for event {reply[1][:4].hex()}, sent {echo.hex()}")
        return None
    raise Rejected(f"invalid PHOTONDATA reply {header[:32]!r} with {len(reply)} frames")


def match_pmts(chroma: npt.NDArray[Any], rat: npt.NDArray[Any]) -> tuple[list[int], list[int]]:
    """``match_chroma_and_rat_pmts``: Chroma channel -> RAT PMT id, after mean-centring both sets.

    For each channel in order the first RAT PMT within 0.01 mm wins. An unmatched channel is only
    warned about and appends nothing, so every later channel maps to the wrong PMT (returned as
    the second list, the unmatched channel indices).
    """
    chroma = np.asarray(chroma, dtype=np.float64)
    rat = np.asarray(rat, dtype=np.float64)
    if len(chroma) != len(rat):
        raise ClientDied(f"PMT COUNT MISMATCH: Chroma {len(chroma)}, RAT {len(rat)}")
    if not len(chroma):
        return [], []
    offset = chroma.mean(axis=0) - rat.mean(axis=0)
    ids: list[int] = []
    unmatched: list[int] = []
    for channel, pos in enumerate(chroma - offset):
        close = np.flatnonzero(np.linalg.norm(rat - pos, axis=1) < PMT_MATCH_MM)
        if len(close):
            ids.append(int(close[0]))
        else:
            log.warning("Chroma channel %d matches no RAT PMT", channel)
            unmatched.append(channel)
    return ids, unmatched


def write_pes(hit_frames: Sequence[bytes] | None, event_id: int, rat_pmt_id: Sequence[int]) -> EventPEs:
    """``write_pes_to_ratds``: per hit, look up the PMT and read every hit array at that index."""
    names = ("dx", "dy", "dz", "polx", "poly", "polz", "wavelength", "time")
    if hit_frames is None:  # SIM_COMPLETE_ASYNC: hits come later from a file
        return EventPEs(event_id, 0, np.zeros(0, np.uint32), np.zeros(0, np.int64),
                        {n: np.zeros(0, np.float32) for n in names}, [])
    channel = _uints(hit_frames[0])
    arrays: dict[str, npt.NDArray[Any]] = {n: _floats(f) for n, f in zip(names, hit_frames[1:9], strict=True)}
    arrays["flags"] = _uints(hit_frames[9])
    rat = np.empty(len(channel), np.int64)
    process = []
    for i, ch in enumerate(channel):
        if ch >= len(rat_pmt_id):
            raise ClientCrash(f"hit {i}: channel {ch} outside the PMT map of {len(rat_pmt_id)}")
        rat[i] = rat_pmt_id[int(ch)]
        for name, values in arrays.items():
            if i >= len(values):
                raise ClientCrash(f"hit {i}: {name} holds only {len(values)} values (std::out_of_range)")
        process.append(creator_process(int(arrays["flags"][i])))
    return EventPEs(event_id, len(channel), channel, rat, arrays, process)


def photondata_frames(photons: PhotonSource) -> list[bytes]:
    """``PhotonData::send``: 14 frames, metadata {event id, count}, float/uint32 vectors."""
    floats = [np.ascontiguousarray(getattr(photons, n), dtype="<f4").tobytes()
              for n in ("x", "y", "z", "dx", "dy", "dz", "polx", "poly", "polz", "wavelength", "time")]
    n = len(floats[0]) // 4
    flags = np.ascontiguousarray(photons.flags, dtype="<u4").tobytes()
    return [PHOTONDATA, struct.pack("<II", photons.event_id & 0xFFFFFFFF, n), *floats, flags]


# ---- the client ----------------------------------------------------------------------------------


class RatpacClient:
    """One RAT run's worth of Chroma client: PING, RUN_BEGIN, DETECTOR_INFO, events, RUN_END.

    ``rat_pmt_positions`` is the client's own geometry (P x 3, mm); None takes the server's
    channel list as the geometry (identity map, count still checked against ``rat_pmt_count``).
    """

    def __init__(self, endpoint: str, context: zmq.Context[Any], *, retries: int = 3,
                 timeout_ms: int = 2500, max_polls: int = 32,
                 rat_pmt_positions: npt.NDArray[Any] | None = None,
                 rat_pmt_count: int | None = None) -> None:
        self.endpoint = endpoint
        self.context = context
        self.retries = retries
        self.timeout_ms = timeout_ms
        self.max_polls = max_polls
        self.rat_pmt_positions = rat_pmt_positions
        self.rat_pmt_count = rat_pmt_count
        self.exchanges: list[Exchange] = []
        self.warnings: list[str] = []
        self.rat_pmt_id: list[int] = []
        self.unmatched: list[int] = []
        self.chroma_positions: npt.NDArray[np.float32] | None = None

    def _socket(self) -> zmq.Socket[Any]:
        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    def do_send_and_recv(self, frames: Sequence[bytes], validate: Callable[[list[bytes]], T]
                         ) -> tuple[bool, T | None]:
        """Send, poll, validate, resend on timeout: ``Chroma::do_send_and_recv``."""
        ex = Exchange(frames[0])
        self.exchanges.append(ex)
        retries_left = self.retries
        sock = self._socket()
        try:
            sock.send_multipart(list(frames))
            ex.sends += 1
            while True:
                if ex.polls >= self.max_polls:
                    raise RetryTrap(f"{frames[0]!r}: still retrying after {ex.polls} polls "
                                    f"({ex.sends} sends; invalid replies: {ex.invalid[-3:]})")
                readable = sock.poll(self.timeout_ms, zmq.POLLIN)
                ex.polls += 1
                retries_left = (retries_left - 1) & SIZE_MAX
                if readable:
                    reply = sock.recv_multipart()
                    ex.replies.append(reply)
                    try:
                        result = validate(reply)
                    except Rejected as exc:
                        ex.invalid.append(str(exc))
                        self.warnings.append(f"invalid reply: {exc}")
                        continue
                    ex.ok = True
                    return True, result
                if retries_left == 0:
                    return False, None
                sock.close(linger=0)
                sock = self._socket()
                sock.send_multipart(list(frames))
                ex.sends += 1
        finally:
            sock.close(linger=0)

    # ---- the calls Gsim makes ----

    def ping(self) -> None:
        ok, _ = self.do_send_and_recv([PING], validate_ack)
        if not ok:
            raise ClientDied("no ACK to PING")

    def run_begin(self, filename: str = "output.root") -> bool:
        ok, _ = self.do_send_and_recv([RUN_BEGIN, filename.encode()], validate_ack)
        if not ok:
            self.warnings.append("RUN_BEGIN failed")
        return ok

    def detector_info(self) -> tuple[npt.NDArray[np.float32], ...]:
        ok, xyz = self.do_send_and_recv([DETECTOR_INFO], validate_detector_info)
        if not ok or xyz is None:
            raise ClientDied("no DETECTOR_INFO reply")
        x, y, z = xyz
        if not len(x) == len(y) == len(z):
            raise ClientCrash(f"position arrays of {len(x)}, {len(y)}, {len(z)} values")
        self.chroma_positions = np.stack([x, y, z], axis=1)
        rat = self.rat_pmt_positions
        if rat is None:
            if self.rat_pmt_count is not None and self.rat_pmt_count != len(x):
                raise ClientDied(f"PMT COUNT MISMATCH: Chroma {len(x)}, RAT {self.rat_pmt_count}")
            rat = self.chroma_positions
        self.rat_pmt_id, self.unmatched = match_pmts(self.chroma_positions, rat)
        return x, y, z

    def begin_of_run(self, filename: str = "output.root") -> None:
        """The ``Chroma`` constructor in ZMQ mode: PING, RUN_BEGIN, DETECTOR_INFO, PMT matching."""
        self.ping()
        self.run_begin(filename)
        self.detector_info()

    def event(self, photons: PhotonSource) -> EventPEs:
        """``eventAction``: one PHOTONDATA round trip; on final failure the event gets 0 PEs."""
        event_id = int(photons.event_id)
        ok, hit_frames = self.do_send_and_recv(photondata_frames(photons),
                                               lambda reply: validate_photondata(reply, event_id))
        if not ok:
            self.warnings.append(f"event {event_id}: no valid reply, written with NumPE = 0")
            return write_pes(None, event_id, self.rat_pmt_id)
        return write_pes(hit_frames, event_id, self.rat_pmt_id)

    def run_end(self) -> bool:
        ok, _ = self.do_send_and_recv([RUN_END], validate_ack)
        if not ok:
            self.warnings.append("RUN_END failed")
        return ok


# ---- ROOTFILE replay (the async workflow's second pass) --------------------------------------------


def read_rootfile(path: Any, rat_pmt_positions: npt.NDArray[Any]) -> tuple[list[EventPEs], list[int]]:
    """``init_rootfile`` / ``eventAction_rootfile``: match ``detinfo``'s PMTs to RAT's, then read
    ``output`` entry by entry, in index order, into the PEs of the i-th event of the RAT file.

    As the client, it reads ``pmt_x/y/z`` only, takes ``nchannel_id`` as the hit count, and never
    compares ``event_id`` with the event it fills (the entry order is the contract). Returns the
    events and the entries' event ids (for the test to check what the client does not).
    """
    import uproot  # only the replay needs it

    with uproot.open(path) as f:
        det = f["detinfo"].arrays(["pmt_x", "pmt_y", "pmt_z"], library="np")
        chroma = np.stack([det["pmt_x"], det["pmt_y"], det["pmt_z"]], axis=1)
        rat_pmt_id, unmatched = match_pmts(chroma, rat_pmt_positions)
        if unmatched:
            log.warning("ROOTFILE: %d Chroma channels match no RAT PMT", len(unmatched))
        names = ("channel_id", "u", "v", "w", "pol_x", "pol_y", "pol_z", "wavelength", "time", "flag")
        out = f["output"].arrays(["event_id", "nchannel_id", *names], library="np")
    events: list[EventPEs] = []
    for i in range(len(out["event_id"])):
        n = int(out["nchannel_id"][i])
        frames = [np.asarray(out[name][i], dtype="<u4" if name in ("channel_id", "flag") else "<f4")[:n].tobytes()
                  for name in names]
        events.append(write_pes(frames, i, rat_pmt_id))
    return events, [int(e) for e in out["event_id"]]
