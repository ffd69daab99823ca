"""What a detector holds, for people: the ``charon detector info`` summary and ``plot`` picture.

An imported detector is thousands of placed volumes; a physicist needs to see at a glance that the
import took what they meant: how many volumes, materials, surfaces and PMTs, the notes the import
made, and a drawing of sections through the detector with the PMT positions on them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt

from charon.engine.detector import Detector

F64 = npt.NDArray[np.float64]


def summary(det: Detector) -> list[str]:
    """Lines describing ``det`` (see the module docstring)."""
    out = [f"detector {det.name!r}", f"  fingerprint   {det.fingerprint}"]
    src = det.provenance.get("source") if det.provenance else None
    if src:
        out.append(f"  source        {src.get('gdml')} (sha256 {str(src.get('gdml_sha256'))[:16]})"
                   + (f" + {src.get('ratdb')} (sha256 {str(src.get('ratdb_sha256'))[:16]})" if src.get("ratdb") else ""))
    if det.vessel is not None and det.pmts is not None:
        v = det.vessel
        size = f"radius {v.radius:g} mm" + (f", half-height {v.half_height:g} mm" if v.half_height else "")
        out.append(f"  geometry      analytic {v.shape}, {size}; {len(det.pmts)} PMT patches of radius "
                   f"{det.pmts.radius:g} mm")
    if det.scene is not None:
        sc = det.scene
        out.append(f"  geometry      scene: {sc.n_instances} placed volumes of {len(sc.volume_names)} logical "
                   f"volumes, {sc.n_shapes} distinct solids")
        out.append(f"  triangles     {sc.n_triangles} stored, {sc.n_placed_triangles} placed")
        counts = Counter(sc.volume_names[i] for i in sc.volume)
        top = ", ".join(f"{name} x{n}" for name, n in counts.most_common(6))
        out.append(f"  volumes       {top}{' ...' if len(counts) > 6 else ''}")
    if det.mesh is not None:
        out.append(f"  mesh          {det.mesh.n_triangles} triangles")
    mats = []
    for name, m in det.materials.items():
        if m.refractive_index is None:
            mats.append(f"{name} (no RINDEX)")
        else:
            mats.append(f"{name} (n={float(m.refractive_index(420.0)[()]):.4g})")
    out.append(f"  materials     {len(det.materials)}: {', '.join(mats)}")
    out.append(f"  surfaces      {len(det.surfaces)}: "
               + ", ".join(f"{n} ({s.model})" for n, s in det.surfaces.items()))
    ch = det.channel_table
    types = Counter(int(t) for t in ch.channel_type)
    lo, hi = ch.positions.min(axis=0), ch.positions.max(axis=0)
    out.append(f"  PMTs          {len(ch)} channels, types {dict(sorted(types.items()))}")
    out.append(f"  PMT extent    x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}, "
               f"z {lo[2]:.1f}..{hi[2]:.1f} mm")
    for note in (det.provenance.get("notes") or []) if det.provenance else []:
        out.append(f"  note          {note}")
    return out


def _section(det: Detector, axis: int) -> list[F64]:
    """Line segments (k, 2, 3) where the plane through the origin normal to ``axis`` cuts the scene."""
    sc = det.scene
    if sc is None:
        return []
    lo, hi = sc.world_bounds()
    crossing = np.flatnonzero((lo[:, axis] <= 0.0) & (hi[:, axis] >= 0.0))
    segments: list[F64] = []
    for start in range(0, crossing.size, 256):
        v, f, _ = sc.world_mesh(crossing[start:start + 256].tolist())
        if f.shape[0] == 0:
            continue
        tri = v[f]
        d = tri[:, :, axis]
        sign = d > 0
        cut = sign.any(axis=1) & ~sign.all(axis=1)
        for t, dd in zip(tri[cut], d[cut], strict=True):
            pts = []
            for a, b in ((0, 1), (1, 2), (2, 0)):
                if (dd[a] > 0) != (dd[b] > 0):
                    w = dd[a] / (dd[a] - dd[b])
                    pts.append(t[a] + w * (t[b] - t[a]))
            if len(pts) == 2:
                segments.append(np.asarray(pts))
    return segments


def plot(det: Detector, path: str | Path) -> Path:
    """Write a PNG: sections through the origin (planes x=0, y=0, z=0) and the PMT positions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    ch = det.channel_table.positions
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6))
    planes = ((2, "z = 0", (0, 1)), (1, "y = 0", (0, 2)), (0, "x = 0", (1, 2)))
    names = "xyz"
    for ax, (axis, title, (i, j)) in zip(axes, planes, strict=True):
        if det.scene is not None:
            segs = _section(det, axis)
            if segs:
                ax.add_collection(LineCollection([s[:, [i, j]] for s in segs], colors="0.2", linewidths=0.6))
        elif det.vessel is not None:
            v = det.vessel
            if v.shape == "sphere" or axis == 2:
                circ = np.linspace(0, 2 * np.pi, 361)
                ax.plot(v.radius * np.cos(circ), v.radius * np.sin(circ), color="0.2", lw=0.8)
            else:
                h, r = v.half_height or 0.0, v.radius
                ax.plot([-r, r, r, -r, -r], [-h, -h, h, h, -h], color="0.2", lw=0.8)
        near = np.abs(ch[:, axis]) <= max(1.0, 0.05 * float(np.ptp(ch[:, axis]) or 1.0))
        ax.scatter(ch[~near, i], ch[~near, j], s=2, c="tab:blue", alpha=0.25, label="PMTs (projected)")
        ax.scatter(ch[near, i], ch[near, j], s=6, c="tab:red", label="PMTs near the plane")
        ax.set_title(f"section {title}")
        ax.set_xlabel(f"{names[i]} (mm)")
        ax.set_ylabel(f"{names[j]} (mm)")
        ax.set_aspect("equal")
        ax.autoscale_view()
    axes[0].legend(loc="upper right", fontsize=7)
    fig.suptitle(f"{det.name}: {det.n_channels} PMTs, fingerprint {det.fingerprint[:12]}")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
