"""What to import, found lazily: a folder of 100,000 files is never listed in memory.

Every path on the command line is a folder (walked recursively with ``os.scandir``,
hidden entries skipped), a URL list (a ``.txt``/``.urls`` file: one URL a line, ``#``
comments), or a file to upload. Files are not filtered by extension: the gateway
judges the bytes and a non-image comes back rejected with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

URL_LISTS = (".txt", ".urls")


@dataclass(frozen=True)
class Source:
    """One input: a local file (``path``, ``size``) or a URL for the gateway to fetch."""

    label: str
    path: Path | None = None
    size: int = 0
    url: str | None = None


def walk(paths: list[Path]) -> Iterator[Source]:
    for path in paths:
        if path.is_dir():
            yield from _folder(path)
        elif path.suffix.lower() in URL_LISTS:
            yield from _urls(path)
        else:
            yield Source(str(path), path=path, size=path.stat().st_size)


def _folder(folder: Path) -> Iterator[Source]:
    # One scandir iterator per level of depth is open at a time: memory follows depth, not size.
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from _folder(Path(entry.path))
            elif entry.is_file():
                yield Source(entry.path, path=Path(entry.path), size=entry.stat().st_size)


def _urls(listing: Path) -> Iterator[Source]:
    with listing.open(encoding="utf-8") as lines:
        for line in lines:
            url = line.strip()  # a '#' inside a URL is its fragment: only whole lines are comments
            if url and not url.startswith("#"):
                yield Source(url, url=url)
