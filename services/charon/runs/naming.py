"""Where a run's file goes: ChAR0N's naming rules, confined to the output directory.

ChAR0N (``simpleworker.py --async_mode``) names the file after RUN_BEGIN's filename: trailing
``.root`` and ``.ntuple`` suffixes are stripped repeatedly, then the last remaining suffix is
replaced by ``.charon.ntuple.root`` (``run.v2.root`` -> ``run.charon.ntuple.root``). RAT's
ROOTFILE replay is then pointed at that file. Any client may send any name, so the name is
confined to the output directory: a relative name that leaves it (``..``) is refused, and an
absolute one is honoured only when ``runs.allow_absolute`` is set (otherwise only its last
component is kept, inside the directory). Pure functions on paths; nothing is created here.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath
from typing import Final

from charon.errors import CharonError

SUFFIX: Final = ".charon.ntuple.root"
STRIPPED: Final = (".root", ".ntuple")
#: RAT's IO[ROOTProc].default_output_filename, used when RUN_BEGIN carries no name.
DEFAULT_FILENAME: Final = "output.root"
MAX_NAME_BYTES: Final = 1024


class RunNameRefused(CharonError):
    """A RUN_BEGIN filename that cannot name a file in the output directory."""

    outcome = "bad_filename"


def charon_name(filename: str) -> PurePosixPath:
    """ChAR0N's file name for RUN_BEGIN's ``filename`` (directories kept)."""
    path = PurePosixPath(filename)
    while path.suffix in STRIPPED:
        path = path.with_suffix("")
    if not path.name or path.name in (".", ".."):
        raise RunNameRefused(f"RUN_BEGIN filename {filename!r} names no file")
    return path.with_suffix(SUFFIX) if path.suffix else path.with_name(path.name + SUFFIX)


def relative_name(filename: str | None, *, allow_absolute: bool = False) -> PurePosixPath:
    """The run file's name for RUN_BEGIN's ``filename``, checked by its text alone (the router does
    this without access to the files): relative to the output directory and not leaving it, or
    absolute when ``allow_absolute`` (otherwise an absolute name keeps only its last component).

    Raises :class:`RunNameRefused` for a name with ``..`` leading out, NUL, or over the size limit.
    """
    name = filename or DEFAULT_FILENAME
    if "\x00" in name or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise RunNameRefused(f"RUN_BEGIN filename of {len(name)} characters with NUL or over {MAX_NAME_BYTES} bytes")
    target = charon_name(name)
    if target.is_absolute():
        return PurePosixPath(posixpath.normpath(target)) if allow_absolute else PurePosixPath(target.name)
    normal = PurePosixPath(posixpath.normpath(target))
    if normal.parts[:1] == ("..",):
        raise RunNameRefused(f"RUN_BEGIN filename {filename!r} leaves the output directory")
    return normal


def resolve(name: PurePosixPath, outdir: Path) -> Path:
    """The file for a :func:`relative_name` where the file is written: symbolic links that would
    lead out of ``outdir`` are refused too (:class:`RunNameRefused`)."""
    if name.is_absolute():
        return Path(name)
    root = Path(os.path.realpath(outdir))
    path = Path(os.path.realpath(root / name))
    if root not in path.parents:
        raise RunNameRefused(f"run file {str(name)!r} leads out of the output directory {str(outdir)!r}")
    return path


def run_path(filename: str | None, outdir: Path, *, allow_absolute: bool = False) -> Path:
    """:func:`relative_name` then :func:`resolve`: the file RUN_BEGIN's ``filename`` names."""
    return resolve(relative_name(filename, allow_absolute=allow_absolute), outdir)


def numbered(name: PurePosixPath, n: int) -> PurePosixPath:
    """The ``n``-th alternative name for a run whose file another open run is writing."""
    stem = name.name.removesuffix(SUFFIX)
    return name.with_name(f"{stem}_{n}{SUFFIX}")
