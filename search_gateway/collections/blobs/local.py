"""Blobs as files in a folder, fanned out by hash prefix: ``ab/cd/abcd…``.

Two directory levels keep every directory small (65,536 leaves; a million blobs is
about 15 files each). Each blob is written to a temporary file in its final directory,
fsynced, renamed over its final name and the directory fsynced: a ``kill -9`` or a
power cut leaves either the whole blob under its name or a temporary file, which no
listing shows and ``sweep_partial`` removes. All file I/O runs on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from search_gateway.collections.blobs.base import (
    BlobEntry,
    BlobError,
    BlobNotFound,
    BlobRef,
    BlobRejected,
    BlobUnavailable,
    check_sha256,
    is_sha256,
)

DEFAULT_PATH = Path("var/blobs")
# Temporary files start with a dot and end so: never a hash, so never listed as a blob.
_TEMP_SUFFIX = ".partial"
# Out of space is worth retrying (an operator frees some); other write errors are not.
_RETRYABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EBUSY})


class LocalBlobStore:
    """A :class:`~search_gateway.collections.blobs.base.BlobStore` over one folder of this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    async def open(cls, path: str | os.PathLike[str] = DEFAULT_PATH) -> LocalBlobStore:
        root = Path(path)
        try:
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobError(f"the blob folder {root} cannot be created: {exc.strerror or exc}") from exc
        if not root.is_dir():
            raise BlobError(f"the blob folder {root} is not a directory")
        return cls(root)

    def path_of(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def put(self, sha256: str, data: bytes, content_type: str) -> BlobRef:
        final = self.path_of(sha256)
        await asyncio.to_thread(self._put, final, sha256, bytes(data))
        return BlobRef(sha256=sha256, size=len(data), content_type=content_type)

    def _put(self, final: Path, sha256: str, data: bytes) -> None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise BlobRejected(f"the bytes hash to {actual}, not to the {sha256} they were stored under")
        try:
            try:
                if final.stat().st_size == len(data):
                    os.utime(final)  # stored already: only look young again (see base.py)
                    return
            except FileNotFoundError:
                pass
            self._write_atomically(final, data)
        except OSError as exc:
            raise _write_error(final, exc) from exc

    def _write_atomically(self, final: Path, data: bytes) -> None:
        created = _make_dirs(final.parent, stop=self.root)
        fd, temp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=_TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        # The rename and any directory made for it must survive a power cut too.
        for directory in [final.parent, *created]:
            _fsync_dir(directory)

    async def get(self, sha256: str) -> bytes:
        path = self.path_of(sha256)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {sha256} in {self.root}") from None
        except OSError as exc:
            raise BlobError(f"the blob {path} cannot be read: {exc.strerror or exc}") from exc

    async def exists(self, sha256: str) -> bool:
        return await self.stat(sha256) is not None

    async def stat(self, sha256: str) -> BlobEntry | None:
        path = self.path_of(sha256)
        try:
            found = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        return BlobEntry(sha256, found.st_size, datetime.fromtimestamp(found.st_mtime, UTC))

    async def delete(self, sha256: str) -> None:
        path = self.path_of(sha256)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise BlobError(f"the blob {path} cannot be deleted: {exc.strerror or exc}") from exc

    async def entries(self) -> AsyncIterator[BlobEntry]:
        # One worker hop per top-level directory: at most 256, each a bounded listing.
        tops = await asyncio.to_thread(_subdirs, self.root)
        for top in tops:
            for entry in await asyncio.to_thread(_blobs_under, top):
                yield entry

    async def list_older_than(self, cutoff: datetime) -> AsyncIterator[BlobEntry]:
        async for entry in self.entries():
            if entry.modified < cutoff:
                yield entry

    async def sweep_partial(self, cutoff: datetime) -> int:
        return await asyncio.to_thread(_sweep, self.root, cutoff.timestamp())

    async def close(self) -> None:
        return None


def _write_error(path: Path, exc: OSError) -> BlobError:
    reason = exc.strerror or str(exc)
    if exc.errno in _RETRYABLE_ERRNOS:
        return BlobUnavailable(f"the blob {path} cannot be written now ({reason}); retry later")
    return BlobError(f"the blob {path} cannot be written: {reason}")


def _make_dirs(directory: Path, *, stop: Path) -> list[Path]:
    """Create ``directory`` and its missing parents below ``stop``; the parents of what was
    created (which must be fsynced for the new entries to last)."""
    missing: list[Path] = []
    current = directory
    while current != stop and not current.is_dir():
        missing.append(current)
        current = current.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
    return [made.parent for made in missing]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _subdirs(folder: Path) -> list[Path]:
    with os.scandir(folder) as listing:
        return [Path(e.path) for e in listing if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]


def _blobs_under(top: Path) -> list[BlobEntry]:
    found: list[BlobEntry] = []
    for middle in _subdirs(top):
        with os.scandir(middle) as listing:
            for item in listing:
                if not is_sha256(item.name) or not item.is_file(follow_symlinks=False):
                    continue
                with contextlib.suppress(FileNotFoundError):  # deleted between the listing and the stat
                    info = item.stat(follow_symlinks=False)
                    found.append(BlobEntry(item.name, info.st_size,
                                           datetime.fromtimestamp(info.st_mtime, UTC)))
    return found


def _sweep(root: Path, cutoff: float) -> int:
    removed = 0
    for top in _subdirs(root):
        for middle in _subdirs(top):
            with os.scandir(middle) as listing:
                for item in listing:
                    if not item.name.endswith(_TEMP_SUFFIX) or not item.name.startswith("."):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if item.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(item.path)
                            removed += 1
    return removed

