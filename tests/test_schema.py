"""The chart's values schema is generated from the settings models and is strict.

Only Python here (no helm): the committed file must equal a fresh generation, and the generated
``config`` part must accept exactly what the settings loader accepts for representative values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from charon import schema
from charon.settings import Settings
from tests.tooling import CHART, ROOT


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            out.extend(_walk(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_walk(value, f"{path}/{i}"))
    return out


def test_committed_schema_is_current() -> None:
    committed = (CHART / "values.schema.json").read_text(encoding="utf-8")
    assert committed == schema.render(CHART), (
        "charts/charon/values.schema.json is stale: run make schema"
    )


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    (chart / "schema").mkdir(parents=True)
    (chart / "schema" / "values.base.json").write_text((CHART / "schema" / "values.base.json").read_text())
    cmd = [sys.executable, "-m", "charon.schema", "--chart", str(chart)]
    stale = subprocess.run([*cmd, "--check"], capture_output=True, text=True, timeout=60, check=False)
    assert stale.returncode == 1
    assert "run make schema" in stale.stderr
    wrote = subprocess.run([*cmd, "--write"], capture_output=True, text=True, timeout=60, check=False)
    assert wrote.returncode == 0, wrote.stderr
    fresh = subprocess.run([*cmd, "--check"], capture_output=True, text=True, timeout=60, check=False)
    assert fresh.returncode == 0, fresh.stderr
    assert (chart / "values.schema.json").read_text() == schema.render(CHART)


def test_config_part_mirrors_every_settings_field() -> None:
    config = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    assert config["additionalProperties"] is False
    assert set(config["properties"]) == set(Settings.model_fields)
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert model is not None
        props = config["properties"][section]["properties"]
        assert set(props) == set(model.model_fields), section  # type: ignore[union-attr]
        for name, sub in model.model_fields.items():  # type: ignore[union-attr]
            if sub.description:
                assert props[name]["description"] == sub.description


def test_schema_is_self_contained_strict_draft_07() -> None:
    full = json.loads((CHART / "values.schema.json").read_text())
    assert full["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert full["additionalProperties"] is False
    assert "global" in full["properties"]
    text = json.dumps(full)
    assert "$ref" not in text
    assert "$defs" not in text
    assert "definitions" not in text
    assert schema.PLACEHOLDER not in text
    config = full["properties"]["config"]
    for where, node in _walk(config):
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, where
        assert node.get("format") != "path", where
    assert full["properties"]["router"]["properties"]["replicas"]["type"] == "integer"
    assert full["properties"]["worker"]["properties"]["replicas"]["type"] == "integer"


def test_generated_constraints_match_the_settings_models() -> None:
    config = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]["properties"]
    deadline = config["router"]["properties"]["queue_deadline_s"]
    assert deadline["type"] == "number"
    assert deadline["exclusiveMinimum"] == 0
    backend = config["engine"]["properties"]["backend"]
    assert set(backend["enum"]) == {"builtin", "numpy", "echo", "chroma"}
    detector = config["engine"]["properties"]["detector"]
    assert {"type": "null"} in detector["anyOf"]
    router = config["worker"]["properties"]["router"]
    assert router["pattern"].startswith("^(tcp://")


def test_inlining_rejects_foreign_references() -> None:
    with pytest.raises(schema.SchemaError, match="non-local reference"):
        schema._inline({"$ref": "http://example.org/x.json"}, {})


def test_base_schema_without_placeholder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "values.base.json").write_text('{"type": "object"}')
    with pytest.raises(schema.SchemaError, match="expected exactly one"):
        schema.chart_schema(tmp_path)
    res = subprocess.run([sys.executable, "-m", "charon.schema", "--chart", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
