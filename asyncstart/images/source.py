"""Where an archive to import or load comes from, and getting it onto disk uncompressed."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path

import anyio

__all__ = ["ImageSource", "decompressed", "spool"]

#: A tarball to import or load: a path, or the bytes as they arrive (an HTTP body).
ImageSource = str | os.PathLike[str] | AsyncIterable[bytes]

_GZIP_MAGIC = b"\x1f\x8b"


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


def decompressed(path: Path, scratch: Path) -> Path:
    """``path`` itself if it is not gzip, else a decompressed copy in ``scratch`` (never beside
    the source: that may be a directory of the caller's)."""
    with path.open("rb") as file:
        if file.read(2) != _GZIP_MAGIC:
            return path
    fd, plain = tempfile.mkstemp(dir=scratch, suffix=".tar")
    with gzip.open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return Path(plain)
