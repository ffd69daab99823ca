"""Reader of the FlukaIO golden-vector text format (proto-spec/vectors/flukaio/*.hex).

One message per line: an optional hex offset, the type name, then hex groups (header fields and
struct fields) that concatenate to the message bytes; ``#`` starts a comment line. The format
keeps captured streams readable and diffable; tests and replay tools turn them back into bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

_OFFSET = re.compile(r"[0-9a-fA-F]{4,}")


def parse_hex(text: str) -> list[tuple[str, bytes]]:
    """(type name, message bytes) per line; raises ValueError naming a bad line or offset."""
    out: list[tuple[str, bytes]] = []
    offset = 0
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if _OFFSET.fullmatch(words[0]) and len(words) > 1 and words[1].isalpha():
            if int(words[0], 16) != offset:
                raise ValueError(f"line {number}: offset {words[0]} but {offset:04x} bytes precede it")
            words = words[1:]
        try:
            data = bytes.fromhex("".join(words[1:]))
        except ValueError:
            raise ValueError(f"line {number}: not hex: {line!r}") from None
        out.append((words[0], data))
        offset += len(data)
    return out


def load_stream(path: str | Path) -> bytes:
    """The concatenated bytes of a vector file."""
    return b"".join(data for _, data in parse_hex(Path(path).read_text()))


#: Message types after which the FlukaIO C library flushes its send buffer.
FLUSHED_AFTER = frozenset({"HSK", "INT", "DBLE", "EOB", "END"})


def load_writes(path: str | Path) -> list[bytes]:
    """A captured stream cut where the C library flushes, i.e. as the separate writes it makes.

    Raises ValueError when the stream ends with messages that no flush would have sent.
    """
    writes: list[bytes] = []
    current = b""
    for type_name, data in parse_hex(Path(path).read_text()):
        current += data
        if type_name in FLUSHED_AFTER:
            writes.append(current)
            current = b""
    if current:
        raise ValueError(f"{path}: {len(current)} bytes after the last flushing message")
    return writes
