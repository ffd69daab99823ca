"""A safe evaluator for GDML expressions, with the grammar and names of Geant4's CLHEP evaluator.

Every numeric attribute in GDML is an expression (``"2*rmax + 5*cm"``, ``"pow(r,2)"``,
``"m[2,1]"``). Geant4 evaluates them with CLHEP's ``HepTool::Evaluator``; this module reproduces
that grammar with its own tokenizer and precedence-climbing parser rather than Python's ``eval`` or
``ast``, because the languages differ: ``^`` is power (``**`` too) and binds tighter than unary
minus, both are left-associative (``2^3^2 == 64``), ``&&``/``||``/comparisons give 1 or 0, and a
name may be a Python keyword (``lambda``). Numbers are decimal; names are Geant4's units and
constants (``charon.gdml.units``), the file's ``<constant>``/``<variable>``/``<quantity>``/
``<expression>`` definitions and matrix elements (``m_0_1``, or ``m[1,2]`` with 1-based indices
as ``G4GDMLEvaluator::SolveBrackets`` has them). Functions are CLHEP's standard set.

Parsed expressions are cached by text; names are looked up at evaluation time, so a ``<loop>``
variable changes the value of an already-parsed expression.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from charon.gdml.units import EVALUATOR_NAMES, SOFT_NAMES


class ExpressionError(ValueError):
    """An expression that cannot be evaluated; the message says why (one line)."""


Scope = Mapping[str, float]
Compiled = Callable[[Scope], float]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>\*\*|\|\||&&|==|!=|>=|<=|[-+*/^()<>,\[\]])
    )""", re.VERBOSE)

# CLHEP's setStdMath: name -> (number of arguments, function)
_FUNCTIONS: dict[str, tuple[int, Callable[..., float]]] = {
    "abs": (1, abs), "min": (2, min), "max": (2, max), "sqrt": (1, math.sqrt), "pow": (2, math.pow),
    "sin": (1, math.sin), "cos": (1, math.cos), "tan": (1, math.tan), "asin": (1, math.asin),
    "acos": (1, math.acos), "atan": (1, math.atan), "atan2": (2, math.atan2),
    "sinh": (1, math.sinh), "cosh": (1, math.cosh), "tanh": (1, math.tanh),
    "exp": (1, math.exp), "log": (1, math.log), "log10": (1, math.log10),
}

# CLHEP's precedence, lowest first; every level is left-associative.
_LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("==", "!="), (">=", ">", "<=", "<"),
                                        ("+", "-"), ("*", "/"))


def _divide(a: float, b: float) -> float:
    if b == 0.0:
        raise ExpressionError("division by zero")
    return a / b


def _power(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except (ValueError, OverflowError):
        raise ExpressionError(f"{a:g} ^ {b:g} is not a real number") from None


_BINARY: dict[str, Callable[[float, float], float]] = {
    "||": lambda a, b: 1.0 if (a or b) else 0.0,
    "&&": lambda a, b: 1.0 if (a and b) else 0.0,
    "==": lambda a, b: 1.0 if a == b else 0.0, "!=": lambda a, b: 1.0 if a != b else 0.0,
    ">=": lambda a, b: 1.0 if a >= b else 0.0, ">": lambda a, b: 1.0 if a > b else 0.0,
    "<=": lambda a, b: 1.0 if a <= b else 0.0, "<": lambda a, b: 1.0 if a < b else 0.0,
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": _divide, "^": _power, "**": _power,
}

def _lookup(scope: Scope, name: str) -> float:
    try:
        return scope[name]
    except KeyError:
        raise ExpressionError(f"unknown name '{name}'") from None


class _Parser:
    """Recursive descent over the token list of one expression; produces a closure tree."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos, end = 0, len(text.rstrip())
        while pos < end:
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise ExpressionError(f"unexpected character {text[pos:].lstrip()[:1]!r}")
            kind = m.lastgroup
            assert kind is not None
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, op: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] == op:
            self.i += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.take(op):
            tok = self.peek()
            found = "end of expression" if tok is None else repr(tok[1])
            raise ExpressionError(f"expected {op!r}, found {found}")

    def parse(self) -> Compiled:
        if not self.tokens:
            raise ExpressionError("empty expression")
        node = self.binary(0)
        tok = self.peek()
        if tok is not None:
            raise ExpressionError(f"unexpected {tok[1]!r}")
        return node

    def binary(self, level: int) -> Compiled:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            tok = self.peek()
            if tok is None or tok[0] != "op" or tok[1] not in _LEVELS[level]:
                return left
            self.i += 1
            right = self.binary(level + 1)
            left = _bin(_BINARY[tok[1]], left, right)

    def unary(self) -> Compiled:
        if self.take("-"):
            inner = self.unary()
            return lambda s: -inner(s)
        if self.take("+"):
            return self.unary()
        return self.power()

    def power(self) -> Compiled:
        left = self.primary()
        while True:
            tok = self.peek()
            if tok is None or tok[0] != "op" or tok[1] not in ("^", "**"):
                return left
            self.i += 1
            # an exponent may carry its own sign, which then takes the rest of the power chain
            right = self.unary() if (self.peek() or ("", ""))[1] in ("-", "+") else self.primary()
            left = _bin(_power, left, right)

    def primary(self) -> Compiled:
        tok = self.peek()
        if tok is None:
            raise ExpressionError("unexpected end of expression")
        kind, value = tok
        self.i += 1
        if kind == "number":
            number = float(value)
            return lambda _s: number
        if kind == "name":
            if self.take("("):
                return self.call(value)
            if self.take("["):
                return self.element(value)
            return lambda s: _lookup(s, value)
        if value == "(":
            inner = self.binary(0)
            self.expect(")")
            return inner
        raise ExpressionError(f"unexpected {value!r}")

    def call(self, name: str) -> Compiled:
        args: list[Compiled] = []
        if not self.take(")"):
            args.append(self.binary(0))
            while self.take(","):
                args.append(self.binary(0))
            self.expect(")")
        spec = _FUNCTIONS.get(name)
        if spec is None or spec[0] != len(args):
            known = ", ".join(f"{n}({'x' if a == 1 else 'x,y'})" for n, (a, _) in _FUNCTIONS.items())
            raise ExpressionError(f"unknown function {name}() with {len(args)} argument(s) (known: {known})")
        func = spec[1]

        def apply(s: Scope) -> float:
            values = [a(s) for a in args]
            try:
                return float(func(*values))
            except (ValueError, OverflowError):
                shown = ", ".join(f"{v:g}" for v in values)
                raise ExpressionError(f"{name}({shown}) is not a real number") from None

        return apply

    def element(self, name: str) -> Compiled:
        """``m[i]`` / ``m[i,j]``: 1-based matrix element, i.e. the constant ``m_{i-1}[_{j-1}]``."""
        indices = [self.binary(0)]
        while self.take(","):
            indices.append(self.binary(0))
        self.expect("]")

        def lookup(s: Scope) -> float:
            parts = [str(_as_integer(ix(s), "matrix index") - 1) for ix in indices]
            return _lookup(s, "_".join([name, *parts]))

        return lookup


def _bin(op: Callable[[float, float], float], left: Compiled, right: Compiled) -> Compiled:
    return lambda s: op(left(s), right(s))


def _as_integer(value: float, what: str) -> int:
    if not math.isfinite(value) or value != int(value):
        raise ExpressionError(f"{what} must be an integer, got {value:g}")
    return int(value)


@lru_cache(maxsize=65536)
def compile_expression(text: str) -> Compiled:
    """Parse once; the result evaluates the expression against a scope of names."""
    return _Parser(text).parse()


@dataclass(frozen=True)
class Matrix:
    """A GDML <matrix>: ``values`` row-major with ``coldim`` columns (values already evaluated)."""

    name: str
    coldim: int
    values: tuple[float, ...]

    @property
    def rows(self) -> int:
        return len(self.values) // self.coldim


class Evaluator:
    """The names a GDML file has defined so far, and evaluation against them.

    Mirrors ``G4GDMLEvaluator``: constants and variables share one namespace with the built-in
    units, a redefinition is an error, only variables can change (``<loop>``), and a matrix defines
    one constant per element (``m_i`` for a row or column matrix, ``m_i_j`` otherwise).
    """

    def __init__(self) -> None:
        self._scope: dict[str, float] = dict(SOFT_NAMES)
        self._scope.update(EVALUATOR_NAMES)
        self._user: set[str] = set()
        self._variables: set[str] = set()
        self.matrices: dict[str, Matrix] = {}

    @property
    def scope(self) -> Mapping[str, float]:
        return self._scope

    def _define(self, name: str, value: float) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ExpressionError(f"'{name}' is not a valid name (letters, digits and _, not starting with a digit)")
        if name in EVALUATOR_NAMES:
            raise ExpressionError(f"redefinition of '{name}', which Geant4 defines as a unit or constant")
        if name in self._user:
            raise ExpressionError(f"redefinition of constant or variable '{name}'")
        self._user.add(name)
        self._scope[name] = value

    def define_constant(self, name: str, value: float) -> None:
        self._define(name, value)

    def define_variable(self, name: str, value: float) -> None:
        self._define(name, value)
        self._variables.add(name)

    def is_variable(self, name: str) -> bool:
        return name in self._variables

    def set_variable(self, name: str, value: float) -> None:
        if name not in self._variables:
            raise ExpressionError(f"'{name}' is not a <variable>")
        self._scope[name] = value

    def define_matrix(self, name: str, coldim: int, values: Sequence[float]) -> Matrix:
        if not values:
            raise ExpressionError(f"matrix '{name}' is empty")
        if coldim <= 0 or len(values) % coldim:
            raise ExpressionError(f"matrix '{name}' has {len(values)} values, not a multiple of coldim={coldim}")
        if name in self.matrices:
            raise ExpressionError(f"redefinition of matrix '{name}'")
        if len(values) == coldim or coldim == 1:
            for i, v in enumerate(values):
                self._define(f"{name}_{i}", v)
        else:
            for i in range(len(values) // coldim):
                for j in range(coldim):
                    self._define(f"{name}_{i}_{j}", values[coldim * i + j])
        matrix = Matrix(name, coldim, tuple(values))
        self.matrices[name] = matrix
        return matrix

    def evaluate(self, text: str) -> float:
        """The value of an expression; errors name the expression and the reason."""
        try:  # most attributes are plain numbers; float() also takes inf, nan and 1_0, which GDML does not
            value = float(text)
            plain = "n" not in text and "N" not in text and "_" not in text
        except ValueError:
            plain = False
        if not plain:
            try:
                value = compile_expression(text)(self._scope)
            except ExpressionError as exc:
                raise ExpressionError(f"cannot evaluate {text.strip()!r}: {exc}") from None
            except RecursionError:
                raise ExpressionError(f"cannot evaluate {text[:40]!r}...: nested too deeply") from None
        if not math.isfinite(value):
            raise ExpressionError(f"{text.strip()!r} evaluates to {value}")
        return value

    def evaluate_integer(self, text: str) -> int:
        value = self.evaluate(text)
        try:
            return _as_integer(value, f"{text.strip()!r}")
        except ExpressionError as exc:
            raise ExpressionError(str(exc)) from None

    def solve_brackets(self, name: str) -> str:
        """``G4GDMLEvaluator::SolveBrackets``: ``box[i,j]`` -> ``box_{i-1}_{j-1}`` (names in loops)."""
        if "[" not in name and "]" not in name:
            return name
        out: list[str] = []
        pos = 0
        for m in re.finditer(r"\[([^\[\]]*)\]", name):
            out.append(name[pos:m.start()])
            for part in m.group(1).split(","):
                out.append(f"_{self.evaluate_integer(part) - 1}")
            pos = m.end()
        out.append(name[pos:])
        result = "".join(out)
        if "[" in result or "]" in result:
            raise ExpressionError(f"bracket mismatch in '{name}'")
        return result
