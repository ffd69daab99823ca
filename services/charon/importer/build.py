"""GDML (+ RATDB PMTINFO) -> a charon :class:`~charon.engine.detector.Detector` with a scene.

Steps: read the GDML (``charon.gdml``), walk the placement tree and resolve every placement's
optical surfaces (``placements``), decide which placements are PMT channels (``pmts``), mesh each
solid once (``charon.gdml.solids``) and make every placed volume an instance of its solid's shape,
and convert materials and surfaces (``optics``).

Placements that cannot affect a photon are left out, as Geant4's boundary process would ignore
their boundaries: a volume of its mother's material with no surface that acts between equal
materials (RAT's water-in-water PMT envelopes); their daughters stay. Zero-volume solids (RAT's
1e-7 mm central gap) are left out too. Each omission is reported once.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from charon.engine.detector import Channels, Detector, Material, Scene, Surface
from charon.errors import DetectorError
from charon.importer.optics import Notes, material_from_gdml, surface_from_gdml
from charon.importer.placements import Tree, channel_of_nodes, resolve_surfaces, walk
from charon.importer.pmts import ChannelMap, match_pmtinfo, match_volume_pattern

F64 = npt.NDArray[np.float64]
#: Version of the import rules: part of the import cache key (bump when the result would change).
IMPORTER_VERSION = 1
DEFAULT_CHORD_MM = 0.5
#: Solids thinner than this (2 V / A, mm) are zero-thickness gaps and are left out.
MIN_THICKNESS_MM = 1e-3


@dataclass(frozen=True)
class ImportOptions:
    """What, besides the files, decides the imported detector."""

    ratdb: Path | None = None
    world: str | None = None
    pmt_volume: str | None = None
    chord_mm: float = DEFAULT_CHORD_MM
    #: Keep spheres, ellipsoids, tubes and boxes exact (analytic) instead of meshed.
    analytic: bool = True

    def key(self) -> dict[str, Any]:
        return {"world": self.world, "pmt_volume": self.pmt_volume, "chord_mm": float(self.chord_mm),
                "analytic": self.analytic, "importer": IMPORTER_VERSION}


@dataclass
class ImportReport:
    """The detector and what the import said about it."""

    detector: Detector
    notes: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_gdml(gdml: Path, options: ImportOptions | None = None) -> ImportReport:
    """Import a Geant4/RAT-PAC GDML file (see the module docstring); DetectorError on bad input."""
    from charon.gdml import read_gdml
    from charon.gdml.solids import tessellate

    opts = options or ImportOptions()
    if not opts.chord_mm > 0:
        raise DetectorError(f"chord tolerance must be > 0 mm, got {opts.chord_mm}")
    gdml = Path(gdml)
    notes = Notes()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    doc = read_gdml(gdml, world=opts.world)
    timings["parse_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tree = resolve_surfaces(doc, walk(doc), notes)
    nodes = tree.nodes
    timings["walk_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cmap = _channels(nodes, opts)
    node_channel = channel_of_nodes(nodes, cmap.matched)
    timings["match_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    surfaces = {name: surface_from_gdml(doc.optical_surfaces[name], notes)
                for name in sorted({s for s in (*tree.exit_surface, *tree.enter_surface) if s is not None})}
    materials_used = sorted({doc.volumes[n.lv].material for n in nodes})
    materials: dict[str, Material] = {}
    for mname in materials_used:
        if mname not in doc.materials:
            raise DetectorError(f"{gdml}: material {mname!r} is used but not defined")
        materials[mname] = material_from_gdml(doc.materials[mname], notes)
    timings["optics_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scene, counts = _scene(doc, tree, node_channel, materials, surfaces, opts, notes, tessellate)
    timings["mesh_s"] = time.perf_counter() - t0
    counts["channels"] = int(cmap.positions.shape[0])
    _check_channels(scene, cmap, notes)

    # Names in the detector model are the converted ones (no '/').
    mat_objs = {m.name: m for m in materials.values()}
    surf_objs = {s.name: s for s in surfaces.values()}
    provenance: dict[str, Any] = {
        "source": {"gdml": gdml.name, "gdml_sha256": sha256_of(gdml),
                   "ratdb": None if opts.ratdb is None else Path(opts.ratdb).name,
                   "ratdb_sha256": None if opts.ratdb is None else sha256_of(Path(opts.ratdb))},
        "import": opts.key(),
        "world": doc.world,
        "notes": list(notes.lines),
        "counts": counts,
    }
    detector = Detector(name=gdml.stem, materials=mat_objs, surfaces=surf_objs, scene=scene,
                        channels=Channels(cmap.positions, cmap.types, cmap.directions), provenance=provenance)
    return ImportReport(detector, list(notes.lines), timings, counts)


def _channels(nodes: list[Any], opts: ImportOptions) -> ChannelMap:
    if opts.ratdb is not None:
        from charon.ratdb import read_pmtinfo

        info = read_pmtinfo(Path(opts.ratdb))
        if opts.pmt_volume is not None:
            raise DetectorError("give either a RATDB PMTINFO (--ratdb) or --pmt-volume, not both")
        return match_pmtinfo(nodes, info.positions, info.types, info.directions,
                             source=f"{Path(opts.ratdb).name} PMTINFO")
    if opts.pmt_volume is not None:
        return match_volume_pattern(nodes, opts.pmt_volume)
    raise DetectorError("a GDML detector needs its PMTs: give a RATDB file with PMTINFO (--ratdb) or "
                        "--pmt-volume REGEX naming the PMT logical volumes")


def _scene(doc: Any, tree: Tree, node_channel: npt.NDArray[np.int32], materials: dict[str, Material],
           surfaces: dict[str, Surface], opts: ImportOptions, notes: Notes, tessellate: Any
           ) -> tuple[Scene, dict[str, int]]:
    nodes = tree.nodes
    mat_index = {name: i for i, name in enumerate(sorted(m.name for m in materials.values()))}
    gdml_mat = {gname: mat_index[m.name] for gname, m in materials.items()}
    surf_sorted = sorted(s.name for s in surfaces.values())
    surf_index = {gname: surf_sorted.index(s.name) for gname, s in surfaces.items()}
    surf_model = {gname: s.model for gname, s in surfaces.items()}
    from charon.engine.detector.scene import analytic_shape
    from charon.gdml import analytic_form

    shapes: dict[str, int] = {}
    shape_meshes: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]] = []
    shape_forms: list[tuple[int, tuple[float, ...]]] = []
    degenerate: set[str] = set()
    volume_names: dict[str, int] = {}
    rows: list[tuple[int, int, int, int, int, int, int, int]] = []
    transforms: list[F64] = []
    omitted_same = 0
    for i, node in enumerate(nodes):
        if i == 0:
            continue
        lv = doc.volumes[node.lv]
        m_in = gdml_mat[lv.material]
        m_out = gdml_mat[doc.volumes[nodes[node.mother].lv].material]
        s_exit, s_enter = tree.exit_surface[i], tree.enter_surface[i]
        if m_in == m_out and all(s is None or surf_model[s] == "dielectric_dielectric" for s in (s_exit, s_enter)):
            omitted_same += 1
            continue
        solid = lv.solid
        if solid not in shapes and solid not in degenerate:
            mesh = tessellate(doc, solid, opts.chord_mm)
            v = np.asarray(mesh.vertices, np.float64)
            f = np.asarray(mesh.faces, np.int32)
            if f.shape[0] == 0 or _mean_thickness(v, f) < MIN_THICKNESS_MM:
                degenerate.add(solid)
                notes.add(f"solid {solid!r} has no volume at chord {opts.chord_mm} mm and is left out "
                          "(a zero-thickness gap)")
            else:
                shapes[solid] = len(shape_meshes)
                shape_meshes.append((v.astype(np.float32), f))
                shape_forms.append(analytic_shape(analytic_form(doc, solid)) if opts.analytic
                                   else (0, ()))
        if solid in degenerate:
            continue
        vol = volume_names.setdefault(node.lv, len(volume_names))
        rows.append((shapes[solid], m_in, m_out, -1 if s_exit is None else surf_index[s_exit],
                     -1 if s_enter is None else surf_index[s_enter], int(node_channel[i]), vol, i))
        transforms.append(node.transform[:3, :])
    if omitted_same:
        notes.add(f"{omitted_same} placed volume(s) of their mother's material with no surface are left out "
                  "(Geant4 sees no boundary there)")
    if not rows:
        raise DetectorError(f"{doc.path}: no placed volume can affect a photon (every volume is of its "
                            "mother's material or has no volume)")
    table = np.asarray(rows, dtype=np.int32)
    vstart = np.concatenate([[0], np.cumsum([v.shape[0] for v, _ in shape_meshes])])
    tstart = np.concatenate([[0], np.cumsum([f.shape[0] for _, f in shape_meshes])])
    shape_names = sorted(shapes, key=shapes.__getitem__)
    kinds = np.array([k for k, _ in shape_forms], np.int32)
    params = np.zeros((len(shape_forms), 6))
    for row, (_, values) in enumerate(shape_forms):
        params[row, :len(values)] = values
    scene = Scene(
        np.concatenate([v for v, _ in shape_meshes]), np.concatenate([f for _, f in shape_meshes]),
        vstart, tstart, np.asarray(transforms), table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 4],
        table[:, 5], table[:, 6], volume_names=tuple(volume_names), shape_names=tuple(shape_names),
        shape_kind=kinds, shape_params=params)
    counts = {"placements": len(nodes) - 1, "instances": scene.n_instances, "shapes": scene.n_shapes,
              "analytic_shapes": int(np.count_nonzero(kinds)),
              "triangles": scene.n_triangles, "placed_triangles": scene.n_placed_triangles,
              "omitted_same_material": omitted_same, "degenerate_solids": len(degenerate)}
    return scene, counts


def _check_channels(scene: Scene, cmap: ChannelMap, notes: Notes) -> None:
    present = np.zeros(cmap.positions.shape[0], dtype=bool)
    ch = scene.channel[scene.channel >= 0]
    present[ch] = True
    if not present.all():
        missing = np.flatnonzero(~present)
        notes.add(f"{missing.size} channel(s) have no traced volume and can never be hit (first: "
                  f"{', '.join(str(int(k)) for k in missing[:8])})")


def _mean_thickness(v: F64, f: npt.NDArray[np.int32]) -> float:
    """2 V / A of a closed mesh: the thickness of a slab, the radius of a sphere over 1.5."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cr = np.cross(b - a, c - a)
    area = 0.5 * float(np.linalg.norm(cr, axis=1).sum())
    volume = float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)
    return 2.0 * volume / area if area > 0 else 0.0
