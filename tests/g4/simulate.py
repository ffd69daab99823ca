"""Run given optical photons through a GDML file in real Geant4 and return the detected hits.

``python -m tests.g4.simulate --gdml F --ratdb R --photons IN.npz --out OUT.npz --seed N`` is one
fresh Geant4 process (Geant4's run manager and geometry stores exist once per process). It reads
the GDML with ``G4GDMLParser.Read(path, False)`` (no schema validation: that needs the network), or
with ``--build NAME --params JSON`` constructs the same detector in memory (to prove the GDML round
trip); registers ``G4OpticalPhysics`` with Cerenkov, Scintillation and OpMieHG off (``--trim`` also
switches OpWLS/OpWLS2 off where no material has a WLS table); makes the volumes behind every
photocathode sensitive; and generates the photons of IN.npz as ``opticalphoton`` primaries with their
own position, direction, polarisation, wavelength (E = h c / λ) and time, one vertex each, at most
``--max-photons-per-event`` per event.

Detection: ``/process/optical/boundary/setInvokeSD true`` makes G4OpBoundaryProcess call the
sensitive detector of the post-step volume once per ``Detection``. The volumes made sensitive are
those behind a surface with a non-zero EFFICIENCY (the second volume of a border surface, the
volume of a skin surface), found in Geant4's surface tables, so the harness needs no names. A call
for a photon that stepped inside a sensitive volume (a regular SD call, not a detection) is ignored
and counted.

Channel: walking up the post-step point's touchable history (depth 0, 1, ...), the first volume
whose global translation lies within 0.05 mm of a PMTINFO position gives the channel (its list
index); -1 when none matches. Photon index: primary track IDs follow the vertex order within an
event; WLS secondaries inherit their primary's index through a stacking action (only installed when
a material has WLSABSLENGTH).

OUT.npz: ``photon`` (h,) int64 (index into IN.npz), ``channel`` (h,) int32, ``time_ns`` (h,),
``wavelength_nm`` (h,), ``pos`` (h, 3) mm, ``dir`` (h, 3) (``pol`` (h, 3) with ``--polarisation``),
and ``info`` (a JSON string: photons, BeamOn wall/CPU seconds, seconds spent in the Python photon
generator and sensitive detector within BeamOn, Unix start/end of BeamOn, Geant4 version, seed,
processes switched off, counts of unmatched hits and ignored SD calls, fates).

Cost of the Python side (geant4-pybind calls about 1 µs each on a 2-core machine): generating a
photon through G4ParticleGun costs about 8 µs, recording a hit about 10 µs; ``generate_s`` and
``sd_s`` measure them, so ``n / (beamon_wall_s - generate_s - sd_s)`` estimates Geant4's own rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.g4.ratdb import read_pmtinfo

CHANNEL_TOLERANCE_MM = 0.05
BARRIER_TIMEOUT_S = 300.0
ALWAYS_OFF = ("Cerenkov", "Scintillation", "OpMieHG")
TRIMMED_OFF = ("OpWLS", "OpWLS2")
FATES = ("detected", "bulk_absorbed", "surface_absorbed", "escaped", "wls_absorbed", "other")
PHOTON_KEYS = ("pos", "dir", "pol", "wavelength", "time")


class ChannelIndex:
    """PMTINFO positions on a 1 mm hash grid: a translation within ``tol`` mm of one gives its index."""

    def __init__(self, positions: npt.NDArray[np.float64], tol: float = CHANNEL_TOLERANCE_MM) -> None:
        self.tol2 = tol * tol
        self.grid: dict[tuple[int, int, int], list[tuple[int, float, float, float]]] = {}
        for i, (x, y, z) in enumerate(np.asarray(positions, dtype=float).reshape(-1, 3).tolist()):
            cells = {(math.floor(x + dx), math.floor(y + dy), math.floor(z + dz))
                     for dx in (-tol, tol) for dy in (-tol, tol) for dz in (-tol, tol)}
            for c in cells:
                for j, px, py, pz in self.grid.get(c, ()):
                    if (px - x) ** 2 + (py - y) ** 2 + (pz - z) ** 2 <= 4 * self.tol2:
                        raise ValueError(f"PMTINFO rows {j} and {i} are within {2 * tol} mm of each other")
                self.grid.setdefault(c, []).append((i, x, y, z))

    def find(self, x: float, y: float, z: float) -> int:
        for i, px, py, pz in self.grid.get((math.floor(x), math.floor(y), math.floor(z)), ()):
            if (px - x) ** 2 + (py - y) ** 2 + (pz - z) ** 2 <= self.tol2:
                return i
        return -1


def load_photons(path: Path | str) -> dict[str, npt.NDArray[np.float64]]:
    """IN.npz columns, checked: pos (n,3) mm, dir (n,3), pol (n,3), wavelength (n,) nm, time (n,) ns."""
    with np.load(path) as f:
        missing = [k for k in PHOTON_KEYS if k not in f]
        if missing:
            raise ValueError(f"{path}: missing photon columns {missing}")
        out = {k: np.asarray(f[k], dtype=np.float64) for k in PHOTON_KEYS}
    n = len(out["wavelength"])
    for k in ("pos", "dir", "pol"):
        if out[k].shape != (n, 3):
            raise ValueError(f"{k} must have shape ({n}, 3), not {out[k].shape}")
    if out["time"].shape != (n,) or out["wavelength"].shape != (n,):
        raise ValueError("wavelength and time must be 1-D of the same length")
    if not all(np.isfinite(v).all() for v in out.values()):
        raise ValueError("photon columns must be finite")
    if n and (out["wavelength"].min() <= 0):
        raise ValueError("wavelengths must be positive")
    return out


# ------------------------------------------------------------------------------ Geant4 process


def _ensure_offline() -> None:
    if "GEANT4_DATA_DIR" not in os.environ:  # run by hand: make this process offline-safe first
        from tests.g4.offline import prepare_environment

        os.environ.update(prepare_environment(tempfile.mkdtemp(prefix="g4env-")))
        os.environ.pop("CI", None)


def _walk(world_pv: Any) -> tuple[list[Any], list[Any]]:
    """Every logical volume below the world, each once, and every physical volume (placement).

    The returned wrappers must stay referenced: geant4-pybind then hands back these very objects
    for the same C++ pointers, so the hot path can compare volumes by identity.
    """
    seen: set[int] = set()
    logicals: list[Any] = []
    placements: list[Any] = [world_pv]
    stack = [world_pv.GetLogicalVolume()]
    while stack:
        lv = stack.pop()
        if lv.GetInstanceID() in seen:
            continue
        seen.add(lv.GetInstanceID())
        logicals.append(lv)
        for i in range(lv.GetNoDaughters()):
            pv = lv.GetDaughter(i)
            placements.append(pv)
            stack.append(pv.GetLogicalVolume())
    return logicals, placements


def _detects(surface: Any) -> bool:
    mpt = surface.GetSurfaceProperty().GetMaterialPropertiesTable()
    if mpt is None:
        return False
    eff = mpt.GetProperty("EFFICIENCY")
    return eff is not None and eff.GetMaxValue() > 0.0


def sensitive_volumes(g4: Any) -> list[Any]:
    """Logical volumes behind a detecting surface (EFFICIENCY > 0 somewhere): border → 2nd, skin → own."""
    out: dict[int, Any] = {}
    for (_, pv_to), surf in g4.G4LogicalBorderSurface.GetSurfaceTable().items():
        if _detects(surf):
            lv = pv_to.GetLogicalVolume()
            out[lv.GetInstanceID()] = lv
    for lv, surf in g4.G4LogicalSkinSurface.GetSurfaceTable().items():
        if _detects(surf):
            out[lv.GetInstanceID()] = lv
    return list(out.values())


def _has_wls(volumes: Sequence[Any]) -> bool:
    for lv in volumes:
        mpt = lv.GetMaterial().GetMaterialPropertiesTable()
        if mpt is not None and (mpt.GetProperty("WLSABSLENGTH") is not None
                                or mpt.GetProperty("WLSABSLENGTH2") is not None):
            return True
    return False


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    """The body of one Geant4 process: returns the OUT.npz arrays and writes nothing itself."""
    _ensure_offline()
    import geant4_pybind as g4

    from tests.g4.offline import geant4_version

    photons = load_photons(args.photons)
    n = len(photons["wavelength"])
    pmt_pos, _, _ = read_pmtinfo(Path(args.ratdb))
    channels = ChannelIndex(pmt_pos)
    hc = g4.h_Planck * g4.c_light

    rm = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.Serial)
    keep: list[Any] = []
    if args.gdml:
        parser = g4.G4GDMLParser()
        parser.Read(str(args.gdml), False)
        world_pv = parser.GetWorldVolume()
        keep.append(parser)
    else:
        from tests.g4.detectors import construct
        from tests.g4.kit import Kit

        kit = Kit()
        geo = construct(kit, args.build, json.loads(args.params))
        world_pv = geo.world_pv
        keep.append(kit)
    volumes, placements = _walk(world_pv)
    keep.append(placements)
    sensitive = sensitive_volumes(g4)
    sensitive_ids = {lv.GetInstanceID() for lv in sensitive}
    sensitive_pvs = {pv for pv in placements if pv.GetLogicalVolume().GetInstanceID() in sensitive_ids}
    wls = _has_wls(volumes)
    off = list(ALWAYS_OFF) + (list(TRIMMED_OFF) if args.trim and not wls else [])

    # Mutable cells shared by the callbacks (locals are cheaper than attributes in the hot path).
    event_start = [0]  # global index of the current event's first photon
    roots: dict[int, int] = {}  # secondary track ID -> primary track ID (WLS), per event
    counts = [0, 0]  # ignored SD calls, hits matching no PMTINFO position
    seconds = [0.0, 0.0]  # in GeneratePrimaries, in ProcessHits
    detected_tracks: set[int] = set()
    # One tuple per hit: photon, channel, time, energy, position (3), direction (3) [, polarisation (3)].
    rows: list[tuple[Any, ...]] = []
    record, fates_on, perf_counter = rows.append, args.fates, time.perf_counter
    with_pol = args.polarisation
    width = 13 if with_pol else 10
    channel_of: dict[tuple[float, float, float], int] = {}  # global translation at depth 0 -> channel

    def locate(touchable: Any, depth0: tuple[float, float, float]) -> int:
        """Channel of the first volume up the history whose translation is a PMTINFO position."""
        channel = channels.find(*depth0)
        depth = 1
        while channel < 0 and depth <= touchable.GetHistoryDepth():
            t = touchable.GetTranslation(depth)
            channel = channels.find(t.x, t.y, t.z)
            depth += 1
        return channel

    class PhotonSD(g4.G4VSensitiveDetector):  # type: ignore[misc]
        def ProcessHits(self, step: Any, _history: Any) -> bool:
            t0 = perf_counter()
            track = step.GetTrack()
            # During a boundary detection the track still stands in the pre-step volume.
            if track.GetVolume() in sensitive_pvs:
                counts[0] += 1  # a step inside a sensitive volume, not a boundary detection
                return False
            post = step.GetPostStepPoint()
            tid = track.GetTrackID()
            touchable = post.GetTouchable()
            t = touchable.GetTranslation(0)
            key = (t.x, t.y, t.z)
            channel = channel_of.get(key)
            if channel is None:
                channel = channel_of[key] = locate(touchable, key)
            if channel < 0:
                counts[1] += 1
            p, d = post.GetPosition(), post.GetMomentumDirection()
            row: tuple[Any, ...] = (event_start[0] + roots.get(tid, tid) - 1, channel, post.GetGlobalTime(),
                   post.GetKineticEnergy(), p.x, p.y, p.z, d.x, d.y, d.z)
            if with_pol:
                pol = post.GetPolarization()
                row += (pol.x, pol.y, pol.z)
            record(row)
            if fates_on:
                detected_tracks.add(tid)
            seconds[1] += perf_counter() - t0
            return True

    class Detector(g4.G4VUserDetectorConstruction):  # type: ignore[misc]
        def Construct(self) -> Any:
            return world_pv

        def ConstructSDandField(self) -> None:
            sd = PhotonSD("photocathodes")
            g4.G4SDManager.GetSDMpointer().AddNewDetector(sd)
            for lv in sensitive:
                lv.SetSensitiveDetector(sd)
            keep.append(sd)

    class Physics(g4.G4VModularPhysicsList):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.RegisterPhysics(g4.G4OpticalPhysics())

        def ConstructParticle(self) -> None:
            super().ConstructParticle()
            # G4OpticalPhysics aborts unless e- has a process manager; none of these needs data.
            g4.G4Electron.ElectronDefinition()
            g4.G4Positron.PositronDefinition()
            g4.G4Gamma.GammaDefinition()
            g4.G4Proton.ProtonDefinition()

    cols = {k: photons[k].tolist() for k in ("pos", "dir", "pol")}
    energies = (hc / (photons["wavelength"] * g4.nm)).tolist()
    times = (photons["time"] * g4.ns).tolist()
    batch = {"start": 0, "stop": 0}
    per_event = args.max_photons_per_event

    class Source(g4.G4VUserPrimaryGeneratorAction):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.gun = g4.G4ParticleGun(1)
            self.gun.SetParticleDefinition(g4.G4OpticalPhoton.OpticalPhotonDefinition())
            self.vectors = (g4.G4ThreeVector(), g4.G4ThreeVector(), g4.G4ThreeVector())

        def GeneratePrimaries(self, event: Any) -> None:
            t0 = time.perf_counter()
            start = batch["start"] + event.GetEventID() * per_event
            stop = min(start + per_event, batch["stop"])
            event_start[0] = start
            roots.clear()
            gun = self.gun
            # Three vectors reused (the gun copies them): one binding call each instead of a new object.
            vp, vd, ve = self.vectors
            set_p, set_d, set_e = vp.set, vd.set, ve.set
            set_pos, set_dir, set_pol = gun.SetParticlePosition, gun.SetParticleMomentumDirection, \
                gun.SetParticlePolarization
            set_energy, set_time, generate = gun.SetParticleEnergy, gun.SetParticleTime, gun.GeneratePrimaryVertex
            pos, dirs, pols = cols["pos"], cols["dir"], cols["pol"]
            for i in range(start, stop):
                set_p(*pos[i])
                set_pos(vp)
                set_d(*dirs[i])
                set_dir(vd)
                set_e(*pols[i])
                set_pol(ve)
                set_energy(energies[i])
                set_time(times[i])
                generate(event)
            seconds[0] += time.perf_counter() - t0

    class Stacking(g4.G4UserStackingAction):  # type: ignore[misc]
        """Maps each WLS secondary to its primary (track IDs are set before ClassifyNewTrack)."""

        def ClassifyNewTrack(self, track: Any) -> Any:
            parent = track.GetParentID()
            if parent > 0:
                roots[track.GetTrackID()] = roots.get(parent, parent)
            return g4.G4ClassificationOfNewTrack.fUrgent

    fates = dict.fromkeys(FATES, 0)
    border_pairs = set(g4.G4LogicalBorderSurface.GetSurfaceTable()) if fates_on else set()
    skin_ids = {lv.GetInstanceID() for lv in g4.G4LogicalSkinSurface.GetSurfaceTable()} if fates_on else set()
    keep.append(border_pairs)

    class Fates(g4.G4UserTrackingAction):  # type: ignore[misc]
        def PostUserTrackingAction(self, track: Any) -> None:
            tid = track.GetTrackID()
            if tid in detected_tracks:
                detected_tracks.discard(tid)
                fates["detected"] += 1
                return
            step = track.GetStep()
            post = step.GetPostStepPoint()
            proc = post.GetProcessDefinedStep()
            name = proc.GetProcessName() if proc is not None else ""
            if name == "OpAbsorption":
                fates["bulk_absorbed"] += 1
            elif name == "OpWLS":
                fates["wls_absorbed"] += 1
            elif name in ("Transportation", "OpBoundary"):
                # Killed on a boundary: by an optical surface (absorbed there), else because the
                # next volume has no RINDEX or there is none (left the detector).
                pre_pv = step.GetPreStepPoint().GetTouchable().GetVolume()
                post_pv = post.GetTouchable().GetVolume()
                on_surface = (pre_pv.GetLogicalVolume().GetInstanceID() in skin_ids
                              or (post_pv is not None
                                  and ((pre_pv, post_pv) in border_pairs
                                       or post_pv.GetLogicalVolume().GetInstanceID() in skin_ids)))
                fates["surface_absorbed" if on_surface else "escaped"] += 1
            else:
                fates["other"] += 1

    class Actions(g4.G4VUserActionInitialization):  # type: ignore[misc]
        def Build(self) -> None:
            self.SetUserAction(Source())
            if wls:
                self.SetUserAction(Stacking())
            if fates_on:
                self.SetUserAction(Fates())

    rm.SetUserInitialization(Detector())
    rm.SetUserInitialization(Physics())
    rm.SetUserInitialization(Actions())
    ui = g4.G4UImanager.GetUIpointer()
    for cmd in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0", "/tracking/verbose 0",
                "/process/optical/verbose 0", "/process/optical/boundary/setInvokeSD true",
                f"/process/optical/wls/setTimeProfile {args.wls_time_profile}",
                *(f"/process/optical/processActivation {p} false" for p in off)):
        ui.ApplyCommand(cmd)
    rm.Initialize()
    s1 = 1 + (args.seed * 7919 + 12345) % 2_147_483_000
    s2 = 1 + (args.seed * 104729 + 67890) % 2_147_483_000
    ui.ApplyCommand(f"/random/setSeeds {s1} {s2}")

    def beam_on(start: int, stop: int) -> None:
        batch["start"], batch["stop"] = start, stop
        if stop > start:
            rm.BeamOn(math.ceil((stop - start) / per_event))

    # Warm-up (physics tables, voxels): the first photons once, their hits discarded.
    warm = min(args.warmup, n)
    beam_on(0, warm)
    rows.clear()
    fates.update(dict.fromkeys(FATES, 0))
    counts[:] = [0, 0]
    seconds[:] = [0.0, 0.0]

    if args.barrier:
        barrier = Path(args.barrier)
        (barrier / f"ready.{args.index}").touch()
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while len(list(barrier.glob("ready.*"))) < args.processes:
            if time.monotonic() > deadline:
                raise TimeoutError("the other Geant4 processes never reached the start barrier")
            time.sleep(0.001)
    start_unix, c0, w0 = time.time(), time.process_time(), time.perf_counter()
    beam_on(0, n)
    wall, cpu, end_unix = time.perf_counter() - w0, time.process_time() - c0, time.time()

    h = len(rows)
    table = np.asarray(rows, dtype=np.float64).reshape(h, width)
    out: dict[str, Any] = {
        "photon": table[:, 0].astype(np.int64),
        "channel": table[:, 1].astype(np.int32),
        "time_ns": table[:, 2] / g4.ns,
        "wavelength_nm": hc / table[:, 3] / g4.nm if h else np.zeros(0),
        "pos": table[:, 4:7] / g4.mm,
        "dir": table[:, 7:10].copy(),
    }
    if with_pol:
        out["pol"] = table[:, 10:13].copy()
    info = {
        "n_photons": n, "n_hits": h, "seed": args.seed, "random_seeds": [s1, s2],
        "beamon_wall_s": wall, "beamon_cpu_s": cpu, "generate_s": seconds[0], "sd_s": seconds[1],
        "start_unix": start_unix, "end_unix": end_unix, "warmup_photons": warm,
        "photons_per_event": per_event, "events": math.ceil(n / per_event) if n else 0,
        "geant4": geant4_version(), "geometry": str(args.gdml) if args.gdml else f"build:{args.build}",
        "processes_off": off, "wls_materials": wls, "wls_time_profile": args.wls_time_profile,
        "sensitive_volumes": sorted({lv.GetName() for lv in sensitive}),
        "unmatched_hits": counts[1], "ignored_sd_calls": counts[0],
        "fates": fates if args.fates else None,
    }
    out["info"] = np.asarray(json.dumps(info))
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Propagate optical photons through a GDML file in Geant4")
    geo = ap.add_mutually_exclusive_group(required=True)
    geo.add_argument("--gdml", type=Path, help="GDML file (read without schema validation)")
    geo.add_argument("--build", help="construct this tests.g4 detector in memory instead of reading GDML")
    ap.add_argument("--params", default="{}", help="with --build: JSON keyword parameters")
    ap.add_argument("--ratdb", required=True, type=Path, help="RATDB JSON with the PMTINFO table")
    ap.add_argument("--photons", required=True, type=Path, help="IN.npz: pos, dir, pol, wavelength, time")
    ap.add_argument("--out", required=True, type=Path, help="OUT.npz")
    ap.add_argument("--seed", required=True, type=int)
    ap.add_argument("--trim", action="store_true", help="also switch OpWLS/OpWLS2 off (unless WLS materials)")
    ap.add_argument("--max-photons-per-event", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=1000, help="photons run once (and discarded) before timing")
    ap.add_argument("--fates", action="store_true", help="count photon fates (a Python call per track)")
    ap.add_argument("--polarisation", action="store_true", help="also record each hit's polarisation")
    ap.add_argument("--wls-time-profile", default="exponential", choices=("exponential", "delta"))
    ap.add_argument("--barrier", help="directory: start BeamOn together with --processes others")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args(argv)
    if args.max_photons_per_event < 1:
        ap.error("--max-photons-per-event must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out = simulate(args)
    tmp = args.out.with_name(args.out.name + ".part.npz")
    np.savez(tmp, **out)
    tmp.replace(args.out)
    sys.stdout.write("SIMULATED " + str(out["info"]) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: Geant4 objects freed in Python's order can crash at exit.
    os._exit(0)


if __name__ == "__main__":
    main()
