"""``read_gdml``: a GDML file into a checked ``GdmlDocument``; the data model is re-exported here.

The file is read in one pass in document order, as Geant4 reads it, so everything must be
defined before it is used. ``<define>``, ``<materials>``, ``<solids>``, ``<structure>`` and
``<setup>`` are read; ``<userinfo>`` auxiliaries are kept as data; ``<extension>`` is skipped,
as Geant4 skips it (it holds user-code extensions such as colours, no geometry). Any other element
or attribute is an error. Afterwards the world is checked to exist and to be a logical volume.

The world is the volume named by ``<setup><world ref>``; with several setups Geant4's default
setup name "Default" wins, else the first setup in the file. ``world=`` selects a logical volume
by name instead (exactly, or by its name without the ``0x...`` suffix when that is unique).
"""

from __future__ import annotations

from pathlib import Path

from charon.gdml.context import ReadContext
from charon.gdml.errors import GdmlError
from charon.gdml.model import (
    Assembly,
    BorderSurface,
    Component,
    DichroicData,
    Element,
    GdmlDocument,
    Isotope,
    LogicalVolume,
    Material,
    OpticalSurface,
    Placement,
    Property,
    SkinSurface,
    Solid,
    strip_pointer_suffix,
)
from charon.gdml.read_define import read_define
from charon.gdml.read_materials import read_materials
from charon.gdml.read_solids import read_solids
from charon.gdml.read_structure import read_setup, read_structure
from charon.gdml.xmltree import Node, parse_xml, read_xml

__all__ = [
    "Assembly", "BorderSurface", "Component", "DichroicData", "Element", "GdmlDocument", "Isotope",
    "LogicalVolume", "Material", "OpticalSurface", "Placement", "Property", "SkinSurface", "Solid",
    "parse_gdml", "read_gdml", "strip_pointer_suffix",
]


def read_gdml(path: str | Path, world: str | None = None) -> GdmlDocument:
    """Read a GDML file; any problem is a ``GdmlError`` naming the file, line and element."""
    return _document(read_xml(path), str(path), world)


def parse_gdml(text: str | bytes, path: str = "<string>", world: str | None = None) -> GdmlDocument:
    """``read_gdml`` for a document already in memory (``path`` is only used in messages)."""
    return _document(parse_xml(text, path), path, world)


def _document(root: Node, path: str, world: str | None) -> GdmlDocument:
    ctx = ReadContext(path)
    if root.tag != "gdml":
        ctx.fail(root, "the root element must be <gdml>")
    for node in root.children:
        tag = node.tag
        if tag == "define":
            read_define(ctx, node)
        elif tag == "materials":
            read_materials(ctx, node)
        elif tag == "solids":
            read_solids(ctx, node)
        elif tag == "structure":
            read_structure(ctx, node)
        elif tag == "setup":
            read_setup(ctx, node)
        elif tag == "userinfo":
            ctx.check_children(node, ("auxiliary",))
            for aux in node.children:
                ctx.userinfo.append((aux.attrib.get("auxtype", ""), aux.attrib.get("auxvalue", "")))
        elif tag == "extension":
            continue
        else:
            ctx.fail(node, "unexpected element in <gdml> (allowed: <define>, <materials>, <solids>, "
                     "<structure>, <setup>, <userinfo>, <extension>)")
    return GdmlDocument(
        path=path, materials=ctx.materials, optical_surfaces=ctx.optical_surfaces,
        skin_surfaces=tuple(ctx.skin_surfaces), border_surfaces=tuple(ctx.border_surfaces),
        solids=ctx.solids, volumes=ctx.volumes, assemblies=ctx.assemblies,
        world=_world(ctx, root, world), physvols=ctx.physvols, elements=ctx.elements,
        isotopes=ctx.isotopes, setups={k: v[0] for k, v in ctx.setups.items()},
        userinfo=tuple(ctx.userinfo))


def _world(ctx: ReadContext, root: Node, requested: str | None) -> str:
    if requested is not None:
        if requested in ctx.volumes:
            return requested
        matches = [n for n in ctx.volumes if strip_pointer_suffix(n) == requested]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise GdmlError(f"world '{requested}' matches several volumes: {', '.join(matches)}", path=ctx.path)
        raise GdmlError(f"world '{requested}' is not a logical volume in this file", path=ctx.path)
    if not ctx.setups:
        ctx.fail(root, "no <setup> names the world volume (add <setup><world ref=.../></setup> or choose one)")
    name, line = ctx.setups["Default"] if "Default" in ctx.setups else next(iter(ctx.setups.values()))
    if name not in ctx.volumes:
        what = "an assembly, not a logical volume" if name in ctx.assemblies else "not defined"
        raise GdmlError(f"<world ref=\"{name}\">: the world volume is {what}", path=ctx.path, line=line)
    return name
