"""Extracted layers, each a directory named by its diff ID (the sha256 of its uncompressed tar).

Content addressing makes a layer shared by every image that lists its diff ID, and makes storing
the same tar twice (or concurrently) a no-op.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .. import errors
from .extract import safe_extract
from .source import ImportLimits

__all__ = ["LayerStore"]


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class LayerStore:
    """The layers under ``root`` (``data_root/image/layers``)."""

    def __init__(self, root: Path, limits: ImportLimits | None = None) -> None:
        self.root = root
        #: What one layer (and one archive) may unpack to.
        self.limits = limits or ImportLimits()
        root.mkdir(parents=True, exist_ok=True)

    def path(self, diff_id: str) -> Path:
        """Where the layer ``sha256:<hex>`` is (or would be) extracted."""
        return self.root / diff_id.removeprefix("sha256:")

    def store(self, tar_path: Path) -> tuple[str, bool]:
        """Extract an uncompressed layer tar; return its diff ID and whether it is new.

        The tar is extracted into a temporary directory renamed into place when complete, so a
        refused or broken tar leaves nothing behind.
        """
        diff_id = _digest(tar_path)
        target = self.path(diff_id)
        if target.exists():
            return diff_id, False
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
        try:
            # mkdtemp's 0700 would become the container's root directory mode.
            os.chmod(tmp, 0o755)
            try:
                with tarfile.open(tar_path, "r:") as archive:
                    safe_extract(archive, str(tmp), self.limits)
            except (tarfile.TarError, EOFError) as exc:
                raise errors.InvalidParameter(f"invalid tar archive: {exc}") from None
            except OSError as exc:
                raise errors.InvalidParameter(f"invalid layer: {exc}") from None
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # the same layer arrived meanwhile
                return diff_id, False
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return diff_id, True

    def discard(self, diff_ids: Iterable[str], *, ignore_errors: bool = False) -> None:
        """Delete these layers; one already gone is no error. ``ignore_errors`` is for a
        clean-up after a failure, which must not hide that failure."""
        for diff_id in diff_ids:
            if ignore_errors:
                shutil.rmtree(self.path(diff_id), ignore_errors=True)
                continue
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.path(diff_id))

    def size(self, diff_id: str) -> int:
        """The bytes of the layer's regular files (what ``docker images`` shows as its size)."""
        total = 0
        for dirpath, _dirnames, filenames in os.walk(self.path(diff_id)):
            for name in filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
        return total
