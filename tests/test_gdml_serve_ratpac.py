"""A Geant4-written detector through the whole product: ``charon detector import``, ``charon serve
--detector``, and a ratpac-like client run (PING, RUN_BEGIN, DETECTOR_INFO with RAT's PMT check,
PHOTONDATA events, RUN_END) whose hits agree with Geant4 on the same file; bad input is one line
and exit status 2.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from charon.engine.base import Photons
from tests import procs
from tests.conftest import skip_or_fail
from tests.g4 import api, build, stats
from tests.g4.offline import geant4_available
from tests.ratpac_client import RatpacClient

EVENTS = 20
PHOTONS_PER_EVENT = 10_000
SOURCE = (150.0, -250.0, 300.0)


@pytest.fixture(scope="module", autouse=True)
def _geant4() -> None:
    if not geant4_available():
        skip_or_fail("geant4-pybind is not importable offline (pip install 'charon[dev]')")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> build.BuiltDetector:
    return build.build("water_cylinder", tmp_path_factory.mktemp("wc"))


def _charon(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "charon", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _photons(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return api.photon_batch(np.tile(SOURCE, (n, 1)), api.isotropic(n, rng), wavelength_nm=420.0, rng=rng)


def test_import_serve_and_a_ratpac_run_agree_with_geant4(built: build.BuiltDetector, tmp_path: Path,
                                                          context: zmq.Context[Any]) -> None:
    out = tmp_path / "water_cylinder.npz"
    done = _charon("detector", "import", str(built.gdml), "--ratdb", str(built.ratdb), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "48 channels" in done.stdout
    assert out.is_file()

    with procs.serve("--detector", str(out), "--device", "cpu", backend="builtin") as server:
        client = RatpacClient(server.endpoint, context, timeout_ms=60_000, rat_pmt_positions=built.pmt_positions)
        client.begin_of_run("run1.root")
        assert client.unmatched == []
        assert client.rat_pmt_id == list(range(len(built.pmt_positions)))  # channel k is PMTINFO row k
        counts = np.zeros(len(built.pmt_positions), np.int64)
        times = []
        for e in range(EVENTS):
            p = _photons(PHOTONS_PER_EVENT, seed=100 + e)
            pes = client.event(Photons.from_arrays(e, p["pos"], p["dir"], p["pol"], p["wavelength"], p["time"]))
            counts += np.bincount(pes.rat_pmt, minlength=len(counts))
            times.append(pes.arrays["time"])
        assert client.run_end()
        assert client.warnings == []

    n = EVENTS * PHOTONS_PER_EVENT
    g4 = api.run(built.gdml, built.ratdb, _photons(n, seed=7), seed=3, processes=2, timeout_s=600)
    fc, fg = counts.sum() / n, g4.detected_fraction
    sigma = math.sqrt(fc * (1 - fc) / n + fg * (1 - fg) / n)
    assert abs(fc - fg) <= 3 * sigma + 0.015 * fg, f"charon {fc:.5f}, Geant4 {fg:.5f}"
    chi2, ndf = stats.two_sample_chi2(counts, g4.counts(len(counts)), n, n)
    assert chi2 / ndf < 1.5, f"chi2/ndf = {chi2 / ndf:.3f} ({ndf} dof)"
    qc = np.quantile(np.concatenate(times).astype(np.float64), [0.1, 0.5, 0.9])
    qg = np.quantile(g4.time_ns, [0.1, 0.5, 0.9])
    assert np.all(np.abs(qc - qg) <= 0.3), f"quantiles charon {qc}, Geant4 {qg}"


def test_serve_imports_a_gdml_detector_at_start_up_and_caches_it(built: build.BuiltDetector,
                                                                  tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"CHARON_ENGINE__DETECTOR_CACHE_DIR": str(cache)}
    args = ("--detector", str(built.gdml), "--ratdb", str(built.ratdb), "--device", "cpu")
    with procs.serve(*args, backend="echo", env=env) as first:
        fingerprint = first.ready["fingerprint"]
    entries = list(cache.glob("*.npz"))
    assert len(entries) == 1
    with procs.serve(*args, backend="echo", env=env) as second:
        assert second.ready["fingerprint"] == fingerprint
        assert "from the import cache" in second.stderr()


def _one_line_exit_2(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_gdml_and_pmtinfo_are_one_line_and_exit_2(built: build.BuiltDetector, tmp_path: Path) -> None:
    text = built.gdml.read_text()
    unknown = tmp_path / "unknown.gdml"
    unknown.write_text(text.replace("<solids>", "<solids>\n    <hyperbolicfoo name=\"x\"/>", 1))
    _one_line_exit_2(_charon("detector", "import", str(unknown), "--ratdb", str(built.ratdb), "-o",
                             str(tmp_path / "a.npz")), "hyperbolicfoo", "unknown.gdml:")
    missing = tmp_path / "missing.gdml"
    missing.write_text(text.replace('<materialref ref="glass', '<materialref ref="nosuchglass', 1))
    _one_line_exit_2(_charon("detector", "import", str(missing), "--ratdb", str(built.ratdb), "-o",
                             str(tmp_path / "b.npz")), "nosuchglass")
    tables = json.loads(built.ratdb.read_text())
    tables[0]["x"][3] += 5.0
    shifted = tmp_path / "shifted.json"
    shifted.write_text(json.dumps(tables))
    _one_line_exit_2(_charon("detector", "import", str(built.gdml), "--ratdb", str(shifted), "-o",
                             str(tmp_path / "c.npz")), "1 of 48", "3 at (")
    _one_line_exit_2(_charon("serve", "--detector", str(built.gdml), "--ratdb", str(shifted), "--bind",
                             "tcp://127.0.0.1:*", "--backend", "echo"), "1 of 48")


def test_a_router_pool_refuses_a_worker_whose_imported_detector_differs(built: build.BuiltDetector,
                                                                        tmp_path: Path) -> None:
    """Two imports of the same GDML at different chord tolerances are different detectors."""
    from tests.router_support import metric, wait_metric

    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for path, chord in ((a, "0.5"), (b, "0.4")):
        done = _charon("detector", "import", str(built.gdml), "--ratdb", str(built.ratdb), "--chord", chord,
                       "-o", str(path))
        assert done.returncode == 0, done.stderr
    env = {"CHARON_HEARTBEAT__INTERVAL_S": "0.2"}
    with procs.router(env=env) as router, \
            procs.worker(router.workers_endpoint, "--detector", str(a), env=env), \
            procs.worker(router.workers_endpoint, "--detector", str(b), env=env):
        wait_metric(router.metrics, "charon_workers_refused_total", 'reason="fingerprint"', at_least=1,
                    timeout_s=30)
        text = wait_metric(router.metrics, "charon_workers", 'state="idle"', at_least=1, timeout_s=30)
        assert metric(text, "charon_workers", 'state="idle"') + metric(text, "charon_workers", 'state="busy"') == 1
