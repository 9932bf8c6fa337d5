"""Where an archive to import or load comes from, and getting it onto disk uncompressed."""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path

import anyio

from .. import errors

__all__ = ["ImageSource", "ImportLimits", "decompressed", "spool"]

#: A tarball to import or load: a path, or the bytes as they arrive (an HTTP body).
ImageSource = str | os.PathLike[str] | AsyncIterable[bytes]

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """Bounds on what one import or load may unpack (a gzip bomb, a tar of millions of empty
    files): beyond them it is a 400 and nothing is kept. Generous by default."""

    #: Bytes an archive may decompress to, and its members' total size.
    max_bytes: int = 32 << 30
    #: Members an archive may have.
    max_entries: int = 1_000_000

    def too_large(self, what: str) -> errors.InvalidParameter:
        return errors.InvalidParameter(
            f"archive too large: {what} (the daemon's import limits are {self.max_bytes} "
            f"bytes and {self.max_entries} entries)"
        )


async def spool(source: ImageSource, scratch: Path) -> Path:
    """The archive as a file: ``source`` itself if it is a path, else its bytes written into
    ``scratch`` (tarfile needs to seek, an HTTP body cannot)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    path = scratch / "upload.tar"
    async with await anyio.open_file(path, "wb") as out:
        async for chunk in source:
            await out.write(chunk)
    return path


def decompressed(path: Path, scratch: Path, limits: ImportLimits) -> Path:
    """``path`` itself if it is not gzip, else a decompressed copy in ``scratch`` (never beside
    the source: that may be a directory of the caller's)."""
    with path.open("rb") as file:
        if file.read(2) != _GZIP_MAGIC:
            return path
    fd, plain = tempfile.mkstemp(dir=scratch, suffix=".tar")
    written = 0
    with gzip.open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > limits.max_bytes:
                raise limits.too_large(f"it decompresses to more than {limits.max_bytes} bytes")
            dst.write(chunk)
    return Path(plain)
