"""The Helm chart's ``values.schema.json``, generated from the settings models.

The ``config:`` section of the chart's values becomes ``CHARON_<SECTION>__<FIELD>`` environment
variables in the pods, so its schema must be exactly what :class:`charon.settings.Settings` accepts.
This module turns pydantic's JSON schema into a strict, self-contained draft-07 schema that Helm can
enforce (no ``$ref``, ``additionalProperties: false`` on every object) and splices it into the
hand-written schema of the rest of the chart (``schema/values.base.json`` in the chart directory).

    python -m charon.schema            print the full schema
    python -m charon.schema --write    rewrite charts/charon/values.schema.json
    python -m charon.schema --check    exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from charon.errors import SchemaError
from charon.settings import Settings

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
DEFAULT_CHART = Path("charts/charon")
BASE_NAME = "schema/values.base.json"
OUTPUT_NAME = "values.schema.json"
# The base schema marks where the generated part goes with this key.
PLACEHOLDER = "$charonSettings"
# Keys pydantic emits that carry no validation meaning for Helm ("path" is not a JSON-schema format).
_DROP_KEYS = frozenset({"title"})
_DROP_FORMATS = frozenset({"path"})


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Copy ``node`` with every local ``$ref`` replaced by its definition, titles dropped."""
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _resolve(node, defs, seen)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS or key == "$defs" or (key == "format" and value in _DROP_FORMATS):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: _inline(sub, defs, seen) for name, sub in value.items()}
        else:
            out[key] = _inline(value, defs, seen)
    if out.get("type") == "object" or "properties" in out:
        out.setdefault("type", "object")
        out.setdefault("additionalProperties", False)
    return out


def _resolve(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    """The definition a ``$ref`` node points to, inlined, refined by the node's other keys."""
    ref = node["$ref"]
    prefix = "#/$defs/"
    if not isinstance(ref, str) or not ref.startswith(prefix):
        raise SchemaError(f"cannot inline non-local reference {ref!r}")
    name = ref[len(prefix):]
    if name in seen:
        raise SchemaError(f"recursive settings model {name!r} cannot be inlined")
    target = dict(_inline(defs[name], defs, (*seen, name)))
    # Siblings of $ref (description, default) refine the referenced schema.
    for key, value in node.items():
        if key != "$ref" and key not in _DROP_KEYS:
            target[key] = _inline(value, defs, seen)
    return target


def settings_schema() -> dict[str, Any]:
    """Strict draft-07 schema of the ``config:`` values section (all sections and fields optional)."""
    raw = Settings.model_json_schema()
    defs = raw.get("$defs", {})
    sections: dict[str, Any] = {}
    for name, sub in raw["properties"].items():
        section = _inline(sub, defs)
        section.pop("default", None)  # the whole default tree; the field defaults stay per field
        section.pop("required", None)
        sections[name] = section
    return {
        "type": "object",
        "description": "charon settings, passed to every pod as CHARON_<SECTION>__<FIELD> "
        "environment variables (generated from charon.settings; run `make schema` after changing them)",
        "additionalProperties": False,
        "properties": sections,
    }


def _splice(node: Any, generated: dict[str, Any]) -> tuple[Any, int]:
    if isinstance(node, list):
        items = [_splice(item, generated) for item in node]
        return [i for i, _ in items], sum(n for _, n in items)
    if not isinstance(node, dict):
        return node, 0
    if node.get(PLACEHOLDER) is True:
        if len(node) != 1:
            raise SchemaError(f"{PLACEHOLDER} must be the only key of its object")
        return generated, 1
    count = 0
    out: dict[str, Any] = {}
    for key, value in node.items():
        out[key], n = _splice(value, generated)
        count += n
    return out, count


def chart_schema(chart: Path = DEFAULT_CHART) -> dict[str, Any]:
    """The chart's whole values schema: the base with the settings part spliced in."""
    base_path = chart / BASE_NAME
    try:
        base = json.loads(base_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"cannot read {base_path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{base_path}: invalid JSON: {exc}") from None
    merged, count = _splice(base, settings_schema())
    if count != 1:
        raise SchemaError(f"{base_path}: expected exactly one {{\"{PLACEHOLDER}\": true}}, found {count}")
    if not isinstance(merged, dict):
        raise SchemaError(f"{base_path}: the schema must be a JSON object")
    return {"$schema": DRAFT_07, **{k: v for k, v in merged.items() if k != "$schema"}}


def render(chart: Path = DEFAULT_CHART) -> str:
    """The exact text of ``values.schema.json``."""
    return json.dumps(chart_schema(chart), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m charon.schema", description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="chart directory (default %(default)s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"rewrite CHART/{OUTPUT_NAME}")
    mode.add_argument("--check", action="store_true", help=f"exit 1 if CHART/{OUTPUT_NAME} is stale")
    args = parser.parse_args(argv)
    try:
        text = render(args.chart)
    except SchemaError as exc:
        sys.stderr.write(f"charon.schema: {exc}\n")
        return 2
    target: Path = args.chart / OUTPUT_NAME
    if args.write:
        target.write_text(text, encoding="utf-8")
        sys.stderr.write(f"wrote {target}\n")
        return 0
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            sys.stderr.write(f"{target} is stale or missing: run make schema\n")
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
