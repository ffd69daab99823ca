"""RATDB PMTINFO files as RAT's ``ratdb_dump`` writes them: a JSON array of tables.

One table here: ``{"name": "PMTINFO", "index": "", "valid_begin": [0, 0], "valid_end": [0, 0],
"x", "y", "z" (global mm), "dir_x", "dir_y", "dir_z" (unit), "type" (int)}``. The channel index of a
PMT is its position in these lists.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt


def write_pmtinfo(path: Path, positions: Sequence[Sequence[float]], directions: Sequence[Sequence[float]],
                  types: Sequence[int] | None = None) -> None:
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    d = np.asarray(directions, dtype=float).reshape(-1, 3)
    if len(d) != len(pos):
        raise ValueError("positions and directions differ in length")
    table = {
        "name": "PMTINFO", "index": "", "valid_begin": [0, 0], "valid_end": [0, 0],
        "x": pos[:, 0].tolist(), "y": pos[:, 1].tolist(), "z": pos[:, 2].tolist(),
        "dir_x": d[:, 0].tolist(), "dir_y": d[:, 1].tolist(), "dir_z": d[:, 2].tolist(),
        "type": [int(t) for t in (types if types is not None else [1] * len(pos))],
    }
    path.write_text(json.dumps([table], indent=1) + "\n")


def read_pmtinfo(path: Path, name: str = "PMTINFO") -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                                                              npt.NDArray[np.int64]]:
    """Positions (P, 3) mm, directions (P, 3) and types (P,) of the named table (default PMTINFO)."""
    tables = json.loads(path.read_text())
    if isinstance(tables, dict):
        tables = [tables]
    for t in tables:
        if t.get("name") == name:
            pos = np.column_stack([t["x"], t["y"], t["z"]]).astype(float).reshape(-1, 3)
            if "dir_x" in t:
                d = np.column_stack([t["dir_x"], t["dir_y"], t["dir_z"]]).astype(float).reshape(-1, 3)
            else:
                d = np.zeros_like(pos)
            types = np.asarray(t.get("type", [-1] * len(pos)), dtype=np.int64)
            return pos, d, types
    raise ValueError(f"{path}: no {name} table")
