"""A small immutable XML tree in which every element knows its line in the file.

The GDML reader needs two things ``xml.etree`` does not give cheaply: the line of each element (so
an error can say where to look) and a refusal of DTDs and entities. Geant4's writers never emit
them, RAT does not either, and an entity can pull in another file or expand without bound, so a
document type declaration is an error here rather than something to resolve.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from xml.parsers import expat

from charon.gdml.errors import GdmlError

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Node:
    """One XML element: tag, attributes, child elements, the text directly inside it, its line."""

    tag: str
    attrib: Mapping[str, str]
    children: tuple[Node, ...]
    line: int
    text: str = ""

    def __iter__(self) -> Iterator[Node]:
        return iter(self.children)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attrib.get(name, default)


class _Builder:
    """Collects expat callbacks into Nodes; a stack of (tag, attrib, line, children, text parts)."""

    def __init__(self) -> None:
        self.stack: list[tuple[str, dict[str, str], int, list[Node], list[str]]] = []
        self.root: Node | None = None
        self.parser: Any = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.stack.append((tag, attrib, self.parser.CurrentLineNumber, [], []))

    def end(self, _tag: str) -> None:
        tag, attrib, line, children, text = self.stack.pop()
        node = Node(tag, MappingProxyType(attrib) if attrib else _EMPTY, tuple(children), line,
                    "".join(text).strip())
        if self.stack:
            self.stack[-1][3].append(node)
        else:
            self.root = node

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1][4].append(text)


def parse_xml(data: bytes | str, path: str = "<string>") -> Node:
    """Parse a whole document into its root Node; malformed XML, DTDs and entities are one-line errors."""
    builder = _Builder()
    parser = expat.ParserCreate()
    builder.parser = parser
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data

    def refuse_doctype(name: str, *_args: Any) -> None:
        raise GdmlError(f"XML document type declaration <!DOCTYPE {name}> is not supported "
                        "(DTDs and entities are refused; inline the referenced content instead)",
                        path=path, line=parser.CurrentLineNumber)

    def refuse_entity(name: str, *_args: Any) -> None:
        raise GdmlError(f"XML entity '{name}' is not supported (inline the referenced content instead)",
                        path=path, line=parser.CurrentLineNumber)

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    def refuse_external(context: str, *_args: Any) -> int:
        refuse_entity(context)
        return 0  # pragma: no cover - refuse_entity raises

    parser.ExternalEntityRefHandler = refuse_external
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise GdmlError(f"malformed XML: {expat.ErrorString(exc.code)} (column {exc.offset + 1})",
                        path=path, line=exc.lineno) from None
    if builder.root is None:  # pragma: no cover - expat rejects documents without a root element
        raise GdmlError("empty XML document", path=path)
    return builder.root


def read_xml(path: str | Path) -> Node:
    """Read and parse an XML file (see ``parse_xml``); an unreadable file is a one-line error."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise GdmlError(f"cannot read file: {exc.strerror or exc}", path=str(path)) from None
    return parse_xml(data, str(path))
