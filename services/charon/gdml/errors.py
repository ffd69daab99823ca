"""The one error a GDML file can produce, so every problem reaches the user as a single line.

Geant4 reports bad GDML with multi-line G4Exception banners and often carries on with zeros; charon
stops at the first problem with ``<file>:<line>: <element>: <what is wrong and what is allowed>``,
which is what a person fixing the file needs. ``GdmlError`` is a ``DetectorError`` so the CLI's
existing one-line/exit-2 handling applies unchanged.
"""

from __future__ import annotations

from charon.errors import DetectorError


class GdmlError(DetectorError):
    """A GDML file (or a solid in it) that cannot be read or tessellated; the message is one line."""

    def __init__(self, message: str, *, path: str = "", line: int = 0, tag: str = "") -> None:
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        element = f"<{tag}>: " if tag else ""
        super().__init__(f"{where}{element}{message}".replace("\n", " "))
        self.path = path
        self.line = line
        self.tag = tag
