"""GDML reading and tessellation timings on RAT-style detectors.

For N PMTs (RAT's r7081 toroidal construction on a 5.8 m Fibonacci sphere, as
tests/gdml_builders.py writes it): the time to parse the file into a GdmlDocument, to tessellate
every solid once at several chords (per solid, not per placement: the mesh cache holds one mesh per
solid and chord), and the triangles one PMT (body, inner1, inner2, dynode) and the 6 m water tank
would give. Medians over repeats.

    .venv/bin/python bench/bench_gdml.py              # 1 000 and 10 000 PMTs, 5 repeats
    .venv/bin/python bench/bench_gdml.py --quick      # 1 000 PMTs, 2 repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.gdml_builders import rat_like_gdml

from charon.gdml import read_gdml, tessellate

PMT_PARTS = ("r7081_body_solid0x6001", "r7081_inner1_solid0x6002", "r7081_inner2_solid0x6003",
             "r7081_dynode_solid0x7007")


def median_time(repeats: int, func: Callable[[], object]) -> tuple[float, float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = (1000,) if args.quick else (1000, 10_000)
    repeats = 2 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            text, _, _ = rat_like_gdml(n)
            path = Path(tmp) / f"rat{n}.gdml"
            path.write_text(text)
            med, lo, hi = median_time(repeats, lambda p=path: read_gdml(p))
            print(f"{n:6d} PMTs: {len(text) / 1e6:.1f} MB, parse {med:.3f} s [{lo:.3f}-{hi:.3f}]")
        doc = read_gdml(path)
        for chord in (2.0, 0.5, 0.1):
            def mesh_all(c: float = chord) -> None:
                for name in doc.solids:
                    tessellate(doc, name, c)
            start = time.perf_counter()
            mesh_all()
            first = time.perf_counter() - start
            start = time.perf_counter()
            mesh_all()
            cached = time.perf_counter() - start
            per_pmt = sum(tessellate(doc, s, chord).faces.shape[0] for s in PMT_PARTS)
            tank = tessellate(doc, "tank0x7002", chord).faces.shape[0]
            print(f"chord {chord:4.1f} mm: all {len(doc.solids)} solids {first:.3f} s (cached {cached * 1e3:.2f} ms), "
                  f"{per_pmt} triangles per PMT, tank {tank}")


if __name__ == "__main__":
    main()
