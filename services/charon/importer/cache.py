"""Imported detectors cached on disk, keyed by the sha256 of their inputs.

``serve``/``worker --detector FILE.gdml`` import at start-up; a worker pool restarting, or many
workers on one node, should not each pay for it. The key covers the GDML and RATDB bytes and every
import option (and the importer's version), so a changed input can never be served from a stale
entry. Entries are written atomically (temporary file + rename); an unwritable cache is a warning,
not a failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from charon.engine.detector import Detector, load_detector, save_detector
from charon.errors import DetectorError
from charon.importer.build import ImportOptions, ImportReport, import_gdml, sha256_of

log = logging.getLogger("charon.importer")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "charon" / "detectors"


def cache_key(gdml: Path, options: ImportOptions) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"gdml": sha256_of(gdml), "ratdb": None if options.ratdb is None else sha256_of(options.ratdb),
                         **options.key()}, sort_keys=True).encode())
    return h.hexdigest()


def imported_detector(gdml: Path, options: ImportOptions, cache_dir: Path | None = None) -> Detector:
    """The detector of ``gdml``: from the cache when its inputs are unchanged, else imported (and cached)."""
    gdml = Path(gdml)
    if not gdml.is_file():
        raise DetectorError(f"GDML file {str(gdml)!r} does not exist")
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = directory / f"{gdml.stem}-{cache_key(gdml, options)[:24]}.npz"
    if entry.is_file():
        try:
            det = load_detector(entry)
        except DetectorError as exc:
            log.warning("ignoring unreadable cache entry %s: %s", entry, exc)
        else:
            log.info("detector %s from the import cache (%s)", gdml.name, entry)
            return det
    report: ImportReport = import_gdml(gdml, options)
    for note in report.notes:
        log.info("import note: %s", note)
    log.info("imported %s in %.2f s: %s", gdml.name, sum(report.timings.values()),
             ", ".join(f"{k} {v}" for k, v in report.counts.items()))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".tmp{os.getpid()}")
        save_detector(report.detector, tmp)
        tmp.replace(entry)
    except OSError as exc:
        log.warning("import cache %s not written (%s): the next start imports again", directory, exc)
    return report.detector
