"""Which placed volumes are PMTs, and in what channel order.

With RAT's PMTINFO (the ratpac-two client checks the server's PMT count and positions against it),
channel k is PMTINFO entry k, matched to the placement whose world position is that entry's
position within 0.05 mm; of several (an envelope and the body inside it), the shallowest gets the
channel and its daughters inherit it. Unmatched entries are an error that lists them. Without
PMTINFO, ``--pmt-volume REGEX`` names the logical volumes that are PMTs; channels then follow
placement order (depth first, document order), and positions are the placements' origins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from charon.errors import DetectorError
from charon.importer.placements import Node

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]

#: How far (mm) a PMTINFO position may lie from the placement it names.
MATCH_TOLERANCE_MM = 0.05


@dataclass(frozen=True)
class ChannelMap:
    """node index -> channel, and the channel table (positions, types, directions)."""

    matched: dict[int, int]
    positions: F64
    types: I32
    directions: F64


def match_pmtinfo(nodes: list[Node], positions: F64, types: I32, directions: F64,
                  tolerance: float = MATCH_TOLERANCE_MM, source: str = "PMTINFO") -> ChannelMap:
    """Channel k = PMTINFO entry k, matched by world position (see the module docstring)."""
    origins = np.array([n.transform[:3, 3] for n in nodes[1:]]) if len(nodes) > 1 else np.zeros((0, 3))
    depth = np.array([n.depth for n in nodes[1:]], dtype=np.int64)
    cell = 4.0 * tolerance
    grid: dict[tuple[int, int, int], list[int]] = {}
    keys = np.floor(origins / cell).astype(np.int64)
    for i, key in enumerate(map(tuple, keys)):
        grid.setdefault(key, []).append(i)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    matched: dict[int, int] = {}
    unmatched: list[int] = []
    owner: dict[int, int] = {}
    offsets = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]
    for k, p in enumerate(pos):
        base = np.floor(p / cell).astype(np.int64)
        best = -1
        for off in offsets:
            for i in grid.get((int(base[0] + off[0]), int(base[1] + off[1]), int(base[2] + off[2])), ()):
                if np.linalg.norm(origins[i] - p) <= tolerance and (best < 0 or depth[i] < depth[best]):
                    best = i
        if best < 0:
            unmatched.append(k)
            continue
        node = best + 1
        if node in owner:
            raise DetectorError(f"{source} entries {owner[node]} and {k} both lie at the placement of "
                                f"{nodes[node].pv_name!r} ({_xyz(p)})")
        owner[node] = k
        matched[node] = k
    if unmatched:
        shown = ", ".join(f"{k} at {_xyz(pos[k])}" for k in unmatched[:8])
        more = f" and {len(unmatched) - 8} more" if len(unmatched) > 8 else ""
        raise DetectorError(f"{len(unmatched)} of {len(pos)} {source} entries match no placed volume within "
                            f"{tolerance} mm: {shown}{more}")
    return ChannelMap(matched, pos, np.asarray(types, np.int32).reshape(-1),
                      np.asarray(directions, np.float64).reshape(-1, 3))


def match_volume_pattern(nodes: list[Node], pattern: str) -> ChannelMap:
    """Channels = placements of logical volumes whose name matches ``pattern`` (a nested match
    belongs to its matching ancestor), in placement order."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise DetectorError(f"--pmt-volume {pattern!r} is not a valid regular expression: {exc}") from None
    matched: dict[int, int] = {}
    inside = np.zeros(len(nodes), dtype=bool)
    for i, node in enumerate(nodes):
        if i == 0:
            continue
        inside[i] = inside[node.mother]
        if not inside[i] and rx.search(node.lv):
            matched[i] = len(matched)
            inside[i] = True
    if not matched:
        names = sorted({n.lv for n in nodes[1:]})
        raise DetectorError(f"--pmt-volume {pattern!r} matches no placed logical volume (volumes: "
                            f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''})")
    rows = sorted(matched, key=matched.__getitem__)
    pos = np.array([nodes[i].transform[:3, 3] for i in rows])
    dirs = np.array([nodes[i].transform[:3, 2] for i in rows])
    dirs /= np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-300)
    return ChannelMap(matched, pos, np.zeros(len(rows), np.int32), dirs)


def _xyz(p: F64) -> str:
    return f"({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) mm"
