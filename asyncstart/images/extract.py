"""Safe extraction of a layer tar, with whiteouts turned into overlayfs' own spelling.

A member is refused with a clear 400 when it has an absolute path or ``..``, would be written
through a symlink out of the destination, is a hard link to outside it, or is a device node.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile

from .. import errors
from .source import ImportLimits

__all__ = ["safe_extract"]

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def _reject(name: str, reason: str) -> errors.InvalidParameter:
    return errors.InvalidParameter(f"refusing to extract {name!r} from the archive: {reason}")


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _clear(path: str, member: tarfile.TarInfo) -> None:
    """Make room for ``member`` at ``path`` without ever following what is there: a later entry
    replaces an earlier one (tar semantics), and a symlink left by an earlier entry must not
    redirect the write (``x -> /etc/passwd`` then a file ``x``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not member.isdir():
            shutil.rmtree(path)
    else:
        os.unlink(path)


def _implied(root: str, parts: list[str]) -> None:
    """The directories a member's path implies and the archive has not given (yet): 0755 and
    root's, as go-archive's ``createImpliedDirectories`` — not the umask's."""
    path = root
    for part in parts:
        path = os.path.join(path, part)
        if not os.path.lexists(path):
            os.mkdir(path, 0o755)
            os.chmod(path, 0o755)


def _whiteout(parent: str, base: str, member: tarfile.TarInfo) -> None:
    """A whiteout hides what lower layers have; overlayfs spells it as a 0/0 device (or, for
    ``.wh..wh..opq``, as an opaque directory). Its directory exists (``_implied``)."""
    if base == _OPAQUE:
        os.setxattr(parent, "trusted.overlay.opaque", b"y")
        return
    hidden_name = base[len(_WHITEOUT) :]
    if hidden_name in ("", ".", ".."):
        raise _reject(member.name, "not a valid whiteout")
    hidden = os.path.join(parent, hidden_name)
    _clear(hidden, member)
    os.mknod(hidden, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def safe_extract(archive: tarfile.TarFile, destination: str, limits: ImportLimits) -> None:
    """Extract every member of ``archive`` under ``destination``, or raise InvalidParameter.

    Members are checked one at a time as they are extracted, so a refusal can leave part of
    the archive behind: extract into a directory of your own and drop it on failure.
    """
    root = os.path.realpath(destination)

    def inside(path: str) -> bool:
        return path == root or path.startswith(root + os.sep)

    entries = size = 0
    for member in archive:
        entries += 1
        size += max(member.size, 0)
        if entries > limits.max_entries:
            raise limits.too_large(f"more than {limits.max_entries} entries")
        if size > limits.max_bytes:
            raise limits.too_large(f"its members hold more than {limits.max_bytes} bytes")
        name = member.name
        parts = _parts(name)
        if name.startswith("/") or ".." in parts:
            raise _reject(name, "absolute paths and '..' are not allowed")
        if not parts:
            continue
        if member.ischr() or member.isblk():
            raise _reject(name, "device nodes are not allowed")
        # realpath resolves symlinks already extracted: a parent that is a link out of the
        # layer (``evil -> /etc``, then ``evil/passwd``) is caught here.
        parent = os.path.realpath(os.path.join(root, *parts[:-1]))
        if not inside(parent):
            raise _reject(name, "it would be written outside the layer through a symlink")
        if not os.path.isdir(parent):  # (one stat for the usual member, whose directory exists)
            _implied(root, parts[:-1])
        base = parts[-1]
        if base.startswith(_WHITEOUT):
            _whiteout(parent, base, member)
            continue
        if member.islnk():
            link_parts = _parts(member.linkname)
            if member.linkname.startswith("/") or ".." in link_parts:
                raise _reject(name, "hard links must stay inside the layer")
            if not inside(os.path.realpath(os.path.join(root, *link_parts))):
                raise _reject(name, "hard links must stay inside the layer")
        _clear(os.path.join(parent, base), member)
        # The name extracted is the normalised one checked above, never the raw one.
        member.name = "/".join(parts)
        # The checks above are the policy; tarfile's "data" filter would also refuse absolute
        # symlinks, which images legitimately carry (``sh -> /bin/busybox``).
        archive.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")
