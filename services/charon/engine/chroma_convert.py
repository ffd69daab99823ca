"""Conversions between charon's v1 containers and the arrays Chroma speaks; no Chroma import.

Chroma's ``chroma.event.Photons`` holds (n, 3) float32 ``pos``/``dir``/``pol`` plus (n,) columns and
passes everything through ``np.asarray``, so views handed to it are used as they are. Its flat hits
(``Simulation.simulate(..., keep_flat_hits=True)``) come back in the same layout with a ``channel``
(0..P-1) and an ``evidx`` per hit. Keeping these functions free of Chroma lets them be tested on any
machine with objects of the same shape.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from charon.engine.base import DetectorInfo, Hits
from charon.engine.batching import PackedPhotons
from charon.errors import DetectorError
from charon.protocol.tokens import Flag

log = logging.getLogger(__name__)

NAN_ABORT = np.uint32(Flag.NAN_ABORT)


class FlatHits(Protocol):
    """What Chroma's ``event.flat_hits`` offers (a ``chroma.event.Photons`` of detected photons)."""

    channel: npt.NDArray[Any]
    dir: npt.NDArray[Any]
    pol: npt.NDArray[Any]
    wavelengths: npt.NDArray[Any]
    t: npt.NDArray[Any]
    flags: npt.NDArray[Any]
    evidx: npt.NDArray[Any]


def photons_kwargs(packed: PackedPhotons, i: int) -> dict[str, npt.NDArray[Any]]:
    """Keyword arguments of ``chroma.event.Photons`` for request ``i`` of a pass: views, no copies.

    ``evidx`` is a writable view because Chroma's ``simulate`` stamps each input's batch position
    into it.
    """
    rows = packed.rows(i)
    return {
        "pos": packed.pos[rows],
        "dir": packed.dir[rows],
        "pol": packed.pol[rows],
        "wavelengths": packed.wavelengths[rows],
        "t": packed.t[rows],
        "flags": packed.flags[rows],
        "evidx": packed.evidx[rows],
    }


def mark_non_finite(packed: PackedPhotons) -> int:
    """Flag photons with a NaN or infinite field NAN_ABORT (Chroma then leaves them alone).

    Returns how many were flagged.
    """
    if len(packed) == 0:
        return 0
    bad = ~(
        np.isfinite(packed.pos).all(axis=1)
        & np.isfinite(packed.dir).all(axis=1)
        & np.isfinite(packed.pol).all(axis=1)
        & np.isfinite(packed.wavelengths)
        & np.isfinite(packed.t)
    )
    count = int(np.count_nonzero(bad))
    if count:
        packed.flags[bad] |= NAN_ABORT
    return count


def hits_from_flat(flat: FlatHits, n_channels: int) -> Hits:
    """v1 hit columns from Chroma flat hits; hits on a channel outside 0..n_channels-1 are dropped."""
    channel = np.asarray(flat.channel)
    n = int(channel.shape[0])
    dirs = np.asarray(flat.dir, dtype=np.float32).reshape(n, 3)
    pols = np.asarray(flat.pol, dtype=np.float32).reshape(n, 3)
    wavelengths = np.asarray(flat.wavelengths, dtype=np.float32)
    t = np.asarray(flat.t, dtype=np.float32)
    flags = np.asarray(flat.flags, dtype=np.uint32)
    if not (wavelengths.shape == t.shape == flags.shape == (n,)):
        raise ValueError(f"Chroma flat hits have ragged columns ({n} channels, {wavelengths.shape[0]} "
                         f"wavelengths, {t.shape[0]} times, {flags.shape[0]} flags)")
    wide = channel.astype(np.int64, copy=False)
    valid = (wide >= 0) & (wide < n_channels)
    if not bool(valid.all()):
        dropped = n - int(np.count_nonzero(valid))
        log.warning("dropped %d of %d Chroma hits on channels outside 0..%d", dropped, n, n_channels - 1)
        channel, dirs, pols = channel[valid], dirs[valid], pols[valid]
        wavelengths, t, flags = wavelengths[valid], t[valid], flags[valid]
    # One transposing copy makes every vector component a contiguous column (ready to send).
    d = np.ascontiguousarray(dirs.T)
    p = np.ascontiguousarray(pols.T)
    return Hits(
        channel.astype(np.uint32, copy=False),
        d[0], d[1], d[2], p[0], p[1], p[2],
        np.ascontiguousarray(wavelengths), np.ascontiguousarray(t), np.ascontiguousarray(flags),
    )


def detector_info(detector: Any) -> DetectorInfo:
    """DETECTOR_INFO from a Chroma detector's channel arrays (flattened or not).

    Positions become float32 columns and types int32. Upstream Chroma (BenLand100) stores positions
    as int32, i.e. truncated to whole millimetres; that is logged because RAT matches channels to its
    PMTs by position within 0.01 mm.
    """
    try:
        raw_pos = detector.channel_index_to_position
        raw_type = detector.channel_index_to_channel_type
    except AttributeError as exc:
        raise DetectorError(f"not a Chroma detector with channels: {exc}") from None
    types = np.asarray(raw_type)
    n = int(types.shape[0]) if types.ndim else 0
    pos_in = np.asarray(raw_pos)
    if n == 0:
        pos_in = pos_in.reshape(0, 3)
    if types.ndim != 1 or pos_in.shape != (n, 3):
        raise DetectorError(f"Chroma detector has {n} channel types but positions of shape {pos_in.shape}; "
                            "expected (channels, 3)")
    if n and (not np.issubdtype(types.dtype, np.integer)
              or types.min() < np.iinfo(np.int32).min or types.max() > np.iinfo(np.int32).max):
        raise DetectorError("Chroma channel types must be 32-bit integers")
    cols = np.ascontiguousarray(pos_in.T, dtype=np.float32)
    if n and looks_truncated(pos_in):
        reason = ("stored as integers" if np.issubdtype(pos_in.dtype, np.integer)
                  else "all whole millimetres")
        log.warning("Chroma channel positions are %s: likely truncated by upstream Chroma's int32 "
                    "flatten(); RAT matches PMTs by position within 0.01 mm. Build the detector with "
                    "the pennneutrinos/chroma fork (docs/chroma.md)", reason)
    return DetectorInfo(cols[0], cols[1], cols[2], np.ascontiguousarray(types, dtype=np.int32))


def looks_truncated(positions: npt.NDArray[Any]) -> bool:
    """True when every coordinate is an integer number of millimetres (or stored as an integer)."""
    pos = np.asarray(positions)
    if pos.size == 0:
        return False
    if np.issubdtype(pos.dtype, np.integer):
        return True
    return bool(np.all(pos == np.round(pos)))
