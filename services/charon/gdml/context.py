"""The state a GDML file builds up as it is read, and the checked accessors every section uses.

Geant4 reads a GDML file in one pass, in document order: a name must be defined before it is used,
and a ``<loop>`` re-reads its body with the loop variable set. ``ReadContext`` holds what has been
defined so far (evaluator names, positions, rotations, solids, volumes ...) and turns every way an
element can be wrong into one ``GdmlError`` line with the file, the line and the element: unknown
attributes and child elements, expressions that do not evaluate, units of the wrong kind, missing
references.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from charon.gdml.errors import GdmlError
from charon.gdml.expressions import Evaluator, ExpressionError
from charon.gdml.model import (
    Assembly,
    BorderSurface,
    Element,
    Isotope,
    LogicalVolume,
    Material,
    OpticalSurface,
    Placement,
    SkinSurface,
    Solid,
)
from charon.gdml.units import UNITS_TABLE, unit_symbols
from charon.gdml.xmltree import Node

Vec3 = tuple[float, float, float]
_VECTOR_ATTRIBUTES = {"Length": ("name", "x", "y", "z", "unit"), "Angle": ("name", "x", "y", "z", "unit"),
                      "Scale": ("name", "x", "y", "z")}


def describe(node: Node) -> str:
    """``tube name="body"`` - how messages name an element."""
    name = node.attrib.get("name")
    return f'{node.tag} name="{name}"' if name is not None else node.tag


@dataclass
class ReadContext:
    path: str
    ev: Evaluator = field(default_factory=Evaluator)
    positions: dict[str, Vec3] = field(default_factory=dict)
    rotations: dict[str, Vec3] = field(default_factory=dict)
    scales: dict[str, Vec3] = field(default_factory=dict)
    quantities: dict[str, float] = field(default_factory=dict)
    isotopes: dict[str, Isotope] = field(default_factory=dict)
    elements: dict[str, Element] = field(default_factory=dict)
    materials: dict[str, Material] = field(default_factory=dict)
    solids: dict[str, Solid] = field(default_factory=dict)
    optical_surfaces: dict[str, OpticalSurface] = field(default_factory=dict)
    volumes: dict[str, LogicalVolume] = field(default_factory=dict)
    assemblies: dict[str, Assembly] = field(default_factory=dict)
    physvols: dict[str, Placement] = field(default_factory=dict)
    skin_surfaces: list[SkinSurface] = field(default_factory=list)
    border_surfaces: list[BorderSurface] = field(default_factory=list)
    setups: dict[str, tuple[str, int]] = field(default_factory=dict)
    userinfo: list[tuple[str, str]] = field(default_factory=list)
    in_loop: int = 0

    # --- errors ---------------------------------------------------------------------------------
    def fail(self, node: Node, message: str) -> NoReturn:
        raise GdmlError(message, path=self.path, line=node.line, tag=describe(node))

    # --- structure checks -------------------------------------------------------------------------
    def check_attributes(self, node: Node, allowed: Collection[str]) -> None:
        for name in node.attrib:
            if name not in allowed:
                ok = ", ".join(sorted(allowed)) or "none"
                self.fail(node, f"unknown attribute '{name}' (allowed: {ok})")

    def check_children(self, node: Node, allowed: Collection[str]) -> None:
        for child in node.children:
            if child.tag not in allowed:
                ok = ", ".join(f"<{t}>" for t in allowed) or "none"
                self.fail(child, f"unexpected element inside <{node.tag}> (allowed: {ok})")

    def no_children(self, node: Node) -> None:
        if node.children:
            self.fail(node.children[0], f"<{node.tag}> takes no child elements")

    # --- names ------------------------------------------------------------------------------------
    def name(self, node: Node, attr: str = "name", *, required: bool = True) -> str:
        """A name attribute as Geant4's ``GenerateName`` has it (brackets resolved inside loops)."""
        raw = node.attrib.get(attr)
        if raw is None or raw == "":
            if required:
                self.fail(node, f"missing attribute '{attr}'")
            return ""
        return self.generate_name(node, raw)

    def generate_name(self, node: Node, raw: str) -> str:
        if self.in_loop:
            try:
                return self.ev.solve_brackets(raw)
            except ExpressionError as exc:
                self.fail(node, str(exc))
        return raw

    def ref(self, node: Node) -> str:
        """The ``ref`` attribute of a ``<...ref>`` element."""
        self.check_attributes(node, ("ref",))
        self.no_children(node)
        return self.name(node, "ref")

    # --- numbers ----------------------------------------------------------------------------------
    def evaluate(self, node: Node, attr: str, text: str) -> float:
        try:
            return self.ev.evaluate(text)
        except ExpressionError as exc:
            self.fail(node, f"attribute {attr}: {exc}")

    def number(self, node: Node, attr: str, default: float | None = None) -> float:
        text = node.attrib.get(attr)
        if text is None:
            if default is None:
                self.fail(node, f"missing attribute '{attr}'")
            return default
        return self.evaluate(node, attr, text)

    def integer(self, node: Node, attr: str, default: int | None = None) -> int:
        text = node.attrib.get(attr)
        if text is None:
            if default is None:
                self.fail(node, f"missing attribute '{attr}'")
            return default
        try:
            return self.ev.evaluate_integer(text)
        except ExpressionError as exc:
            self.fail(node, f"attribute {attr}: {exc}")

    def unit(self, node: Node, attr: str, category: str | Iterable[str], default: float = 1.0) -> float:
        """A unit attribute looked up in Geant4's units table, of the given category."""
        symbol = node.attrib.get(attr)
        if symbol is None:
            return default
        categories = (category,) if isinstance(category, str) else tuple(category)
        found = UNITS_TABLE.get(symbol.strip())
        if found is None or found[1] not in categories:
            allowed = "; ".join(unit_symbols(c) for c in categories)
            what = "unknown unit" if found is None else f"a unit of {found[1].lower()}, not of {categories[0].lower()}"
            self.fail(node, f"{attr}=\"{symbol}\" is {what} (allowed: {allowed})")
        return found[0]

    def vector(self, node: Node, category: str, default: float) -> Vec3:
        """An inline ``<position>``/``<rotation>``/``<scale>`` (``G4GDMLReadDefine::VectorRead``)."""
        self.check_attributes(node, _VECTOR_ATTRIBUTES[category])
        self.no_children(node)
        unit = self.unit(node, "unit", category) if category != "Scale" else 1.0
        return (self.number(node, "x", default) * unit, self.number(node, "y", default) * unit,
                self.number(node, "z", default) * unit)

    # --- lookups ----------------------------------------------------------------------------------
    def lookup_vector(self, node: Node, kind: str) -> Vec3:
        name = self.ref(node)
        table = {"position": self.positions, "rotation": self.rotations, "scale": self.scales}[kind]
        try:
            return table[name]
        except KeyError:
            self.fail(node, f"{kind} '{name}' is not defined (define it in <define> before this element)")

    def lookup_solid(self, node: Node, name: str) -> Solid:
        try:
            return self.solids[name]
        except KeyError:
            self.fail(node, f"solid '{name}' is not defined before this element")

    # --- loops ------------------------------------------------------------------------------------
    def loop(self, node: Node, body: Callable[[Node], None]) -> None:
        """``G4GDMLRead::LoopRead``: run ``body(node)`` for var = from, from+step, ... <= to."""
        self.check_attributes(node, ("for", "from", "to", "step"))
        var = node.attrib.get("for")
        if not var:
            self.fail(node, "missing attribute 'for' (the <variable> to loop over)")
        if not self.ev.is_variable(var):
            self.fail(node, f"loop variable '{var}' is not a <variable>")
        start = self.integer(node, "from")
        stop = self.integer(node, "to")
        step = self.integer(node, "step")
        if (start < stop and step <= 0) or (start > stop and step >= 0):
            self.fail(node, f"infinite loop: from={start} to={stop} step={step}")
        if step == 0 or (stop - start) // step + 1 > 1_000_000:
            self.fail(node, f"loop from={start} to={stop} step={step} has too many iterations")
        self.in_loop += 1
        try:
            value = start
            while value <= stop:
                self.ev.set_variable(var, float(value))
                body(node)
                value += step
        finally:
            self.in_loop -= 1
