"""The GDML expression evaluator follows CLHEP's grammar and Geant4's names, and never runs code."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charon.gdml.errors import GdmlError
from charon.gdml.expressions import Evaluator, ExpressionError
from charon.gdml.units import EVALUATOR_NAMES, UNITS_TABLE
from charon.gdml.xmltree import parse_xml


@pytest.fixture
def ev() -> Evaluator:
    return Evaluator()


@pytest.mark.parametrize(("text", "expected"), [
    ("2^3^2", 64.0),          # CLHEP: ^ is left-associative
    ("2**3**2", 64.0),
    ("-2^2", -4.0),           # ^ binds tighter than unary minus
    ("2^-1", 0.5),
    ("2^-3^2", 2.0 ** -9),    # a signed exponent takes the rest of the power chain
    ("1+2*3", 7.0),
    ("(1+2)*3", 9.0),
    ("2*-3", -6.0),
    ("--2", 2.0),
    ("10/4/5", 0.5),
    ("7-2-1", 4.0),
    (".5 + 1. + 1e3 + 2E-1", 1001.7),
    ("1 < 2", 1.0), ("2 <= 1", 0.0), ("1 == 1 && 2 != 2", 0.0), ("0 || 3 > 2", 1.0),
    ("1 + 1 == 2", 1.0),      # comparisons bind looser than arithmetic
])
def test_grammar_matches_clhep(ev: Evaluator, text: str, expected: float) -> None:
    assert ev.evaluate(text) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(("text", "expected"), [
    ("1*mm", 1.0), ("1*cm", 10.0), ("1*m", 1000.0), ("1*km", 1e6), ("1*um", 1e-3), ("1*nm", 1e-6),
    ("1*rad", 1.0), ("1*mrad", 1e-3), ("180*deg", math.pi), ("1*degree", math.pi / 180),
    ("1*MeV", 1.0), ("1*eV", 1e-6), ("1*keV", 1e-3), ("1*GeV", 1e3), ("1*TeV", 1e6),
    ("1*ns", 1.0), ("1*s", 1e9), ("1*ms", 1e6), ("1*us", 1e3), ("1*ps", 1e-3),
    ("1*kelvin", 1.0), ("1*mole", 1.0), ("pi", math.pi), ("e", math.e),
    ("1*g/cm3", 1e-3 * 1e-6 / 1.602176634e-19 * 1e18 / 1e6 / 1e3),
    ("1*pc", 3.0856775807e19),
])
def test_units_are_geant4_internal(ev: Evaluator, text: str, expected: float) -> None:
    assert ev.evaluate(text) == pytest.approx(expected, rel=1e-12)


def test_soft_constants_can_be_redefined_but_geant4_names_cannot(ev: Evaluator) -> None:
    assert ev.evaluate("twopi") == pytest.approx(2 * math.pi)
    assert ev.evaluate("c_light") == pytest.approx(299.792458)  # mm/ns
    ev.define_constant("twopi", 6.0)  # not a Geant4 GDML name: a file may define it
    assert ev.evaluate("twopi") == 6.0
    with pytest.raises(ExpressionError, match="redefinition of 'cm'"):
        ev.define_constant("cm", 1.0)
    with pytest.raises(ExpressionError, match="redefinition of constant or variable 'twopi'"):
        ev.define_constant("twopi", 7.0)


@pytest.mark.parametrize(("text", "expected"), [
    ("sqrt(16)", 4.0), ("pow(2, 10)", 1024.0), ("atan2(1, 1)", math.pi / 4), ("min(3, -2)", -2.0),
    ("max(3, -2)", 3.0), ("abs(-5)", 5.0), ("exp(log(7))", 7.0), ("log10(1000)", 3.0),
    ("sin(pi/2)", 1.0), ("cos(0)", 1.0), ("tan(pi/4)", 1.0), ("asin(1)", math.pi / 2),
    ("acos(1)", 0.0), ("atan(1)", math.pi / 4), ("sinh(0)+cosh(0)+tanh(0)", 1.0),
    ("sqrt( (3)^2 + 4^2 )", 5.0),
])
def test_functions(ev: Evaluator, text: str, expected: float) -> None:
    assert ev.evaluate(text) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("text", "message"), [
    ("foo", "unknown name 'foo'"),
    ("1/0", "division by zero"),
    ("sqrt(-1)", "not a real number"),
    ("log(0)", "not a real number"),
    ("(-8)^(1/3)", "not a real number"),
    ("min(1)", r"unknown function min\(\) with 1 argument"),
    ("floor(2.5)", r"unknown function floor\(\)"),
    ("2 3", "unexpected '3'"),
    ("(1", r"expected '\)'"),
    ("1+", "unexpected end"),
    ("", "empty expression"),
    ("__import__('os')", "unexpected character"),
    ("a.b", "unexpected character '.'"),
    ("1e400", "inf"),
    ("0x10", "unknown name 'x10'|unexpected"),
])
def test_errors_are_one_line_and_say_why(ev: Evaluator, text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message) as err:
        ev.evaluate(text)
    assert "\n" not in str(err.value)


def test_names_may_be_python_keywords(ev: Evaluator) -> None:
    ev.define_constant("lambda", 2.0)
    ev.define_variable("in", 3.0)
    assert ev.evaluate("lambda*in + 1") == 7.0


def test_variables_change_constants_do_not(ev: Evaluator) -> None:
    ev.define_variable("i", 1.0)
    ev.define_constant("k", 2.0)
    assert ev.evaluate("i*k") == 2.0
    ev.set_variable("i", 5.0)
    assert ev.evaluate("i*k") == 10.0  # a cached parse sees the new value
    with pytest.raises(ExpressionError, match="not a <variable>"):
        ev.set_variable("k", 3.0)
    with pytest.raises(ExpressionError, match="redefinition"):
        ev.define_variable("i", 1.0)


def test_matrix_elements_are_constants_with_one_based_brackets(ev: Evaluator) -> None:
    ev.define_matrix("m", 2, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert ev.evaluate("m_0_1") == 2.0
    assert ev.evaluate("m[3,2]") == 6.0
    assert ev.evaluate("m[1+1, 1]") == 3.0
    ev.define_matrix("row", 3, [7.0, 8.0, 9.0])       # a row matrix: one index
    ev.define_matrix("col", 1, [10.0, 11.0])           # a column matrix: one index
    assert ev.evaluate("row[3] + col[2]") == 20.0
    with pytest.raises(ExpressionError, match="unknown name 'm_5_0'"):
        ev.evaluate("m[6,1]")
    with pytest.raises(ExpressionError, match="must be an integer"):
        ev.evaluate("m[1.5,1]")
    with pytest.raises(ExpressionError, match="not a multiple of coldim=2"):
        ev.define_matrix("bad", 2, [1.0, 2.0, 3.0])
    with pytest.raises(ExpressionError, match="empty"):
        ev.define_matrix("none", 2, [])


def test_solve_brackets_names_loop_copies(ev: Evaluator) -> None:
    ev.define_variable("i", 3.0)
    assert ev.solve_brackets("box[i]") == "box_2"
    assert ev.solve_brackets("pv[i,2]_x") == "pv_2_1_x"
    assert ev.solve_brackets("plain") == "plain"


def test_integer_evaluation(ev: Evaluator) -> None:
    assert ev.evaluate_integer("6/2") == 3
    with pytest.raises(ExpressionError, match="integer"):
        ev.evaluate_integer("7/2")


def test_units_table_has_categories() -> None:
    assert UNITS_TABLE["mm"] == (1.0, "Length")
    assert UNITS_TABLE["millimeter"] == (1.0, "Length")
    assert UNITS_TABLE["deg"][1] == "Angle"
    assert UNITS_TABLE["g/cm3"][0] == pytest.approx(EVALUATOR_NAMES["g"] / EVALUATOR_NAMES["cm3"])
    assert UNITS_TABLE["eV"][0] == pytest.approx(1e-6)


# --- random arithmetic agrees with a direct computation -----------------------------------------

def _tree() -> st.SearchStrategy[tuple[str, float]]:
    leaf = st.integers(min_value=-50, max_value=50).map(lambda n: (f"({n})" if n < 0 else str(n), float(n)))

    def combine(children: st.SearchStrategy[tuple[str, float]]) -> st.SearchStrategy[tuple[str, float]]:
        def join(op: str, a: tuple[str, float], b: tuple[str, float]) -> tuple[str, float]:
            value = {"+": a[1] + b[1], "-": a[1] - b[1], "*": a[1] * b[1]}[op]
            return f"({a[0]} {op} {b[0]})", value
        neg = children.map(lambda c: (f"-{c[0]}", -c[1]))
        return st.one_of(st.builds(join, st.sampled_from("+-*"), children, children), neg)

    return st.recursive(leaf, combine, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(_tree())
def test_random_arithmetic(case: tuple[str, float]) -> None:
    text, expected = case
    assert Evaluator().evaluate(text) == expected


# --- the XML tree ---------------------------------------------------------------------------------

def test_xml_tree_keeps_lines_text_and_attributes() -> None:
    root = parse_xml(b'<?xml version="1.0"?>\n<gdml a="1">\n <define>\n'
                     b'  <expression name="x">2*pi</expression>\n </define>\n</gdml>\n')
    assert (root.tag, root.attrib["a"], root.line) == ("gdml", "1", 2)
    expr = root.children[0].children[0]
    assert (expr.tag, expr.line, expr.text, expr.attrib["name"]) == ("expression", 4, "2*pi", "x")
    with pytest.raises(TypeError):
        expr.attrib["name"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(("data", "message"), [
    (b"<gdml>\n<a></b>\n</gdml>", r"x\.gdml:2: malformed XML: mismatched tag"),
    (b'<!DOCTYPE gdml [<!ENTITY m SYSTEM "m.xml">]>\n<gdml>&m;</gdml>', r"x\.gdml:1: .*DOCTYPE"),
    (b"<gdml>\n\n&foo;</gdml>", r"x\.gdml:3: malformed XML: undefined entity"),
    (b"", r"x\.gdml:1: malformed XML: no element found"),
])
def test_bad_xml_is_one_line_with_its_line(data: bytes, message: str) -> None:
    with pytest.raises(GdmlError, match=message) as err:
        parse_xml(data, "x.gdml")
    assert "\n" not in str(err.value)
