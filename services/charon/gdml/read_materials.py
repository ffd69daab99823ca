"""``<materials>``: isotopes, elements, materials and their optical property tables.

Read as ``G4GDMLReadMaterials`` does, keyed by the stripped name (Geant4 strips ``0x...`` from
material, element and isotope names and from references to them). Optical physics needs only
the property tables; densities, compositions, temperature, pressure and mean excitation energy
are kept as plain data. A reference to a ``G4_...`` material or an element symbol the file does
not define is what Geant4 builds from its NIST database, and is accepted as such.

Property tables (``<property name ref>``) point at a ``<matrix>``: two columns are (photon energy
in MeV, value), one column (a single value) is a constant property. ``<constproperty name value>``
is accepted too (Geant4 11.4's reader ignores it). Optical surfaces share ``read_property``; for
them a ``ref`` may also name a ``<constant>``, which is how Geant4's own writer stores constant
surface properties.
"""

from __future__ import annotations

import numpy as np

from charon.gdml.context import ReadContext
from charon.gdml.model import Component, Element, Isotope, Material, Property, strip_pointer_suffix
from charon.gdml.read_define import read_define
from charon.gdml.units import EVALUATOR_NAMES, G_PER_CM3, UNITS_TABLE
from charon.gdml.xmltree import Node

_G_PER_MOLE = UNITS_TABLE["g/mole"][0]
_PASCAL = UNITS_TABLE["pascal"][0]
_EV = UNITS_TABLE["eV"][0]

#: Element symbols Geant4's NIST manager builds on demand (Z = 1..118).
NIST_ELEMENTS = frozenset(["H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"])


def read_materials(ctx: ReadContext, materials: Node) -> None:
    ctx.check_attributes(materials, ())
    ctx.check_children(materials, ("define", "isotope", "element", "material"))
    for node in materials.children:
        if node.tag == "define":
            read_define(ctx, node)
        elif node.tag == "isotope":
            _isotope(ctx, node)
        elif node.tag == "element":
            _element(ctx, node)
        else:
            _material(ctx, node)


def _stripped_name(ctx: ReadContext, node: Node) -> str:
    return strip_pointer_suffix(ctx.name(node))


def _measure(ctx: ReadContext, node: Node, category: str, default_unit: float, out_unit: float) -> float:
    """``<atom>``, ``<D>``, ``<T>``, ``<P>``, ``<MEE>``: value * unit, expressed in ``out_unit``."""
    ctx.check_attributes(node, ("value", "unit", "type"))
    ctx.no_children(node)
    unit = ctx.unit(node, "unit", category, default_unit)
    return ctx.number(node, "value") * unit / out_unit


def _quantity_ref(ctx: ReadContext, node: Node, out_unit: float) -> float:
    name = ctx.ref(node)
    if name not in ctx.quantities:
        ctx.fail(node, f"quantity '{name}' is not defined")
    return ctx.quantities[name] / out_unit


def _unique(ctx: ReadContext, node: Node, table: dict[str, object], name: str, what: str) -> None:
    if name in table:
        ctx.fail(node, f"{what} '{name}' is defined twice")


def _isotope(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name", "Z", "N", "state", "formula"))
    ctx.check_children(node, ("atom",))
    name = _stripped_name(ctx, node)
    _unique(ctx, node, ctx.isotopes, name, "isotope")  # type: ignore[arg-type]
    atom = None
    for child in node.children:
        atom = _measure(ctx, child, "Molar mass", _G_PER_MOLE, _G_PER_MOLE)
    ctx.isotopes[name] = Isotope(name, node.line, ctx.integer(node, "Z", 0), ctx.integer(node, "N", 0), atom)


def _element(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name", "formula", "Z", "N"))
    ctx.check_children(node, ("atom", "fraction"))
    name = _stripped_name(ctx, node)
    _unique(ctx, node, ctx.elements, name, "element")  # type: ignore[arg-type]
    atom = None
    components: list[Component] = []
    for child in node.children:
        if child.tag == "atom":
            atom = _measure(ctx, child, "Molar mass", _G_PER_MOLE, _G_PER_MOLE)
        else:
            ref, amount = _component(ctx, child, "n")
            if ref not in ctx.isotopes:
                ctx.fail(child, f"isotope '{ref}' is not defined before this element")
            components.append(Component("fraction", ref, amount))
    z = ctx.number(node, "Z") if "Z" in node.attrib else None
    ctx.elements[name] = Element(name, node.line, node.attrib.get("formula"), z, atom, tuple(components))


def _component(ctx: ReadContext, node: Node, attr: str) -> tuple[str, float]:
    ctx.check_attributes(node, ("n", "ref"))
    ctx.no_children(node)
    ref = strip_pointer_suffix(ctx.name(node, "ref"))
    return ref, ctx.number(node, attr)


def _known_material(ctx: ReadContext, name: str) -> bool:
    """Defined in the file, or a NIST name Geant4 would build (then recorded as such)."""
    if name in ctx.materials:
        return True
    if name.startswith("G4_"):
        ctx.materials[name] = Material(name, 0, None, {}, nist=True)
        return True
    return False


def resolve_material(ctx: ReadContext, node: Node, name: str) -> str:
    """A material reference (stripped), checked; used by ``<materialref>`` too."""
    name = strip_pointer_suffix(name)
    if not _known_material(ctx, name):
        ctx.fail(node, f"material '{name}' is not defined before this element")
    return name


_STATES = ("solid", "liquid", "gas")


#: Material children that are a measured quantity: tag -> (field, Geant4 dimension, unit).
_MEASURES = {"atom": ("atom", "Molar mass", _G_PER_MOLE), "D": ("density", "Volumic Mass", G_PER_CM3),
             "T": ("temperature", "Temperature", 1.0), "P": ("pressure", "Pressure", _PASCAL),
             "MEE": ("mee", "Energy", _EV)}


def _material(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name", "Z", "state", "formula"))
    ctx.check_children(node, ("atom", "D", "Dref", "T", "Tref", "P", "Pref", "MEE", "MEEref",
                              "fraction", "composite", "property", "constproperty"))
    name = _stripped_name(ctx, node)
    if name in ctx.materials and not ctx.materials[name].nist:
        ctx.fail(node, f"material '{name}' is defined twice (first at line {ctx.materials[name].line})")
    state = node.attrib.get("state")
    if state is not None and state not in _STATES:
        ctx.fail(node, f"state=\"{state}\" is not one of {', '.join(_STATES)}")
    measured: dict[str, float | None] = dict.fromkeys(("atom", "density", "temperature", "pressure", "mee"))
    components: list[Component] = []
    properties: dict[str, Property] = {}
    for child in node.children:
        tag = child.tag
        if tag in _MEASURES:
            key, dimension, unit = _MEASURES[tag]
            measured[key] = _measure(ctx, child, dimension, unit, unit)
        elif tag.endswith("ref"):
            key, _, unit = _MEASURES[tag[:-3]]
            measured[key] = _quantity_ref(ctx, child, unit)
        elif tag in ("fraction", "composite"):
            components.append(_material_component(ctx, child))
        else:
            prop = read_property(ctx, child)
            if prop.name in properties:
                ctx.fail(child, f"property '{prop.name}' is given twice for this material")
            properties[prop.name] = prop
    z = ctx.number(node, "Z") if "Z" in node.attrib else None
    if z is None and not components:
        ctx.fail(node, "a material needs Z (with <atom>) or <fraction>/<composite> components")
    ctx.materials[name] = Material(name, node.line, measured["density"], properties, state, z, measured["atom"],
                                   measured["temperature"], measured["pressure"], measured["mee"],
                                   tuple(components))


def _material_component(ctx: ReadContext, child: Node) -> Component:
    """A ``<fraction>`` (of a material or element) or ``<composite>`` (of an element)."""
    ref, amount = _component(ctx, child, "n")
    if child.tag == "fraction":
        if not (_known_material(ctx, ref) or ref in ctx.elements or ref in NIST_ELEMENTS):
            ctx.fail(child, f"material or element '{ref}' is not defined before this material")
    elif not (ref in ctx.elements or ref in NIST_ELEMENTS):
        ctx.fail(child, f"element '{ref}' is not defined before this material")
    return Component(child.tag, ref, amount)


def read_property(ctx: ReadContext, node: Node, *, allow_constant_ref: bool = False) -> Property:
    """``<property name ref>`` (a matrix, or for surfaces a constant) or ``<constproperty name value>``."""
    if node.tag == "constproperty":
        ctx.check_attributes(node, ("name", "value"))
        ctx.no_children(node)
        constant = ctx.number(node, "value")
        return Property(strip_pointer_suffix(ctx.name(node)), None, np.array([constant]), node.line)
    ctx.check_attributes(node, ("name", "ref"))
    ctx.no_children(node)
    name = strip_pointer_suffix(ctx.name(node))
    ref = node.attrib.get("ref")
    if ref is None:
        ctx.fail(node, "missing attribute 'ref' (the <matrix> holding the table)")
    matrix = ctx.ev.matrices.get(ref)
    if matrix is None:
        if allow_constant_ref and ref in ctx.ev.scope and ref not in EVALUATOR_NAMES:
            return Property(name, None, np.array([ctx.ev.scope[ref]]), node.line, ref)
        ctx.fail(node, f"matrix '{ref}' is not defined (define it in <define> before this element)")
    if matrix.coldim == 1:
        if len(matrix.values) != 1:
            ctx.fail(node, f"matrix '{ref}' has one column but {len(matrix.values)} values; a constant "
                     "property takes exactly one value, a table takes coldim=\"2\" (energy value pairs)")
        return Property(name, None, np.array(matrix.values), node.line, ref)
    if matrix.coldim != 2:
        ctx.fail(node, f"matrix '{ref}' has coldim={matrix.coldim}; a property table needs coldim=\"2\" "
                 "(energy value pairs) or a single value")
    table = np.array(matrix.values, dtype=np.float64).reshape(-1, 2)
    energy = np.ascontiguousarray(table[:, 0])
    value = np.ascontiguousarray(table[:, 1])
    energy.flags.writeable = False
    value.flags.writeable = False
    return Property(name, energy, value, node.line, ref)
