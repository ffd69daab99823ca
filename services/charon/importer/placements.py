"""The placement tree of a GDML detector, walked once: every placed volume with its world transform,
its mother, and the optical surfaces a photon meets leaving and entering it.

A Geant4 physical volume is one ``<physvol>`` element; placed inside a logical volume that is itself
placed many times, it stands for many placements (nodes here) that share its identity, which is
what Geant4's border surfaces refer to. Surfaces are resolved per node exactly as
``G4OpBoundaryProcess`` resolves them at run time: the border surface of the ordered pair
(pre-step volume, post-step volume) first, then the skin of the volume entered when entering a
daughter (else of the volume left), then the skin of the other one. Assemblies are imprinted into
their mother as Geant4 does: their parts become daughters of the assembly's mother.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from charon.errors import DetectorError
from charon.importer.optics import Notes

F64 = npt.NDArray[np.float64]
#: A physical volume's identity: that of its ``<physvol>`` placement record (shared by every node it
#: stands for).
PVKey = int
WORLD: PVKey = 0
#: Stands for "the mother of the other volume" in a repaired border surface (see below).
MOTHER: PVKey = -1


@dataclass(frozen=True, slots=True)
class Node:
    """One placed volume (the world is node 0)."""

    pv: PVKey
    pv_name: str
    lv: str
    mother: int           # node index, -1 for the world
    depth: int
    transform: F64        # (4, 4) frame -> world


@dataclass(frozen=True)
class Tree:
    nodes: list[Node]
    exit_surface: list[str | None]    # optical surface name leaving node i into its mother
    enter_surface: list[str | None]   # entering node i from its mother


def walk(doc: Any, max_nodes: int = 20_000_000) -> list[Node]:
    """Every placement under the world, depth first in document order (the world first)."""
    nodes = [Node(WORLD, "world", doc.world, -1, 0, np.eye(4))]

    stack: list[tuple[int, Any, F64]] = []

    def push_daughters(parent: int, daughters: Any, base: F64) -> None:
        stack.extend((parent, daughters[j], base) for j in range(len(daughters) - 1, -1, -1))

    push_daughters(0, doc.volumes[doc.world].daughters, np.eye(4))
    while stack:
        parent, placement, base = stack.pop()
        transform = base @ np.asarray(placement.transform, dtype=np.float64)
        if placement.volume in doc.assemblies:
            # Imprinted into the assembly's mother: the parts' mother is the parent node.
            push_daughters(parent, doc.assemblies[placement.volume].daughters, transform)
            continue
        if placement.volume not in doc.volumes:
            raise DetectorError(f"{doc.path}:{placement.line}: physvol {placement.name!r} places "
                                f"{placement.volume!r}, which is no volume or assembly")
        nodes.append(Node(id(placement), placement.name, placement.volume, parent, nodes[parent].depth + 1,
                          transform))
        if len(nodes) > max_nodes:
            raise DetectorError(f"{doc.path}: more than {max_nodes} placed volumes")
        push_daughters(len(nodes) - 1, doc.volumes[placement.volume].daughters, transform)
    return nodes


def physvol_keys(doc: Any) -> dict[str, PVKey]:
    """Physvol name -> identity of the first physvol of that name in document order (as Geant4's
    physical-volume store resolves a name; parts of assemblies are renamed when imprinted, so
    they have none)."""
    return {name: id(p) for name, p in doc.physvols.items()}


def resolve_surfaces(doc: Any, nodes: list[Node], notes: Notes) -> Tree:
    """Attach to every node the surface met leaving it and entering it (Geant4's precedence)."""
    keys = physvol_keys(doc)
    borders: dict[tuple[PVKey, PVKey], str] = {}
    for b in doc.border_surfaces:
        if b.surface not in doc.optical_surfaces:
            raise DetectorError(f"{doc.path}:{b.line}: bordersurface {b.name!r} uses unknown optical surface "
                                f"{b.surface!r}")
        k1, k2 = keys.get(b.pv1), keys.get(b.pv2)
        if k1 is None and k2 is None:
            raise DetectorError(f"{doc.path}:{b.line}: bordersurface {b.name!r} names physvols {b.pv1!r} and "
                                f"{b.pv2!r}, neither of which exists")
        if k1 is None or k2 is None:
            # RAT-PAC sometimes names a physvol that is not written; as Chroma's loader does, the
            # surface then lies between the other volume and its mother.
            missing = b.pv1 if k1 is None else b.pv2
            notes.add(f"border surface {b.name!r} names a physvol {missing!r} that does not exist; it is "
                      "applied between the other volume and its mother")
            k1 = MOTHER if k1 is None else k1
            k2 = MOTHER if k2 is None else k2
        if (k1, k2) in borders and borders[k1, k2] != b.surface:
            notes.add(f"border surfaces {borders[k1, k2]!r} and {b.surface!r} share a volume pair; the first "
                      "is used, as in Geant4")
            continue
        borders[k1, k2] = b.surface
    skins: dict[str, str] = {}
    for sk in doc.skin_surfaces:
        if sk.surface not in doc.optical_surfaces:
            raise DetectorError(f"{doc.path}:{sk.line}: skinsurface {sk.name!r} uses unknown optical surface "
                                f"{sk.surface!r}")
        if sk.volume not in doc.volumes:
            raise DetectorError(f"{doc.path}:{sk.line}: skinsurface {sk.name!r} names unknown volume "
                                f"{sk.volume!r}")
        if sk.volume in skins:
            notes.add(f"volume {sk.volume!r} has several skin surfaces; the first ({skins[sk.volume]!r}) is used")
            continue
        skins[sk.volume] = sk.surface
    exit_s: list[str | None] = [None]
    enter_s: list[str | None] = [None]
    for node in nodes[1:]:
        mother = nodes[node.mother]
        own_skin, mother_skin = skins.get(node.lv), skins.get(mother.lv)
        leave = borders.get((node.pv, mother.pv)) or borders.get((node.pv, MOTHER))
        enter = borders.get((mother.pv, node.pv)) or borders.get((MOTHER, node.pv))
        # Leaving into the mother: skin of the volume left, then of the one entered. Entering a
        # daughter: skin of the daughter entered first, then of the mother left. Both start with
        # this volume's own skin.
        exit_s.append(leave or own_skin or mother_skin)
        enter_s.append(enter or own_skin or mother_skin)
    return Tree(nodes, exit_s, enter_s)


def channel_of_nodes(nodes: list[Node], matched: Mapping[int, int]) -> npt.NDArray[np.int32]:
    """Each node's channel: its own match, else its mother's (a PMT's daughters carry its channel)."""
    out = np.full(len(nodes), -1, np.int32)
    for i, node in enumerate(nodes):
        own = matched.get(i)
        out[i] = own if own is not None else (out[node.mother] if node.mother >= 0 else -1)
    return out
