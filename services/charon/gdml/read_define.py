"""``<define>``: constants, variables, quantities, expressions, positions, rotations, scales, matrices.

As in ``G4GDMLReadDefine``: ``<constant>``, ``<variable>``, ``<quantity>`` (value times unit) and
``<expression>`` (its text) become evaluator names; ``<matrix>`` values are whitespace-separated
expressions and define one constant per element; positions, rotations and scales are kept by name
with their unit applied (positions must be lengths, rotations angles). A ``<define>`` may also sit
inside ``<materials>`` and ``<solids>``; it is read where it appears.
"""

from __future__ import annotations

from charon.gdml.context import ReadContext, Vec3
from charon.gdml.expressions import ExpressionError
from charon.gdml.units import UNITS_TABLE
from charon.gdml.xmltree import Node

_TAGS = ("constant", "variable", "quantity", "expression", "position", "rotation", "scale", "matrix")


def read_define(ctx: ReadContext, define: Node) -> None:
    ctx.check_attributes(define, ())
    ctx.check_children(define, _TAGS)
    for node in define.children:
        _READERS[node.tag](ctx, node)


def _named_value(ctx: ReadContext, node: Node, *, variable: bool = False) -> None:
    ctx.check_attributes(node, ("name", "value"))
    ctx.no_children(node)
    name = node.attrib.get("name") or ctx.fail(node, "missing attribute 'name'")
    value = ctx.number(node, "value")
    try:
        if variable:
            ctx.ev.define_variable(name, value)
        else:
            ctx.ev.define_constant(name, value)
    except ExpressionError as exc:
        ctx.fail(node, str(exc))


def _constant(ctx: ReadContext, node: Node) -> None:
    _named_value(ctx, node)


def _variable(ctx: ReadContext, node: Node) -> None:
    _named_value(ctx, node, variable=True)


def _quantity(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name", "value", "unit", "type"))
    ctx.no_children(node)
    name = node.attrib.get("name") or ctx.fail(node, "missing attribute 'name'")
    unit_symbol = node.attrib.get("unit")
    unit = 1.0
    if unit_symbol is not None:
        found = UNITS_TABLE.get(unit_symbol.strip())
        if found is None:
            ctx.fail(node, f'unit="{unit_symbol}" is not a Geant4 unit')
        unit = found[0]
    value = ctx.number(node, "value") * unit
    try:
        ctx.ev.define_constant(name, value)
    except ExpressionError as exc:
        ctx.fail(node, str(exc))
    ctx.quantities[name] = value


def _expression(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name",))
    ctx.no_children(node)
    name = node.attrib.get("name") or ctx.fail(node, "missing attribute 'name'")
    value = ctx.evaluate(node, "text", node.text)
    try:
        ctx.ev.define_constant(name, value)
    except ExpressionError as exc:
        ctx.fail(node, str(exc))


def _stored_vector(ctx: ReadContext, node: Node, category: str, table: dict[str, Vec3]) -> None:
    default = 1.0 if category == "Scale" else 0.0
    name = ctx.name(node)
    vec = ctx.vector(node, category, default)
    if name in table:
        ctx.fail(node, f"{node.tag} '{name}' is defined twice")
    table[name] = vec


def _position(ctx: ReadContext, node: Node) -> None:
    _stored_vector(ctx, node, "Length", ctx.positions)


def _rotation(ctx: ReadContext, node: Node) -> None:
    _stored_vector(ctx, node, "Angle", ctx.rotations)


def _scale(ctx: ReadContext, node: Node) -> None:
    _stored_vector(ctx, node, "Scale", ctx.scales)


def _matrix(ctx: ReadContext, node: Node) -> None:
    ctx.check_attributes(node, ("name", "coldim", "values"))
    ctx.no_children(node)
    name = ctx.name(node)
    coldim = ctx.integer(node, "coldim")
    text = node.attrib.get("values")
    if text is None:
        ctx.fail(node, "missing attribute 'values'")
    values = [ctx.evaluate(node, "values", token) for token in text.split()]
    try:
        ctx.ev.define_matrix(name, coldim, values)
    except ExpressionError as exc:
        ctx.fail(node, str(exc))


_READERS = {
    "constant": _constant, "variable": _variable, "quantity": _quantity, "expression": _expression,
    "position": _position, "rotation": _rotation, "scale": _scale, "matrix": _matrix,
}
