"""RATDB: ratdb_dump JSON and RAT's lenient .ratdb text, plane merging, PMTINFO with RAT's defaults."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from charon.ratdb import RatdbError, merged_table, parse_ratdb, read_pmtinfo, read_ratdb
from tests.gdml_builders import fibonacci_points, pmtinfo_dump

FIXTURES = Path(__file__).parent / "fixtures" / "gdml"


def test_dump_merges_user_plane_over_default() -> None:
    info = read_pmtinfo(FIXTURES / "rat_r7081_20_ratdb.json")
    expected = fibonacci_points(20, 5800.0)
    assert len(info) == 20
    np.testing.assert_allclose(info.positions, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(info.directions, -expected / 5800.0, atol=1e-12)
    assert info.has_directions
    assert info.types.tolist() == [2] * 20          # user plane [-1, -1] overrides default [0, 0]
    assert info.channel_numbers.tolist() == [-1] * 20
    assert info.efficiency_corr.tolist() == [1.0] * 20
    assert info.noise_rate.tolist() == [0.0] * 20
    assert info.afterpulse_fraction.tolist() == [0.0] * 20
    assert info.positions.dtype == np.float64
    assert info.types.dtype == np.int32
    assert not info.positions.flags.writeable


def test_ratdb_text_syntax() -> None:
    info = read_pmtinfo(FIXTURES / "PMTINFO.ratdb")
    np.testing.assert_array_equal(info.positions, [[1000, 0, 0], [0, 1000, 0], [-1000, 0, 0], [0, -1000, 1500]])
    s = np.sqrt(0.5)
    np.testing.assert_allclose(info.directions, [[-1, 0, 0], [0, -1, 0], [1, 0, 0], [0, s, -s]], atol=1e-15)
    assert info.types.tolist() == [3, 3, 3, 3]       # the user plane, field by field
    assert info.efficiency_corr.tolist() == [1.0, 0.9, 1.1, 1.0]   # kept from the default plane
    assert info.fields["dir_y"] == [0.0, -2.0, 0.0, 1.0]


def test_repetition_hex_and_suffix_tables() -> None:
    tables = read_ratdb(FIXTURES / "PMTINFO.ratdb")
    default = merged_table([t for t in tables if t.plane == "default"], "PMTINFO")
    assert default["type"] == [1, 1, 1, 2]           # [1 : 3, 2]
    veto = read_pmtinfo(FIXTURES / "PMTINFO.ratdb", "PMTINFO_veto")
    assert veto.positions[:, 0].tolist() == [16.0, 20.0, 30.0]   # 0x10
    assert veto.channel_numbers.tolist() == [100, 101, 102]
    assert not veto.has_directions
    assert veto.directions.tolist() == [[0.0, 0.0, 0.0]] * 3


def test_run_plane_needs_a_run() -> None:
    path = FIXTURES / "PMTINFO.ratdb"
    with pytest.raises(RatdbError, match=r"PMTINFO\[run42\] has run-specific tables \(\[40, 49\]\)"):
        read_pmtinfo(path, "PMTINFO", index="run42")
    assert read_pmtinfo(path, "PMTINFO[run42]", run=45).positions.tolist() == [[1.0, 2.0, 3.0]]
    with pytest.raises(RatdbError, match="missing field x"):
        read_pmtinfo(path, "PMTINFO[run42]", run=50)


def test_lenient_json_details() -> None:
    text = """
    /* block
       comment */ { name: 'A', index: "i", run_range: [0, 0], // line comment
      s: 'it\\'s', t: "tab\\t", nested: {a: [1, 2,], b: {c: null}}, f: 1.5d2, e: -2E-1, ok: true, }
    {"name": "B", "run_range": [-1, -1], "list": [ "x", "y" ]}
    """
    a, b = parse_ratdb(text, "t.ratdb")
    assert (a.name, a.index, a.plane, a.line) == ("A", "i", "default", 3)
    assert a.fields["s"] == "it's"
    assert a.fields["t"] == "tab\t"
    assert a.fields["nested"] == {"a": [1, 2], "b": {"c": None}}
    assert a.fields["f"] == 150.0
    assert a.fields["e"] == -0.2
    assert a.fields["ok"] is True
    assert (b.name, b.index, b.plane) == ("B", "", "user")


def test_legacy_validity_fields() -> None:
    (t,) = parse_ratdb('{"name": "X", "valid_begin": [0, 0], "valid_end": [0, 0], "v": 1}')
    assert t.plane == "default"
    (u,) = parse_ratdb('{"name": "X", "valid_begin": [-1, -1], "valid_end": [-1, -1]}')
    assert u.plane == "user"


def _write(tmp_path: Path, tables: list[dict[str, object]]) -> Path:
    path = tmp_path / "db.json"
    path.write_text(json.dumps(tables))
    return path


@pytest.mark.parametrize(("fields", "message"), [
    ({"x": [1, 2, 3], "y": [1, 2, 3], "z": [1, 2]}, r"db\.json: table PMTINFO: x, y, z must have equal lengths \(3, 3, 2\)"),
    ({"y": [1], "z": [1]}, "missing field x"),
    ({"x": [1], "y": [1], "z": ["a"]}, "field z must be an array of numbers"),
    ({"x": [1], "y": [1], "z": [1], "dir_x": [1], "dir_y": [0]}, "dir_x, dir_y given without dir_z"),
    ({"x": [1], "y": [1], "z": [1], "type": [1.5]}, "field type must be an array of integers"),
    ({"x": [1, 2], "y": [1, 2], "z": [1, 2], "efficiency_corr": [1.0]}, "efficiency_corr has 1 entries, x/y/z have 2"),
])
def test_pmtinfo_errors_name_file_table_field(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    path = _write(tmp_path, [{"name": "PMTINFO", "run_range": [0, 0], **fields}])
    with pytest.raises(RatdbError, match=message) as err:
        read_pmtinfo(path)
    assert "\n" not in str(err.value)


def test_missing_table_and_validity(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"name": "PMTINFO_inner", "run_range": [0, 0], "x": [], "y": [], "z": []},
                             {"name": "PMTINFO_veto", "x": [1], "y": [1], "z": [1]}])
    with pytest.raises(RatdbError, match=r"table PMTINFO not found \(tables of that kind here: PMTINFO_inner, PMTINFO_veto\)"):
        read_pmtinfo(path)
    with pytest.raises(RatdbError, match="PMTINFO_veto has no run_range"):
        read_pmtinfo(path, "PMTINFO_veto")
    assert len(read_pmtinfo(path, "PMTINFO_inner")) == 0


@pytest.mark.parametrize(("text", "message"), [
    ("{ name: 'A', x: [1, 2 }", r"t\.ratdb:1: expected ',' or '\]' in array"),
    ("{ name: 'A'\n  x: 1 }", r"t\.ratdb:2: expected ',' or '}' after field 'name'"),
    ('#include "other.ratdb"', "#include is not supported"),
    ("{ name: 'A', x: [1 : 0] }", "repetition count must be a positive integer"),
    ("{ name: 'A', x: @ }", r"t\.ratdb:1: unexpected character '@'"),
    ("{ name: 'A', \n\n x: ", r"t\.ratdb:3: unexpected end of file"),
    ("[1, 2]", "expected a table"),
    ("{ x: 1 }", "a table without a string 'name' field"),
])
def test_syntax_errors_have_lines(text: str, message: str) -> None:
    with pytest.raises(RatdbError, match=message):
        parse_ratdb(text, "t.ratdb")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RatdbError, match="cannot read RATDB file"):
        read_ratdb(tmp_path / "absent.ratdb")


def test_large_dump_reads_fast(tmp_path: Path) -> None:
    positions = fibonacci_points(10_000, 5800.0)
    path = tmp_path / "dump.json"
    path.write_text(pmtinfo_dump(positions, -positions / 5800.0))
    start = time.perf_counter()
    info = read_pmtinfo(path)
    elapsed = time.perf_counter() - start
    assert len(info) == 10_000
    assert elapsed < 5.0, f"10k-PMT dump took {elapsed:.2f} s"
