"""The name an uploaded file is kept under: a display name, never a path to open.

A client sends whatever bytes it likes as a multipart ``filename``. Kept unchanged, a
name carrying NUL, ESC or a right-to-left override comes back in listings and search
results, where it garbles a terminal, hides the real extension from a person reading
it ("flash\u202egpj.exe"), or walks out of a folder if anyone ever writes it to disk.

Relative folder paths are kept on purpose: the web page's folder upload and drop send
``shop/flash/rose.png`` and the grid shows that path. So the name keeps its
``/``-separated parts, but not ``..``, ``.`` or empty ones (a leading ``/`` included),
a ``\\`` counts as ``/`` (a Windows path), control and format characters are removed
(Unicode categories Cc and Cf: NUL, ESC, the bidi overrides and isolates, zero-width
marks) and the result is at most MAX_NAME characters.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_NAME = 255
# Removed characters: control (Cc: NUL, ESC, DEL, C1) and format (Cf: U+200E/F marks,
# U+202A-202E embeddings and overrides, U+2066-2069 isolates, zero-width joiners, BOM).
_REMOVED = frozenset({"Cc", "Cf"})
# Also removed, though not Cc/Cf: they break a line where a display name must not.
_LINE_BREAKS = frozenset("\u2028\u2029")
# The extension survives a cut when it is this short (".jpeg", ".webp", ".tiff").
_KEPT_EXTENSION = 16


@dataclass(frozen=True)
class CleanName:
    """The name to keep, and why it differs from the one sent (None when it does not)."""

    name: str
    note: str | None = None


def _printable(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c) not in _REMOVED and c not in _LINE_BREAKS)


def _cut(name: str) -> str:
    """At most MAX_NAME characters, keeping a short extension of the last part."""
    if len(name) <= MAX_NAME:
        return name
    last = name.rsplit("/", 1)[-1]
    dot = last.rfind(".")
    extension = last[dot:] if 0 < dot and len(last) - dot <= _KEPT_EXTENSION else ""
    return name[:MAX_NAME - len(extension)].rstrip("/") + extension


def clean_name(sent: str, fallback: str) -> CleanName:
    """The display name for a sent file name; ``fallback`` when nothing printable is left."""
    printable = _printable(sent)
    slashed = printable.replace("\\", "/")
    # " .. " too: some file systems drop trailing dots and spaces, making it "..".
    kept = "/".join(p for p in slashed.split("/") if p.strip() not in ("", ".", ".."))
    name = _cut(kept) or fallback
    if name == sent:
        return CleanName(name)
    changes = []
    if printable != sent:
        changes.append("control and direction characters removed")
    if slashed != printable:
        changes.append("'\\' read as '/'")
    if kept != slashed:
        changes.append("empty, '.' and '..' path parts removed")
    if len(kept) > MAX_NAME:
        changes.append(f"cut to {MAX_NAME} characters")
    if not kept:
        changes.append("nothing printable was left" if sent else "none was sent")
    return CleanName(name, f"The file name was stored as '{name}' ({'; '.join(changes)}).")
