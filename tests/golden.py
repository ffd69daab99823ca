"""Golden vector files (proto-spec/vectors/<version>/): loading them and checking they are what
their generator writes. Shared by the v1 and v2 vector suites."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charon.protocol.v1 import Frame, as_view

VECTORS_ROOT = Path(__file__).resolve().parents[1] / "proto-spec" / "vectors"


def load(version: str) -> dict[str, dict[str, Any]]:
    """Every vector of ``version`` by file stem, in name order."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((VECTORS_ROOT / version).glob("*.json"))}


def of_kind(vectors: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [v for v in vectors.values() if v["kind"] == kind]


def frames(hexes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


def as_bytes(msg: Sequence[Frame]) -> list[bytes]:
    return [bytes(as_view(f)) for f in msg]


def ids(vectors: Sequence[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def check_generated(version: str, vectors: dict[str, dict[str, Any]], readme: Path, link_prefix: str) -> None:
    """The files are exactly what ``<version>/generate.py`` writes, and ``readme`` links every one
    as ``(<link_prefix><name>.json)``."""
    spec = importlib.util.spec_from_file_location(f"generate_{version}", VECTORS_ROOT / version / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    generated = gen.vectors()
    assert {v["name"] for v in generated} == set(vectors)
    for v in generated:
        assert (VECTORS_ROOT / version / f"{v['name']}.json").read_text() == gen.render(v), v["name"]
    text = readme.read_text()
    for name in vectors:
        assert f"({link_prefix}{name}.json)" in text, name
