"""The detector file (``.npz``) and the canonical form the fingerprint hashes.

A file is an uncompressed ``.npz``: the array ``header`` holds UTF-8 JSON (``{"format":
"charon-detector", "version": 2, ...}``) and every table and geometry array is stored under a
``/``-separated name. Version 1 files (analytic vessel + PMTs, optional mesh) are still read.
The canonical form is the same header without the labels (``name``, ``provenance``) plus the same
arrays, so a file's fingerprint is the fingerprint of the detector it holds.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from charon.engine.detector.analytic import PMTArray, Vessel
from charon.engine.detector.model import (
    FILE_FORMAT,
    FILE_VERSION,
    SURFACE_TABLES,
    Channels,
    Detector,
    Material,
    Surface,
    WavelengthTable,
)
from charon.errors import DetectorError

if TYPE_CHECKING:
    from charon.engine.detector.scene import Scene
    from charon.engine.mesh import MeshGeometry

Arrays = dict[str, npt.NDArray[Any]]
_MATERIAL_TABLES = ("refractive_index", "absorption_length", "scattering_length", "reemission_prob",
                    "reemission_cdf", "group_velocity")


def canonical_parts(det: Detector) -> tuple[dict[str, Any], Arrays]:
    """(JSON-able definition, named arrays): everything that affects the physics, no labels."""
    arrays: Arrays = {}
    materials: dict[str, Any] = {}
    for name in sorted(det.materials):
        m = det.materials[name]
        tables = [t for t in _MATERIAL_TABLES if getattr(m, t) is not None]
        for t in tables:
            tab: WavelengthTable = getattr(m, t)
            arrays[f"materials/{name}/{t}/wavelength"] = tab.wavelength
            arrays[f"materials/{name}/{t}/value"] = tab.value
        materials[name] = {"tables": tables, "reemission_time_ns": float(m.reemission_time_ns),
                           "reemission_profile": m.reemission_profile,
                           "reemission_redshift": bool(m.reemission_redshift)}
    surfaces: dict[str, Any] = {}
    for name in sorted(det.surfaces):
        s = det.surfaces[name]
        for t in SURFACE_TABLES:
            tab = getattr(s, t)
            arrays[f"surfaces/{name}/{t}/wavelength"] = tab.wavelength
            arrays[f"surfaces/{name}/{t}/value"] = tab.value
        surfaces[name] = {"tables": list(SURFACE_TABLES), "model": s.model}
    channels = det.channel_table
    arrays["channels/positions"] = channels.positions
    arrays["channels/channel_type"] = channels.channel_type
    arrays["channels/directions"] = channels.directions
    definition: dict[str, Any] = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "materials": materials,
        "surfaces": surfaces,
        "channels": {"count": len(channels), "stored": det.channels is not None},
        "vessel": None if det.vessel is None else det.vessel.canonical(),
        "pmts": None,
        "mesh": None,
        "scene": None,
    }
    if det.pmts is not None:
        arrays["pmts/positions"] = det.pmts.positions
        arrays["pmts/normals"] = det.pmts.normals
        arrays["pmts/channel_type"] = det.pmts.channel_type
        definition["pmts"] = {"radius": float(det.pmts.radius), "surface": det.pmts.surface,
                              "shape": det.pmts.shape, "count": len(det.pmts)}
    if det.mesh is not None:
        mesh_def, mesh_arrays = det.mesh.to_canonical()
        definition["mesh"] = mesh_def
        for k, a in mesh_arrays.items():
            arrays[f"mesh/{k}"] = np.asarray(a)
    if det.scene is not None:
        scene_def, scene_arrays = det.scene.to_canonical()
        definition["scene"] = scene_def
        for k, a in scene_arrays.items():
            arrays[f"scene/{k}"] = np.asarray(a)
    return definition, arrays


def save_detector(detector: Detector, path: Path) -> None:
    """Write ``detector`` as an uncompressed ``.npz`` with a JSON header (format version 2)."""
    definition, arrays = canonical_parts(detector)
    header = dict(definition, name=detector.name, provenance=detector.provenance)
    blob = np.frombuffer(json.dumps(header, sort_keys=True, allow_nan=False).encode(), dtype=np.uint8)
    payload: Arrays = {"header": blob}
    payload.update(arrays)
    with Path(path).open("wb") as fh:
        np.savez(fh, **payload)  # type: ignore[arg-type]


def load_detector(path: Path | None) -> Detector:
    """The detector stored at ``path`` (a ``.npz``), or the built-in reference detector when None."""
    if path is None:
        from charon.engine.detector.builders import reference_detector

        return reference_detector()
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise DetectorError(f"detector file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise DetectorError(f"detector file {str(path)!r} is a directory") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise DetectorError(f"detector file {str(path)!r} is not a charon detector (.npz with a charon header)"
                            ) from None
    try:
        return detector_from_arrays(arrays)
    except DetectorError as exc:
        raise DetectorError(f"detector file {str(path)!r}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, UnicodeDecodeError) as exc:
        raise DetectorError(f"detector file {str(path)!r} is malformed: {type(exc).__name__}: {exc}") from None


def detector_from_arrays(arrays: Arrays) -> Detector:
    """Rebuild a detector from a file's arrays (``header`` included); versions 1 and 2."""
    arrays = dict(arrays)
    if "header" not in arrays:
        raise DetectorError("missing 'header' entry (not a charon detector file)")
    header = json.loads(arrays.pop("header").tobytes().decode())
    if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
        raise DetectorError(f"header format is not {FILE_FORMAT!r}")
    version = header.get("version")
    if version not in (1, FILE_VERSION):
        raise DetectorError(f"unsupported format version {version!r} (this charon reads versions 1 and "
                            f"{FILE_VERSION})")
    tables = _Tables(arrays)
    materials = {name: tables.material(name, spec) for name, spec in dict(header["materials"]).items()}
    surfaces = {name: tables.surface(name, spec) for name, spec in dict(header["surfaces"]).items()}
    vessel, pmts = _analytic(header, arrays)
    channels = None
    if version != 1 and header["channels"].get("stored", True):
        channels = Channels(arrays["channels/positions"], arrays["channels/channel_type"],
                            arrays["channels/directions"])
        if len(channels) != int(header["channels"]["count"]):
            raise DetectorError(f"header says {header['channels']['count']} channels, arrays hold "
                                f"{len(channels)}")
    return Detector(name=str(header.get("name", "detector")), materials=materials, surfaces=surfaces,
                    vessel=vessel, pmts=pmts, mesh=_mesh(header, arrays), scene=_scene(header, arrays),
                    channels=channels, provenance=dict(header.get("provenance") or {}))


class _Tables:
    """Reads the named wavelength tables of a file's materials and surfaces."""

    def __init__(self, arrays: Arrays) -> None:
        self.arrays = arrays

    def table(self, prefix: str) -> WavelengthTable:
        try:
            return WavelengthTable(self.arrays[f"{prefix}/wavelength"], self.arrays[f"{prefix}/value"])
        except KeyError:
            raise DetectorError(f"missing table {prefix!r}") from None
        except DetectorError as exc:
            raise DetectorError(f"{prefix}: {exc}") from None

    def material(self, name: str, spec: dict[str, Any]) -> Material:
        present = set(spec["tables"])

        def opt(t: str) -> WavelengthTable | None:
            return self.table(f"materials/{name}/{t}") if t in present else None

        return Material(
            name=name,
            refractive_index=opt("refractive_index"),
            absorption_length=self.table(f"materials/{name}/absorption_length"),
            scattering_length=self.table(f"materials/{name}/scattering_length"),
            reemission_prob=self.table(f"materials/{name}/reemission_prob"),
            reemission_cdf=opt("reemission_cdf"),
            reemission_time_ns=float(spec["reemission_time_ns"]),
            group_velocity=opt("group_velocity"),
            reemission_profile=spec.get("reemission_profile", "exponential"),
            reemission_redshift=bool(spec.get("reemission_redshift", False)),
        )

    def surface(self, name: str, spec: dict[str, Any]) -> Surface:
        present = [t for t in SURFACE_TABLES if t in spec["tables"]]
        return Surface(name, **{t: self.table(f"surfaces/{name}/{t}") for t in present},
                       model=spec.get("model", "chroma"))


def _analytic(header: dict[str, Any], arrays: Arrays) -> tuple[Vessel | None, PMTArray | None]:
    if header.get("vessel") is None:
        return None, None
    v = header["vessel"]
    vessel = Vessel(shape=v["shape"], radius=float(v["radius"]), inner_material=str(v["inner_material"]),
                    outer_material=str(v["outer_material"]), surface=v["surface"],
                    half_height=None if v["half_height"] is None else float(v["half_height"]))
    pm = header["pmts"]
    pmts = PMTArray(positions=arrays["pmts/positions"], normals=arrays["pmts/normals"],
                    radius=float(pm["radius"]), surface=str(pm["surface"]),
                    channel_type=arrays["pmts/channel_type"], shape=pm["shape"])
    if len(pmts) != int(pm["count"]):
        raise DetectorError(f"header says {pm['count']} PMTs, arrays hold {len(pmts)}")
    return vessel, pmts


def _scene(header: dict[str, Any], arrays: Arrays) -> Scene | None:
    if header.get("scene") is None:
        return None
    from charon.engine.detector.scene import Scene

    try:
        return Scene.from_canonical(header["scene"], _sub(arrays, "scene/"))
    except ValueError as exc:
        raise DetectorError(f"scene: {exc}") from None


def _sub(arrays: Arrays, prefix: str) -> Arrays:
    return {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}


def _mesh(header: dict[str, Any], arrays: Arrays) -> MeshGeometry | None:
    if header.get("mesh") is None:
        return None
    from charon.engine.mesh import MeshError, MeshGeometry

    try:
        return MeshGeometry.from_arrays(_sub(arrays, "mesh/"))
    except MeshError as exc:
        raise DetectorError(f"mesh: {exc}") from None
