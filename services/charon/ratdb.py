"""RAT-PAC's RATDB tables, and the PMTINFO table that says where each PMT is.

A RAT detector comes as GDML plus RATDB: ``ratdb_dump`` writes a JSON array of tables, and RAT's
own ``.ratdb`` files are a lenient JSON (``//`` and ``/* */`` comments, unquoted keys, single
quotes, trailing commas, ``1.0d3`` exponents, hex integers, ``value : n`` repetition inside arrays,
tables one after another). Both are read here into ``RatdbTable`` values; ``merged_table``
combines the planes of one (name, index) the way RAT's ``DBLink`` reads them: the default plane
(``run_range: [0, 0]``), then a run plane whose range holds the run, then the user plane
(``[-1, -1]``), each field of a later plane replacing the earlier one. Legacy
``valid_begin``/``valid_end`` pairs are read the same way.

``read_pmtinfo`` gives PMTINFO (or ``PMTINFO_<suffix>``) as arrays with RAT's defaults
(``PMTInfoParser``): positions in mm (global), unit directions (zeros where the table has none),
type -1, channel_number -1, efficiency_corr 1, noise_rate 0, afterpulse_fraction 0. Every other
field is kept in ``fields``. Errors name the file, the table and the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from charon.errors import DetectorError

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]


class RatdbError(DetectorError):
    """A RATDB file or table that cannot be used; the message is one line."""


@dataclass(frozen=True)
class RatdbTable:
    name: str
    index: str
    plane: str                          # "default" | "run" | "user"
    runs: tuple[int, int] | None        # inclusive run range of a run-plane table
    run_list: tuple[int, ...] | None
    fields: Mapping[str, Any]
    line: int = 0


# --- lenient JSON ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<hex>[+-]?0[xX][0-9a-fA-F]+)
  | (?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<symbol>[{}\[\],:\#])
""", re.VERBOSE | re.DOTALL)
_ESCAPES = {'"': '"', "'": "'", "/": "/", "\\": "\\", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class _Lenient:
    """Recursive-descent reader of RAT's lenient JSON; errors carry the line."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.tokens: list[tuple[str, str, int]] = []
        pos, line = 0, 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise RatdbError(f"{path}:{line}: unexpected character {text[pos]!r}")
            kind = m.lastgroup or ""
            value = m.group()
            if kind not in ("ws", "comment"):
                self.tokens.append((kind, value, line))
            line += value.count("\n")
            pos = m.end()
        self.i = 0

    def fail(self, message: str) -> RatdbError:
        line = self.tokens[min(self.i, len(self.tokens) - 1)][2] if self.tokens else 1
        return RatdbError(f"{self.path}:{line}: {message}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, symbol: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "symbol" and tok[1] == symbol:
            self.i += 1
            return True
        return False

    def documents(self) -> list[tuple[Any, int]]:
        out: list[tuple[Any, int]] = []
        while self.peek() is not None:
            tok = self.peek()
            assert tok is not None
            if tok[0] == "symbol" and tok[1] == "#":
                raise self.fail("#include is not supported (merge the included file)")
            line = tok[2]
            out.append((self.value(), line))
            self.take(",")
        return out

    def value(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end of file")
        kind, text, _ = tok
        self.i += 1
        if kind == "symbol" and text == "{":
            return self.obj()
        if kind == "symbol" and text == "[":
            return self.array()
        if kind == "string":
            return _unquote(text)
        if kind == "hex":
            return int(text, 16)
        if kind == "number":
            if any(c in text for c in ".eEdD"):
                return float(text.replace("d", "e").replace("D", "e"))
            return int(text)
        if kind == "ident" and text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        self.i -= 1
        raise self.fail(f"unexpected {text!r}")

    def obj(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while not self.take("}"):
            tok = self.peek()
            if tok is None:
                raise self.fail("unterminated table (missing '}')")
            if tok[0] not in ("ident", "string"):
                raise self.fail(f"expected a field name, found {tok[1]!r}")
            key = tok[1] if tok[0] == "ident" else _unquote(tok[1])
            self.i += 1
            if not self.take(":"):
                raise self.fail(f"expected ':' after field '{key}'")
            out[key] = self.value()
            if not self.take(",") and not (self.peek() and self.peek()[1] == "}"):  # type: ignore[index]
                raise self.fail(f"expected ',' or '}}' after field '{key}'")
        return out

    def array(self) -> list[Any]:
        out: list[Any] = []
        while not self.take("]"):
            if self.peek() is None:
                raise self.fail("unterminated array (missing ']')")
            out.append(self.value())
            if self.take(":"):  # RAT text format: 'value : n' repeats the value n times
                count = self.value()
                if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                    raise self.fail("a repetition count must be a positive integer")
                out.extend([out[-1]] * (count - 1))
            if not self.take(",") and not (self.peek() and self.peek()[1] == "]"):  # type: ignore[index]
                raise self.fail("expected ',' or ']' in array")
        return out


def _unquote(token: str) -> str:
    body = token[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _plane(fields: Mapping[str, Any]) -> tuple[str, tuple[int, int] | None, tuple[int, ...] | None] | None:
    rr = _int_pair(fields.get("run_range"))
    if rr is not None:
        return ("default", None, None) if rr == (0, 0) else ("user", None, None) if rr == (-1, -1) \
            else ("run", rr, None)
    rl = fields.get("run_list")
    if isinstance(rl, list) and all(isinstance(r, int) and not isinstance(r, bool) for r in rl):
        return "run", None, tuple(rl)
    vb, ve = _int_pair(fields.get("valid_begin")), _int_pair(fields.get("valid_end"))
    if vb is not None and ve is not None:  # legacy validity
        if vb == ve == (0, 0):
            return "default", None, None
        if vb == ve == (-1, -1):
            return "user", None, None
        return "run", (vb[0], ve[0]), None
    return None


def _int_pair(value: Any) -> tuple[int, int] | None:
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    return None


def parse_ratdb(text: str, path: str = "<string>") -> tuple[RatdbTable, ...]:
    """Tables from a ratdb_dump JSON array or a RAT .ratdb/.json text (tables one after another)."""
    try:
        parsed = json.loads(text)
        docs = [(d, 0) for d in (parsed if isinstance(parsed, list) else [parsed])]
    except ValueError:
        found = _Lenient(text, path).documents()
        docs = []
        for value, line in found:
            if isinstance(value, list):
                docs.extend((v, line) for v in value)
            else:
                docs.append((value, line))
    tables = []
    for doc, line in docs:
        where = f"{path}:{line}" if line else path
        if not isinstance(doc, dict):
            raise RatdbError(f"{where}: expected a table ({{...}}), found {type(doc).__name__}")
        name = doc.get("name")
        if not isinstance(name, str):
            raise RatdbError(f"{where}: a table without a string 'name' field")
        index = doc.get("index", "")
        if not isinstance(index, str):
            raise RatdbError(f"{where}: table {name}: 'index' must be a string")
        plane = _plane(doc)
        if plane is None:
            tables.append(RatdbTable(name, index, "none", None, None, doc, line))
        else:
            tables.append(RatdbTable(name, index, plane[0], plane[1], plane[2], doc, line))
    return tuple(tables)


def read_ratdb(path: str | Path) -> tuple[RatdbTable, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RatdbError(f"{path}: cannot read RATDB file: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_ratdb(text, str(path))


def _split_name(table: str, index: str) -> tuple[str, str]:
    m = re.fullmatch(r"([^\[\]]+)\[([^\[\]]*)\]", table)
    return (m.group(1), m.group(2)) if m else (table, index)


def merged_table(tables: Sequence[RatdbTable], name: str, index: str = "", run: int | None = None,
                 *, path: str = "") -> dict[str, Any]:
    """The fields of (name, index) as RAT would read them for ``run`` (default < run < user)."""
    name, index = _split_name(name, index)
    label = f"{path}: table {name}" + (f"[{index}]" if index else "")
    mine = [t for t in tables if t.name == name and t.index == index]
    if not mine:
        known = sorted({t.name + (f"[{t.index}]" if t.index else "") for t in tables
                        if t.name.startswith(name.split("_")[0])})
        hint = f" (tables of that kind here: {', '.join(known)})" if known else ""
        raise RatdbError(f"{label} not found{hint}")
    if all(t.plane == "none" for t in mine):
        raise RatdbError(f"{label} has no run_range (RAT discards tables without validity)")
    runs = [t for t in mine if t.plane == "run"]
    if runs and run is None:
        ranges = ", ".join(str(list(t.runs)) if t.runs else f"run_list {list(t.run_list or ())}" for t in runs)
        raise RatdbError(f"{label} has run-specific tables ({ranges}); a run number is needed")
    merged: dict[str, Any] = {}
    for plane in ("default", "run", "user"):
        for t in mine:
            if t.plane != plane:
                continue
            if plane == "run":
                assert run is not None
                inside = (t.runs is not None and t.runs[0] <= run <= t.runs[1]) or \
                         (t.run_list is not None and run in t.run_list)
                if not inside:
                    continue
            merged.update(t.fields)
    return merged


# --- PMTINFO --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PmtInfo:
    """PMTINFO as arrays, one row per PMT, in table order (the channel order RAT uses by default)."""

    table: str
    positions: F64              # (P, 3) mm, global
    directions: F64             # (P, 3) unit vectors; zeros where the table gives no direction
    types: I32                  # (P,) default -1
    channel_numbers: I32        # (P,) default -1 (RAT then numbers channels in order)
    efficiency_corr: F64        # (P,) default 1
    noise_rate: F64             # (P,) default 0
    afterpulse_fraction: F64    # (P,) default 0
    has_directions: bool
    fields: Mapping[str, Any] = field(default_factory=dict)  # every merged field, as read

    def __len__(self) -> int:
        return int(self.positions.shape[0])


def read_pmtinfo(path: str | Path, table: str = "PMTINFO", index: str = "", run: int | None = None) -> PmtInfo:
    """PMTINFO (or ``PMTINFO_<suffix>``, or ``NAME[index]``) from a RATDB dump or .ratdb file."""
    fields = merged_table(read_ratdb(path), table, index, run, path=str(path))
    name, idx = _split_name(table, index)
    label = f"{path}: table {name}" + (f"[{idx}]" if idx else "")
    return pmtinfo_from_fields(fields, label)


def _floats(fields: Mapping[str, Any], key: str, label: str) -> F64:
    values = fields[key]
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise RatdbError(f"{label}: field {key} must be an array of numbers")
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise RatdbError(f"{label}: field {key} holds a non-finite value")
    return arr


def _ints(fields: Mapping[str, Any], key: str, label: str) -> I32:
    values = fields[key]
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise RatdbError(f"{label}: field {key} must be an array of integers")
    if values and (min(values) < -(2**31) or max(values) >= 2**31):
        raise RatdbError(f"{label}: field {key} holds a value outside 32-bit integers")
    return np.asarray(values, dtype=np.int32)


def pmtinfo_from_fields(fields: Mapping[str, Any], label: str = "PMTINFO") -> PmtInfo:
    missing = [k for k in ("x", "y", "z") if k not in fields]
    if missing:
        raise RatdbError(f"{label}: missing field {', '.join(missing)} (PMT positions x, y, z are required)")
    x, y, z = (_floats(fields, k, label) for k in ("x", "y", "z"))
    if not len(x) == len(y) == len(z):
        raise RatdbError(f"{label}: x, y, z must have equal lengths ({len(x)}, {len(y)}, {len(z)})")
    count = len(x)
    positions = np.column_stack([x, y, z]) if count else np.zeros((0, 3))

    def optional(key: str, default: float, kind: str) -> np.ndarray:
        if key not in fields:
            return np.full(count, default, dtype=np.int32 if kind == "int" else np.float64)
        arr = _ints(fields, key, label) if kind == "int" else _floats(fields, key, label)
        if len(arr) != count:
            raise RatdbError(f"{label}: field {key} has {len(arr)} entries, x/y/z have {count}")
        return arr

    dir_keys = ("dir_x", "dir_y", "dir_z")
    present = [k for k in dir_keys if k in fields]
    if present and len(present) != 3:
        absent = [k for k in dir_keys if k not in fields]
        raise RatdbError(f"{label}: {', '.join(present)} given without {', '.join(absent)}")
    if present:
        d = np.column_stack([optional(k, 0.0, "float") for k in dir_keys]) if count else np.zeros((0, 3))
        norm = np.linalg.norm(d, axis=1)
        directions = np.divide(d, norm[:, None], out=np.zeros_like(d), where=norm[:, None] > 0)
    else:
        directions = np.zeros((count, 3))
    info = PmtInfo(
        table=label, positions=positions, directions=directions,
        types=optional("type", -1, "int"), channel_numbers=optional("channel_number", -1, "int"),
        efficiency_corr=optional("efficiency_corr", 1.0, "float"),
        noise_rate=optional("noise_rate", 0.0, "float"),
        afterpulse_fraction=optional("afterpulse_fraction", 0.0, "float"),
        has_directions=bool(present), fields=dict(fields))
    for arr in (info.positions, info.directions, info.types, info.channel_numbers, info.efficiency_corr,
                info.noise_rate, info.afterpulse_fraction):
        arr.flags.writeable = False
    assert math.isfinite(float(info.positions.sum())) if count else True
    return info
