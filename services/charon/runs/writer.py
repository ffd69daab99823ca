"""One run's ROOT file, written with uproot in ChAR0N's layout, readable after every flush.

Layout (ChAR0N ``simpleworker.py --async_mode``, read back by RAT's ROOTFILE mode entry by entry):
tree ``detinfo`` with one entry per channel {``pmt_x``, ``pmt_y``, ``pmt_z``: float32,
``pmt_type``: int32}; tree ``output`` with one entry per event {``event_id``: uint32 and the
jagged hit arrays ``channel_id`` (uint32), ``time``, ``wavelength``, ``u``, ``v``, ``w`` (hit
direction), ``pol_x``, ``pol_y``, ``pol_z`` (float32), ``flag`` (uint32)}; uproot adds the counters
(``nchannel_id``, ``ntime``, ...).

Each :meth:`RunFile.append` writes one basket per branch and uproot rewrites the tree's header,
so after :meth:`RunFile.flush` (which also fsyncs) the file on disk holds every appended event even
if the process is killed next. A run taken over by another process (its first writer died)
continues the same file: :meth:`RunFile.resume` copies the first ``keep`` entries of the old file
into a new one next to it, replaces the old file with it atomically, and goes on appending.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import awkward as ak
import numpy as np
import uproot

from charon.engine.base import DetectorInfo, Hits

log = logging.getLogger("charon.runs")

#: ``output`` branch <- Hits field, in ChAR0N's order.
HIT_BRANCHES: Final = (
    ("channel_id", "channel", "uint32"), ("time", "time", "float32"), ("wavelength", "wavelength", "float32"),
    ("u", "dx", "float32"), ("v", "dy", "float32"), ("w", "dz", "float32"),
    ("pol_x", "polx", "float32"), ("pol_y", "poly", "float32"), ("pol_z", "polz", "float32"),
    ("flag", "flags", "uint32"),
)
OUTPUT_BRANCHES: Final = {"event_id": "uint32", **{b: f"var * {t}" for b, _, t in HIT_BRANCHES}}
#: Entries copied per step when a taken-over run's file is rewritten (bounded memory).
_COPY_STEP: Final = 1000
_READ_TRIES: Final = 5
_READ_RETRY_S: Final = 0.5


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunFile:
    """The open file of one run; entries are appended in the order given."""

    def __init__(self, path: Path, info: DetectorInfo, *, keep_from: Path | None = None, keep: int = 0) -> None:
        self.path = path
        self.entries = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        target = path if keep_from is None else path.with_name(path.name + ".resume")
        self._file: Any = uproot.recreate(target)
        self._file.mktree("detinfo", {"pmt_x": "float32", "pmt_y": "float32", "pmt_z": "float32",
                                      "pmt_type": "int32"})
        self._file["detinfo"].extend({"pmt_x": info.x, "pmt_y": info.y, "pmt_z": info.z,
                                      "pmt_type": info.channel_type})
        self._tree: Any = self._file.mktree("output", OUTPUT_BRANCHES)
        self._synced = target
        if keep_from is not None:
            self._copy(keep_from, keep)
            self.flush()
            os.replace(target, path)  # the open file now has the run's name; writing goes on
            self._synced = path
            _fsync(path.parent)

    @classmethod
    def resume(cls, path: Path, info: DetectorInfo, keep: int) -> RunFile:
        """Continue a run whose file holds at least ``keep`` written entries (extra ones, written
        after the last acknowledged flush, are dropped: they will be appended again)."""
        if keep == 0 or not path.exists():
            if keep:
                log.error("run file %s is missing: its first %d events are lost (is --outdir shared by "
                          "every worker?)", path, keep)
            return cls(path, info)
        return cls(path, info, keep_from=path, keep=keep)

    def _copy(self, source: Path, keep: int) -> None:
        """Entries ``[0, keep)`` of ``source``. A writer that left cleanly may still be closing the
        file when its successor starts: a file that cannot be read yet is tried again briefly."""
        for attempt in range(_READ_TRIES):
            try:
                self._copy_once(source, keep)
                return
            except (OSError, ValueError, KeyError) as exc:
                if attempt + 1 == _READ_TRIES or self.entries:
                    raise
                log.info("run file %s not readable yet (%s): trying again", source, exc)
                time.sleep(_READ_RETRY_S)

    def _copy_once(self, source: Path, keep: int) -> None:
        with uproot.open(source) as old:
            tree = old["output"]
            have = min(int(tree.num_entries), keep)
            if have < keep:
                log.error("run file %s holds %d of the %d events written before: %d lost", source, have,
                          keep, keep - have)
            branches = ["event_id", *(b for b, _, _ in HIT_BRANCHES)]
            for start in range(0, have, _COPY_STEP):
                arrays = tree.arrays(branches, entry_start=start, entry_stop=min(start + _COPY_STEP, have))
                self._tree.extend({name: arrays[name] for name in branches})
                self.entries += len(arrays)

    def append(self, event_ids: Sequence[int], hits: Sequence[Hits]) -> None:
        """One basket: an entry per event, in order."""
        if not event_ids:
            return
        columns: dict[str, Any] = {"event_id": np.asarray(event_ids, dtype=np.uint32)}
        counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
        for branch, field, dtype in HIT_BRANCHES:
            flat = (np.concatenate([getattr(h, field) for h in hits]) if len(hits) else np.zeros(0))
            columns[branch] = ak.unflatten(flat.astype(dtype, copy=False), counts)
        self._tree.extend(columns)
        self.entries += len(event_ids)

    def flush(self) -> None:
        """Everything appended is on disk (the sink flushed and the file fsynced)."""
        self._file.file.sink.flush()
        _fsync(self._synced)

    def close(self) -> None:
        """Flush, close and fsync the file and its directory."""
        with contextlib.suppress(Exception):
            self._file.file.sink.flush()
        self._file.close()
        _fsync(self.path)
        _fsync(self.path.parent)


def read_output(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """The ``output`` tree as flat arrays per branch plus ``counts`` (tests, tools)."""
    with uproot.open(path) as f:
        arrays = f["output"].arrays()
        out: dict[str, Any] = {"event_id": np.asarray(arrays["event_id"])}
        out["counts"] = np.asarray(ak.num(arrays["channel_id"]))
        for branch, _, _ in HIT_BRANCHES:
            out[branch] = np.asarray(ak.flatten(arrays[branch]))
        return out
