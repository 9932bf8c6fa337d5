"""Extracted layers, each a directory named by its diff ID (the sha256 of its uncompressed tar),
and beside them the tar itself, kept for ``docker save``.

Content addressing makes a layer shared by every image that lists its diff ID, and makes storing
the same tar twice (or concurrently) a no-op.

The extracted directory is a container's lowerdir, so nothing else may be put in it: the tar is
kept in a sibling directory, ``<root>/../layer-tars/<hex>.tar`` (hard-linked from the import's
scratch copy when it can be, copied when the tar is the caller's file). A layer stored by a
version that kept no tar has none: such a layer can be run, not saved.
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

__all__ = ["EMPTY_LAYER", "LayerStore"]

_CHUNK = 1 << 20

#: The diff ID of a tar with no member (its two zero blocks): dockerd's ``layer.EmptyLayer``,
#: the layer a commit of an unchanged container makes — and does not add.
EMPTY_LAYER = "sha256:" + hashlib.sha256(bytes(1024)).hexdigest()


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class LayerStore:
    """The layers under ``root`` (``data_root/image/layers``), their tars under ``tars``
    (``data_root/image/layer-tars`` unless told)."""

    def __init__(
        self, root: Path, limits: ImportLimits | None = None, tars: Path | None = None
    ) -> None:
        self.root = root
        #: Where each layer's uncompressed tar is kept, ``<hex>.tar``.
        self.tars = tars or root.parent / "layer-tars"
        #: What one layer (and one archive) may unpack to.
        self.limits = limits or ImportLimits()
        root.mkdir(parents=True, exist_ok=True)
        self.tars.mkdir(parents=True, exist_ok=True)

    def path(self, diff_id: str) -> Path:
        """Where the layer ``sha256:<hex>`` is (or would be) extracted."""
        return self.root / diff_id.removeprefix("sha256:")

    def tar_path(self, diff_id: str) -> Path:
        """Where the layer's tar is (or would be) kept; its sha256 is ``diff_id``."""
        return self.tars / (diff_id.removeprefix("sha256:") + ".tar")

    def has_tar(self, diff_id: str) -> bool:
        """Whether the layer's tar is kept (not for a layer stored before tars were kept)."""
        return self.tar_path(diff_id).is_file()

    def _keep(self, tar_path: Path, owned: bool) -> tuple[Path, str]:
        """A temporary name for the tar in ``tars`` and its diff ID: a hard link to ``tar_path``
        if it is ``owned`` (a file of the caller's scratch directory, which nobody changes), else
        a copy hashed as it is written (what is stored is what was hashed)."""
        fd, tmp_name = tempfile.mkstemp(prefix=".keep-", suffix=".tmp", dir=self.tars)
        tmp = Path(tmp_name)
        try:
            if owned:
                os.close(fd)
                os.unlink(tmp)
                try:
                    os.link(tar_path, tmp)
                    return tmp, _digest(tmp)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, tar_path.open("rb") as src:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
            return tmp, "sha256:" + digest.hexdigest()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def store(self, tar_path: Path, *, owned: bool = False) -> tuple[str, bool]:
        """Extract an uncompressed layer tar and keep the tar; return its diff ID and whether
        the layer is new. ``owned``: the tar is the caller's scratch file (hard-linked, not
        copied); otherwise it is copied first, and the copy is what is hashed and extracted.

        The tar is extracted into a temporary directory renamed into place when complete, so a
        refused or broken tar leaves nothing behind.
        """
        kept, diff_id = self._keep(tar_path, owned)
        try:
            target = self.path(diff_id)
            if target.exists():
                if not self.has_tar(diff_id):  # a layer stored before tars were kept
                    os.replace(kept, self.tar_path(diff_id))
                return diff_id, False
            return diff_id, self._extract(kept, diff_id)
        finally:
            kept.unlink(missing_ok=True)

    def _extract(self, kept: Path, diff_id: str) -> bool:
        target = self.path(diff_id)
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
        try:
            # mkdtemp's 0700 would become the container's root directory mode.
            os.chmod(tmp, 0o755)
            try:
                with tarfile.open(kept, "r:") as archive:
                    safe_extract(archive, str(tmp), self.limits)
            except (tarfile.TarError, EOFError) as exc:
                raise errors.InvalidParameter(f"invalid tar archive: {exc}") from None
            except OSError as exc:
                raise errors.InvalidParameter(f"invalid layer: {exc}") from None
            # The tar first: a crash between the two leaves a tar without a layer (swept at the
            # next start), never a layer that looks kept and has no tar.
            os.replace(kept, self.tar_path(diff_id))
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # the same layer arrived meanwhile
                return False
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.exists():
                self.tar_path(diff_id).unlink(missing_ok=True)
            raise
        return True

    def discard(self, diff_ids: Iterable[str], *, ignore_errors: bool = False) -> None:
        """Delete these layers and their tars; one already gone is no error. ``ignore_errors``
        is for a clean-up after a failure, which must not hide that failure."""
        for diff_id in diff_ids:
            if ignore_errors:
                shutil.rmtree(self.path(diff_id), ignore_errors=True)
                with contextlib.suppress(OSError):
                    self.tar_path(diff_id).unlink(missing_ok=True)
                continue
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.path(diff_id))
            self.tar_path(diff_id).unlink(missing_ok=True)

    def sweep(self) -> None:
        """At start: drop temporary tars and tars whose layer is gone (a crash mid-store)."""
        for path in self.tars.iterdir():
            if path.name.startswith(".") or not self.path("sha256:" + path.stem).is_dir():
                with contextlib.suppress(OSError):
                    path.unlink()

    def size(self, diff_id: str) -> int:
        """The bytes of the layer's regular files (what ``docker images`` shows as its size)."""
        total = 0
        for dirpath, _dirnames, filenames in os.walk(self.path(diff_id)):
            for name in filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
        return total
