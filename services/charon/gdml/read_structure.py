"""``<structure>`` and ``<setup>``: logical volumes, placements, assemblies, skin and border surfaces.

As ``G4GDMLReadStructure``: each ``<volume>`` needs a ``<materialref>`` and a ``<solidref>`` and may
hold ``<physvol>`` placements and ``<auxiliary>`` (type, value) pairs; a physvol places a volume or
an assembly defined before it, with the passive rotation convention (``transforms``); a physvol
without a name gets ``<volumeref>_PV``, which is what Geant4's ``GeneratePhysvolName`` gives it
(Geant4 later strips ``0x...`` from it; the name is kept as written here). A border surface names
physvols already read (Geant4 looks them up in its physical-volume store at that point, the first
of a name wins); physvols inside an ``<assembly>`` cannot be named, since Geant4 renames them when it
imprints the assembly. Replicas, divisions, parameterised volumes and ``<file>`` references to other
GDML files are not supported and say so.
"""

from __future__ import annotations

from charon.gdml.context import ReadContext, Vec3
from charon.gdml.model import Assembly, BorderSurface, LogicalVolume, Placement, SkinSurface
from charon.gdml.read_materials import resolve_material
from charon.gdml.transforms import placement_transform
from charon.gdml.xmltree import Node

_UNSUPPORTED_CONTENT = {
    "replicavol": "replica volumes are not supported",
    "divisionvol": "division volumes are not supported",
    "paramvol": "parameterised volumes are not supported",
}


def read_structure(ctx: ReadContext, structure: Node) -> None:
    ctx.check_attributes(structure, ())
    _structure_body(ctx, structure)


def _structure_body(ctx: ReadContext, parent: Node) -> None:
    for node in parent.children:
        tag = node.tag
        if tag == "volume":
            _volume(ctx, node)
        elif tag == "assembly":
            _assembly(ctx, node)
        elif tag == "skinsurface":
            _skin_surface(ctx, node)
        elif tag == "bordersurface":
            _border_surface(ctx, node)
        elif tag == "loop":
            ctx.loop(node, lambda n: _structure_body(ctx, n))
        else:
            ctx.fail(node, "unexpected element in <structure> (allowed: <volume>, <assembly>, "
                     "<skinsurface>, <bordersurface>, <loop>)")


def _check_new_name(ctx: ReadContext, node: Node, name: str) -> None:
    if name in ctx.volumes or name in ctx.assemblies:
        first = ctx.volumes[name].line if name in ctx.volumes else ctx.assemblies[name].line
        ctx.fail(node, f"volume or assembly '{name}' is defined twice (first at line {first})")


class _VolumeContent:
    """What a ``<volume>``'s children (and its ``<loop>``s) give: material, solid, daughters."""

    def __init__(self, ctx: ReadContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.material: str | None = None
        self.solid: str | None = None
        self.auxiliary: list[tuple[str, str]] = []
        self.daughters: list[Placement] = []

    def read(self, parent: Node) -> None:
        ctx = self.ctx
        for child in parent.children:
            tag = child.tag
            if tag in ("materialref", "solidref"):
                self._reference(child)
            elif tag == "auxiliary":
                self.auxiliary.extend(_auxiliary(ctx, child))
            elif tag == "physvol":
                placement = _physvol(ctx, child, mother=self.name)
                if placement.volume == self.name:
                    ctx.fail(child, f"volume '{self.name}' places itself")
                self.daughters.append(placement)
                ctx.physvols.setdefault(placement.name, placement)
            elif tag == "loop":
                ctx.loop(child, self.read)
            elif tag in _UNSUPPORTED_CONTENT:
                ctx.fail(child, _UNSUPPORTED_CONTENT[tag])
            else:
                ctx.fail(child, "unexpected element in <volume> (allowed: <materialref>, <solidref>, "
                         "<physvol>, <auxiliary>, <loop>)")

    def _reference(self, child: Node) -> None:
        ctx = self.ctx
        if child.tag == "materialref":
            if self.material is not None:
                ctx.fail(child, "<materialref> given twice")
            self.material = resolve_material(ctx, child, ctx.ref(child))
        else:
            if self.solid is not None:
                ctx.fail(child, "<solidref> given twice")
            self.solid = ctx.lookup_solid(child, ctx.ref(child)).name


def _volume(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name",))
    name = ctx.name(node)
    _check_new_name(ctx, node, name)
    # Geant4 creates the logical volume before reading its daughters, so a physvol could name its own
    # volume; registering the name first lets that be reported as what it is.
    ctx.volumes[name] = LogicalVolume(name, "", "", (), (), node.line)
    content = _VolumeContent(ctx, name)
    content.read(node)
    if content.material is None:
        ctx.fail(node, "missing <materialref ref=...>")
    if content.solid is None:
        ctx.fail(node, "missing <solidref ref=...>")
    assert content.material is not None
    assert content.solid is not None
    ctx.volumes[name] = LogicalVolume(name, content.material, content.solid, tuple(content.daughters),
                                      tuple(content.auxiliary), node.line)


def _auxiliary(ctx: ReadContext, node: Node, prefix: str = "") -> list[tuple[str, str]]:
    """(auxtype, auxvalue) pairs, an auxunit appended as ``value*unit``; nested ones flattened with
    ``outer/inner`` types. Purely descriptive: charon's physics does not read them."""
    ctx.check_attributes(node, ("auxtype", "auxvalue", "auxunit"))
    ctx.check_children(node, ("auxiliary",))
    kind = prefix + node.attrib.get("auxtype", "")
    value = node.attrib.get("auxvalue", "")
    if node.attrib.get("auxunit"):
        value = f"{value}*{node.attrib['auxunit']}"
    out = [(kind, value)]
    for child in node.children:
        out.extend(_auxiliary(ctx, child, kind + "/"))
    return out


def _physvol(ctx: ReadContext, node: Node, mother: str) -> Placement:
    ctx.check_attributes(node, ("name", "copynumber"))
    ctx.check_children(node, ("volumeref", "file", "position", "rotation", "scale",
                              "positionref", "rotationref", "scaleref"))
    volume = None
    vectors: dict[str, Vec3] = {}
    for child in node.children:
        tag = child.tag
        if tag == "file":
            ctx.fail(child, "external files are not supported (merge the referenced GDML file into this one)")
        if tag == "volumeref":
            if volume is not None:
                ctx.fail(child, "<volumeref> given twice")
            volume = ctx.ref(child)
            if volume not in ctx.volumes and volume not in ctx.assemblies:
                ctx.fail(child, f"volume '{volume}' is not defined before this physvol")
            continue
        key = tag.removesuffix("ref")
        if key in vectors:
            ctx.fail(child, f"<{key}> (or <{key}ref>) given twice")
        if tag.endswith("ref"):
            vectors[key] = ctx.lookup_vector(child, key)
        else:
            category = {"position": "Length", "rotation": "Angle", "scale": "Scale"}[key]
            vectors[key] = ctx.vector(child, category, 1.0 if key == "scale" else 0.0)
    if volume is None:
        ctx.fail(node, "missing <volumeref ref=...>")
    scale = vectors.get("scale", (1.0, 1.0, 1.0))
    if any(abs(abs(s) - 1.0) >= 1e-12 for s in scale):
        ctx.fail(node, f"scale {list(scale)} is not a reflection: Geant4 places only +-1 scale "
                 "factors (it ignores or rejects others); use <scaledSolid> to scale a shape")
    raw_name = node.attrib.get("name") or f"{volume}_PV"
    name = ctx.generate_name(node, raw_name)
    zero = (0.0, 0.0, 0.0)
    transform = placement_transform(vectors.get("position", zero), vectors.get("rotation", zero),
                                    [1.0 if s > 0 else -1.0 for s in scale])
    transform.flags.writeable = False
    return Placement(name, volume, ctx.integer(node, "copynumber", 0), transform, node.line, mother)


def _assembly(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name",))
    name = ctx.name(node)
    _check_new_name(ctx, node, name)
    ctx.check_children(node, ("physvol",))
    daughters = []
    ctx.assemblies[name] = Assembly(name, (), node.line)
    for child in node.children:
        placement = _physvol(ctx, child, mother=name)
        if placement.volume == name:
            ctx.fail(child, f"assembly '{name}' places itself")
        daughters.append(placement)
    ctx.assemblies[name] = Assembly(name, tuple(daughters), node.line)


def _surface_property(ctx: ReadContext, node: Node) -> str:
    ref = node.attrib.get("surfaceproperty")
    if ref is None:
        ctx.fail(node, "missing attribute 'surfaceproperty' (the <opticalsurface> to use)")
    ref = ctx.generate_name(node, ref)
    if ref not in ctx.optical_surfaces:
        ctx.fail(node, f"optical surface '{ref}' is not defined (define it in <solids> first)")
    return ref


def _skin_surface(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name", "surfaceproperty"))
    ctx.check_children(node, ("volumeref",))
    if len(node.children) != 1:
        ctx.fail(node, f"needs exactly one <volumeref> (got {len(node.children)})")
    surface = _surface_property(ctx, node)
    volume = ctx.ref(node.children[0])
    if volume not in ctx.volumes:
        ctx.fail(node.children[0], f"volume '{volume}' is not defined before this skin surface")
    ctx.skin_surfaces.append(SkinSurface(ctx.name(node), surface, volume, node.line))


def _border_surface(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name", "surfaceproperty"))
    ctx.check_children(node, ("physvolref",))
    if len(node.children) != 2:
        ctx.fail(node, f"needs exactly two <physvolref> (got {len(node.children)})")
    surface = _surface_property(ctx, node)
    names = [ctx.ref(child) for child in node.children]
    # RAT-PAC writes border surfaces whose second physvol does not exist (it meant the other
    # volume's mother); the importer repairs one such name, so only two unknown names are an error.
    unknown = [(child, pv) for child, pv in zip(node.children, names, strict=True) if pv not in ctx.physvols]
    if len(unknown) == 2:
        child, pv = unknown[0]
        hint = " (the world volume has no physvol in GDML)" if pv.endswith("_PV") else ""
        ctx.fail(child, f"physvol '{pv}' is not defined before this border surface{hint}")
    ctx.border_surfaces.append(BorderSurface(ctx.name(node), surface, names[0], names[1], node.line))


def read_setup(ctx: ReadContext, setup: Node) -> None:
    ctx.check_attributes(setup, ("name", "version"))
    ctx.check_children(setup, ("world",))
    if len(setup.children) != 1:
        ctx.fail(setup, f"needs exactly one <world ref=...> (got {len(setup.children)})")
    name = setup.attrib.get("name", "")
    if name in ctx.setups:
        ctx.fail(setup, f"setup '{name}' is defined twice")
    world = ctx.ref(setup.children[0])
    ctx.setups[name] = (world, setup.children[0].line)
