"""The interface every backend implements, and the photon/hit containers it speaks.

``Photons`` and ``Hits`` are structure-of-arrays views whose fields are exactly the v1 frames, so
converting from a received PHOTONDATA and to a SIM_COMPLETE reply copies nothing: frames become
read-only numpy views (``np.frombuffer``) and hit arrays go out through the buffer protocol.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from charon.protocol import tokens
from charon.protocol.v1 import Frame, PhotonData, as_view

F32 = npt.NDArray[np.float32]
U32 = npt.NDArray[np.uint32]
I32 = npt.NDArray[np.int32]
_F4 = np.dtype("<f4")
_U4 = np.dtype("<u4")
_I4 = np.dtype("<i4")


@dataclass(frozen=True, slots=True)
class Photons:
    """One event's photons: mm, unit vectors, nm, ns, Chroma flag bits (v1 PHOTONDATA order).

    ``stream`` is mixed into the key of the event's random streams beside the seed, the event id
    and the photons' digest (a client's per-run seed, for a protocol that carries one; 0 for v1).
    """

    event_id: int
    x: F32
    y: F32
    z: F32
    dx: F32
    dy: F32
    dz: F32
    polx: F32
    poly: F32
    polz: F32
    wavelength: F32
    time: F32
    flags: U32
    stream: int = 0

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def from_request(cls, request: PhotonData) -> Photons:
        """Zero-copy read-only views of a decoded PHOTONDATA's frames."""
        arrays = [
            np.frombuffer(view, dtype=_U4 if name == "flags" else _F4)
            for name, view in zip(tokens.PHOTON_FIELDS, request.arrays, strict=True)
        ]
        return cls(request.event_id, *arrays)  # type: ignore[arg-type]

    @classmethod
    def from_arrays_view(cls, event_id: int, arrays: Sequence[Frame], stream: int = 0) -> Photons:
        """Zero-copy read-only views of twelve array frames in PHOTONDATA order (a v2 job's slices)."""
        cols = [np.frombuffer(as_view(f), dtype=_U4 if name == "flags" else _F4)
                for name, f in zip(tokens.PHOTON_FIELDS, arrays, strict=True)]
        return cls(event_id, *cols, stream=stream)  # type: ignore[arg-type, misc]

    @classmethod
    def from_arrays(cls, event_id: int, pos: npt.ArrayLike, dir: npt.ArrayLike, pol: npt.ArrayLike,
                    wavelength: npt.ArrayLike, time: npt.ArrayLike | None = None,
                    flags: npt.ArrayLike | None = None) -> Photons:
        """Build from (n, 3) position/direction/polarisation arrays (copies into float32 columns)."""
        p = np.asarray(pos, dtype=np.float32).reshape(-1, 3)
        d = np.asarray(dir, dtype=np.float32).reshape(-1, 3)
        q = np.asarray(pol, dtype=np.float32).reshape(-1, 3)
        n = p.shape[0]
        wl = np.broadcast_to(np.asarray(wavelength, dtype=np.float32), (n,))
        t = np.zeros(n, np.float32) if time is None else np.broadcast_to(np.asarray(time, np.float32), (n,))
        fl = np.zeros(n, np.uint32) if flags is None else np.broadcast_to(np.asarray(flags, np.uint32), (n,))
        cols = [np.ascontiguousarray(a) for a in (*p.T, *d.T, *q.T, wl, t)]
        return cls(event_id, *cols, np.ascontiguousarray(fl))  # type: ignore[call-arg, arg-type]

    def frames(self) -> list[Frame]:
        """The 12 array frames of a PHOTONDATA request (no copies for contiguous little-endian arrays)."""
        return [frame_of(getattr(self, name)) for name in tokens.PHOTON_FIELDS]

    def metadata(self) -> bytes:
        return np.array([self.event_id, len(self)], dtype=_U4).tobytes()

    def columns(self) -> tuple[npt.NDArray[Any], ...]:
        """The twelve columns in PHOTONDATA order."""
        return tuple(getattr(self, name) for name in tokens.PHOTON_FIELDS)

    def digest(self) -> int:
        """The 64-bit digest of the photon data (and ``stream``) that keys this event's random streams."""
        from charon.engine.optics import mix64_int, photons_digest

        digest = photons_digest(self.columns())
        return mix64_int(digest ^ mix64_int(self.stream)) or 1 if self.stream else digest


@dataclass(frozen=True, slots=True)
class Hits:
    """One event's detected photons (v1 SIM_COMPLETE order); ``channel`` < number of PMTs.

    ``x, y, z`` (mm) are where each photon was detected, when the engine knows it (v1 replies do
    not carry them; a protocol that does can).
    """

    channel: U32
    dx: F32
    dy: F32
    dz: F32
    polx: F32
    poly: F32
    polz: F32
    wavelength: F32
    time: F32
    flags: U32
    x: F32 | None = None
    y: F32 | None = None
    z: F32 | None = None

    def __len__(self) -> int:
        return int(self.channel.shape[0])

    @property
    def has_positions(self) -> bool:
        return self.x is not None and self.y is not None and self.z is not None

    @classmethod
    def empty(cls) -> Hits:
        f = np.zeros(0, np.float32)
        u = np.zeros(0, np.uint32)
        return cls(u, f, f, f, f, f, f, f, f, u, f, f, f)

    @classmethod
    def from_frames(cls, frames: Sequence[Frame]) -> Hits:
        """Zero-copy views of the ten hit frames of a SIM_COMPLETE reply."""
        arrays = [
            np.frombuffer(as_view(f), dtype=_U4 if name in ("channel", "flags") else _F4)
            for name, f in zip(tokens.HIT_FIELDS, frames, strict=True)
        ]
        return cls(*arrays)  # type: ignore[arg-type]

    def frames(self) -> list[Frame]:
        """The 10 hit frames of a SIM_COMPLETE reply."""
        return [frame_of(getattr(self, name)) for name in tokens.HIT_FIELDS]

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_] | slice) -> Hits:
        taken: dict[str, Any] = {}
        for f in fields(self):
            a = getattr(self, f.name)
            taken[f.name] = None if a is None else a[index]
        return Hits(**taken)

    @classmethod
    def concatenate(cls, parts: Sequence[Hits]) -> Hits:
        """The hits of ``parts`` one after another (positions only when every part has them)."""
        if not parts:
            return cls.empty()
        with_positions = all(p.has_positions for p in parts)
        names = [f.name for f in fields(cls) if with_positions or f.name not in ("x", "y", "z")]
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in names})


@dataclass(frozen=True, slots=True)
class DetectorInfo:
    """PMT (channel) positions in mm and channel types, indexed by channel id: the DETECTOR_INFO body."""

    x: F32
    y: F32
    z: F32
    channel_type: I32

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def frames(self) -> list[Frame]:
        return [frame_of(self.x), frame_of(self.y), frame_of(self.z), frame_of(self.channel_type)]

    @classmethod
    def from_frames(cls, frames: Sequence[Frame]) -> DetectorInfo:
        x, y, z, t = (as_view(f) for f in frames[:4])
        return cls(np.frombuffer(x, _F4), np.frombuffer(y, _F4), np.frombuffer(z, _F4),
                   np.frombuffer(t, _I4))

    def positions(self) -> npt.NDArray[np.float32]:
        return np.stack([self.x, self.y, self.z], axis=1)

    def pmt_digest(self) -> str:
        """The digest of these PMT positions a v2 WELCOME carries (compare before a run)."""
        from charon.protocol.v2 import pmt_digest

        return pmt_digest(*self.frames()[:3])


def frame_of(array: npt.NDArray[Any]) -> Frame:
    """A contiguous little-endian array as a wire frame (no copy when it already is one)."""
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.data.cast("B") if a.size else b""


def fingerprint_of(definition: dict[str, Any], arrays: dict[str, npt.NDArray[Any]] | None = None) -> str:
    """sha256 over a detector's complete definition in canonical form (sorted JSON + array bytes).

    Two workers with equal fingerprints simulate the same detector with the same optics, so their
    answers are statistically interchangeable.
    """
    h = hashlib.sha256()
    h.update(json.dumps(definition, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())
    for name in sorted(arrays or {}):
        a = np.ascontiguousarray((arrays or {})[name])
        h.update(f"\0{name}:{a.dtype.str}:{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@runtime_checkable
class Simulator(Protocol):
    """A photon engine. ``simulate`` takes one or more events and returns their hits in order.

    Implementations must: never emit a channel >= len(detector_info()); not propagate photons that
    arrive with a terminal flag; keep the CHERENKOV/SCINTILLATION bits; give NAN_ABORT to
    non-finite input; draw random numbers keyed by (seed, event id, photon index) so a re-run gives
    the same hits. They may be called from a thread other than the one that built them, one call
    at a time. ``close`` releases what the engine holds (threads, device contexts); the process
    that built a simulator closes it once no call is running, and calls nothing after.
    """

    name: str

    @property
    def fingerprint(self) -> str: ...

    def detector_info(self) -> DetectorInfo: ...

    def simulate(self, batch: Sequence[Photons]) -> list[Hits]: ...

    def close(self) -> None: ...
