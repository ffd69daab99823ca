"""bench/bench_gpu.py, the script bench/gpu.sh runs on a lent GPU, runs end to end on the CPU.

A GPU machine is lent rarely and for minutes: the script must not first fail there. This runs it
with small sizes on the CPU (no timing is checked, only that every figure is produced and sane).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("warp")


def test_the_gpu_bench_script_produces_every_figure_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--device", "cpu", "--sizes", "1000", "4000",
         "--repeats", "1", "--batch", "4", "--output", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["detectors"]) == {"reference, analytic", "reference, mesh"}
    for r in result["detectors"].values():
        for n in ("1000", "4000"):
            assert r["sizes"][n]["photons"] == int(n)
            assert r["sizes"][n]["median"] > 0
            assert 0.02 < r["sizes"][n]["hit_fraction"] < 0.3  # about 0.11 on the reference detector
        assert r["batched"]["events"] == 4
        assert r["batched"]["ratio"] > 0
    assert "skipped" in result["chroma"]  # no Chroma on a CPU machine: said, not silently absent
    assert "| reference, mesh |" in done.stdout
