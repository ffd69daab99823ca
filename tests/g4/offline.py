"""Offline Geant4: the environment that lets geant4-pybind import and run with no data set at all.

geant4-pybind's import hook looks for twelve Geant4 data sets and, when they are missing, prompts
(no stdin: ImportError) or, under ``CI=true``, downloads them (no network: ImportError). Setting
``GEANT4_DATA_DIR`` before the import disables the hook; optical physics needs no data, only the run
manager's nuclide table wants ``G4ENSDFSTATE3.0/ENSDFSTATE.dat``, for which an empty file is enough.
An empty ``G4EMLOW8.8`` silences the one remaining warning, and ``HOME`` points into the scratch
directory so nothing is written to the real home (``~/.geant4_pybind``).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ENSDFSTATE_DIR = "G4ENSDFSTATE3.0"
EMLOW_DIR = "G4EMLOW8.8"
IMPORT_TIMEOUT_S = 120.0


def prepare_environment(tmp_dir: Path | str) -> dict[str, str]:
    """Create the offline "data set" under ``tmp_dir`` and return the variables a Geant4 process needs.

    The result is meant to be merged into ``os.environ`` for a subprocess (``{**os.environ, **env}``)
    or applied with ``os.environ.update`` before ``import geant4_pybind`` in the process itself.
    """
    base = Path(tmp_dir)
    data = base / "g4data"
    (data / ENSDFSTATE_DIR).mkdir(parents=True, exist_ok=True)
    (data / ENSDFSTATE_DIR / "ENSDFSTATE.dat").touch()
    (data / EMLOW_DIR).mkdir(parents=True, exist_ok=True)
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "GEANT4_DATA_DIR": str(data),
        "G4ENSDFSTATEDATA": str(data / ENSDFSTATE_DIR),
        "G4LEDATA": str(data / EMLOW_DIR),
        "HOME": str(home),
    }


def subprocess_env(tmp_dir: Path | str) -> dict[str, str]:
    """``os.environ`` plus the offline variables, with ``CI`` removed (it would trigger downloads)."""
    env = {**os.environ, **prepare_environment(tmp_dir)}
    env.pop("CI", None)
    # The harness lives in tests/g4: a subprocess started with ``-m tests.g4...`` must find it.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


@functools.cache
def geant4_available() -> bool:
    """True when ``import geant4_pybind`` succeeds offline (checked in a subprocess: the hook may prompt)."""
    with tempfile.TemporaryDirectory(prefix="g4probe-") as tmp:
        try:
            r = subprocess.run([sys.executable, "-c", "import geant4_pybind"], env=subprocess_env(tmp),
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=IMPORT_TIMEOUT_S,
                               check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return r.returncode == 0


def geant4_version() -> str:
    """The Geant4 version string of the installed wheel (call only inside a prepared Geant4 process)."""
    import geant4_pybind as g4

    return str(g4.G4Version).strip("$ ").removeprefix("Name: ").strip()
