"""Geant4's own optical-photon speed on charon's reference detector: the baseline of bench_engine.

RAT-PAC propagates optical photons in Geant4 when no Chroma/charon server is used, so Geant4 is the
tool a user would otherwise run. This script runs Geant4 11.4 through the ``geant4-pybind`` wheel
(optional bench dependency: ``pip install geant4-pybind``) fully offline: ``GEANT4_DATA_DIR``
points at a scratch directory holding only an empty ``G4ENSDFSTATE3.0/ENSDFSTATE.dat``; optical
physics needs no data set.

Geometry, as close to charon's reference detector as Geant4 volumes allow: a 6 m water sphere
(n = 1.33, 30 m absorption, 50 m Rayleigh, flat) in an air world without optical properties (a
photon leaving the water is killed), 3000 photocathode disks (radius 160 mm, 10 mm thick, Fibonacci
lattice, inner face 15 mm inside the wall) inside a 30 mm water container shell (Geant4's
navigation is 8-10x slower with 3000 daughters directly in the water), each a
``dielectric_metal`` skin with reflectivity 0 and efficiency 0.25. Trimmed ``G4OpticalPhysics``
(Cerenkov, scintillation, WLS and Mie off). Source: GPS, isotropic 420 nm (2.952 eV) from the centre,
1000 photons per event. Multi-threaded run managers hang under the GIL in geant4-pybind, so N
photons on P cores run as P processes of N/P photons each, started together through a file barrier;
the rate is N / (last end - first start).

Run alone: ``python bench/geant4_baseline.py --photons 1000000 --processes 2``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RADIUS_MM = 6000.0
N_PMTS = 3000
PMT_RADIUS_MM = 160.0
QE = 0.25
PHOTONS_PER_EVENT = 1000
WARMUP_EVENTS = 2


def prepare_data_dir(base: Path) -> Path:
    """The whole offline 'data set': one empty file (and an empty G4EMLOW to silence a warning)."""
    (base / "G4ENSDFSTATE3.0").mkdir(parents=True, exist_ok=True)
    (base / "G4ENSDFSTATE3.0" / "ENSDFSTATE.dat").touch()
    (base / "G4EMLOW8.8").mkdir(parents=True, exist_ok=True)
    return base


def available() -> bool:
    """True when geant4-pybind is importable (checked in a subprocess: its import hook may prompt)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GEANT4_DATA_DIR=str(prepare_data_dir(Path(tmp))), HOME=tmp)
        r = subprocess.run([sys.executable, "-c", "import geant4_pybind"], env=env, capture_output=True,
                           timeout=120, stdin=subprocess.DEVNULL, check=False)
        return r.returncode == 0


def fibonacci(n: int) -> list[tuple[float, float, float]]:
    golden = math.pi * (3.0 - math.sqrt(5.0))
    out = []
    for i in range(n):
        z = 1.0 - (2.0 * i + 1.0) / n
        r = math.sqrt(max(0.0, 1.0 - z * z))
        out.append((r * math.cos(golden * i), r * math.sin(golden * i), z))
    return out


# ------------------------------------------------------------------------------------------ worker


def worker(args: argparse.Namespace) -> None:
    import geant4_pybind as g4

    mm, m, ev, ns = g4.mm, g4.m, g4.eV, g4.ns

    class Detector(g4.G4VUserDetectorConstruction):  # type: ignore[misc]
        def Construct(self) -> Any:
            nist = g4.G4NistManager.Instance()
            air = nist.FindOrBuildMaterial("G4_AIR")
            water = nist.FindOrBuildMaterial("G4_WATER")
            energies = g4.G4doubleVector([1.771 * ev, 4.133 * ev])
            mpt = g4.G4MaterialPropertiesTable()
            mpt.AddProperty("RINDEX", energies, g4.G4doubleVector([1.33, 1.33]))
            mpt.AddProperty("ABSLENGTH", energies, g4.G4doubleVector([30 * m, 30 * m]))
            mpt.AddProperty("RAYLEIGH", energies, g4.G4doubleVector([50 * m, 50 * m]))
            water.SetMaterialPropertiesTable(mpt)
            self._keep = [mpt, energies]

            world_s = g4.G4Box("world", 7 * m, 7 * m, 7 * m)
            world_l = g4.G4LogicalVolume(world_s, air, "world")
            world_p = g4.G4PVPlacement(None, g4.G4ThreeVector(), world_l, "world", None, False, 0)
            tank_s = g4.G4Orb("tank", RADIUS_MM * mm)
            tank_l = g4.G4LogicalVolume(tank_s, water, "tank")
            g4.G4PVPlacement(None, g4.G4ThreeVector(), tank_l, "tank", world_l, False, 0)
            shell_s = g4.G4Sphere("container", (RADIUS_MM - 30.0) * mm, RADIUS_MM * mm, 0, 2 * math.pi, 0, math.pi)
            shell_l = g4.G4LogicalVolume(shell_s, water, "container")
            g4.G4PVPlacement(None, g4.G4ThreeVector(), shell_l, "container", tank_l, False, 0)
            disk_s = g4.G4Tubs("pmt", 0, PMT_RADIUS_MM * mm, 5 * mm, 0, 2 * math.pi)
            disk_l = g4.G4LogicalVolume(disk_s, water, "pmt")
            surf = g4.G4OpticalSurface("photocathode", g4.unified, g4.polished, g4.dielectric_metal)
            smpt = g4.G4MaterialPropertiesTable()
            smpt.AddProperty("REFLECTIVITY", energies, g4.G4doubleVector([0.0, 0.0]))
            smpt.AddProperty("EFFICIENCY", energies, g4.G4doubleVector([QE, QE]))
            surf.SetMaterialPropertiesTable(smpt)
            skin = g4.G4LogicalSkinSurface("photocathode", disk_l, surf)
            # Python must keep every Geant4 object it created alive, or the C++ side loses it.
            self._keep += [surf, smpt, skin, world_s, world_l, tank_s, tank_l, shell_s, shell_l, disk_s, disk_l]
            centre_r = (RADIUS_MM - 20.0) * mm  # inner face 15 mm, outer face 5 mm inside the wall
            for k, (x, y, z) in enumerate(fibonacci(N_PMTS)):
                rot = g4.G4RotationMatrix()
                rot.rotateY(math.acos(z))
                rot.rotateZ(math.atan2(y, x))
                pos = g4.G4ThreeVector(x * centre_r, y * centre_r, z * centre_r)
                g4.G4PVPlacement(g4.G4Transform3D(rot, pos), disk_l, "pmt", shell_l, False, k)
                self._keep.append(rot)
            return world_p

        def ConstructSDandField(self) -> None:
            sd = Counter("pmts")
            g4.G4SDManager.GetSDMpointer().AddNewDetector(sd)
            self.SetSensitiveDetector("pmt", sd)
            self._sd = sd

    class Counter(g4.G4VSensitiveDetector):  # type: ignore[misc]
        hits = 0
        time_sum = 0.0

        def ProcessHits(self, step: Any, _history: Any) -> bool:
            Counter.hits += 1
            Counter.time_sum += step.GetPostStepPoint().GetGlobalTime() / ns
            return True

    class Physics(g4.G4VModularPhysicsList):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.RegisterPhysics(g4.G4OpticalPhysics())

        def ConstructParticle(self) -> None:
            super().ConstructParticle()
            g4.G4Electron.ElectronDefinition()
            g4.G4Positron.PositronDefinition()
            g4.G4Gamma.GammaDefinition()
            g4.G4Proton.ProtonDefinition()

    class Source(g4.G4VUserPrimaryGeneratorAction):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.gps = g4.G4GeneralParticleSource()

        def GeneratePrimaries(self, event: Any) -> None:
            self.gps.GeneratePrimaryVertex(event)

    class Actions(g4.G4VUserActionInitialization):  # type: ignore[misc]
        def Build(self) -> None:
            self.SetUserAction(Source())

    rm = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.Serial)
    rm.SetUserInitialization(Detector())
    rm.SetUserInitialization(Physics())
    rm.SetUserInitialization(Actions())
    ui = g4.G4UImanager.GetUIpointer()
    for cmd in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0", "/tracking/verbose 0",
                "/process/optical/verbose 0",
                *(f"/process/optical/processActivation {p} false"
                  for p in ("Cerenkov", "Scintillation", "OpWLS", "OpWLS2", "OpMieHG")),
                "/process/optical/boundary/setInvokeSD true"):
        ui.ApplyCommand(cmd)
    rm.Initialize()
    s1, s2 = 12345 + 7919 * args.index, 67890 + 104729 * args.index
    for cmd in (f"/random/setSeeds {s1} {s2}", "/gps/particle opticalphoton", "/gps/energy 2.952 eV",
                "/gps/pos/type Point", "/gps/pos/centre 0 0 0 mm", "/gps/ang/type iso",
                f"/gps/number {PHOTONS_PER_EVENT}"):
        ui.ApplyCommand(cmd)
    rm.BeamOn(WARMUP_EVENTS)
    Counter.hits, Counter.time_sum = 0, 0.0
    events = max(1, args.photons // PHOTONS_PER_EVENT)
    barrier = Path(args.barrier)
    (barrier / f"ready.{args.index}").touch()
    deadline = time.time() + 120
    while len(list(barrier.glob("ready.*"))) < args.processes and time.time() < deadline:
        time.sleep(0.001)
    start = time.time()
    rm.BeamOn(events)
    end = time.time()
    result = {"start": start, "end": end, "photons": events * PHOTONS_PER_EVENT, "hits": Counter.hits,
              "time_sum": Counter.time_sum}
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------ driver


def run(photons: int, processes: int = 2, timeout_s: float = 600.0) -> dict[str, float]:
    """Propagate ``photons`` in ``processes`` Geant4 processes; photons/s, detected fraction, mean time."""
    with tempfile.TemporaryDirectory(prefix="g4bench-") as tmp:
        base = Path(tmp)
        data = prepare_data_dir(base / "data")
        barrier = base / "barrier"
        barrier.mkdir()
        env = dict(os.environ, GEANT4_DATA_DIR=str(data), HOME=str(base))
        env.pop("CI", None)
        per = photons // processes
        procs = [subprocess.Popen([sys.executable, __file__, "worker", "--photons", str(per), "--index", str(i),
                                   "--processes", str(processes), "--barrier", str(barrier)],
                                  env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
                 for i in range(processes)]
        results = []
        try:
            for p in procs:
                out, _ = p.communicate(timeout=timeout_s)
                line = [x for x in out.splitlines() if x.startswith("RESULT ")]
                if p.returncode != 0 or not line:
                    raise RuntimeError(f"Geant4 worker failed (rc {p.returncode}): {out[-2000:]}")
                results.append(json.loads(line[-1][len("RESULT "):]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    total = sum(r["photons"] for r in results)
    hits = sum(r["hits"] for r in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"photons": total, "seconds": wall, "rate": total / wall, "detected_fraction": hits / total,
            "mean_hit_time_ns": sum(r["time_sum"] for r in results) / max(hits, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--photons", type=int, required=True)
    w.add_argument("--index", type=int, default=0)
    w.add_argument("--processes", type=int, default=1)
    w.add_argument("--barrier", required=True)
    ap.add_argument("--photons", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "worker":
        worker(args)
        return
    print(json.dumps(run(args.photons, args.processes), indent=2))


if __name__ == "__main__":
    main()
