"""Where the host's file system places the directories the engine makes."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

__all__ = ["spread_subdirectories"]

_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
#: ``chattr +T``: ext2/3/4's Orlov allocator takes each subdirectory of such a directory for
#: the top of a hierarchy of its own, and places it in a block group of its own (by its
#: name's hash) rather than beside its siblings.
_FS_TOPDIR_FL = 0x00020000


def spread_subdirectories(path: Path) -> bool:
    """Mark ``path`` as a top of directory hierarchies where the file system knows the hint
    (ext2/3/4; elsewhere nothing happens and False is returned).

    Without it every container's directories share their parent's block group, and so do
    the inodes each start creates and frees: the overlay mount alone makes and deletes four
    (its work directory's probes), the start path's files more. ext4 without a journal does
    not reuse an inode freed less than a minute (five when its table block is unwritten)
    before, and walks past every such inode of the group for each inode it allocates: under
    a steady churn of starts and removals that walk made the overlay mount cost 1.7 ms
    instead of 0.15. Spread, each container's churn stays in a group of its own.

    For every directory that holds one directory per container: the data root's containers,
    layers and volumes (an anonymous volume per container, often), the exec root's bundles,
    the OCI runtime's state root.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        buffer = bytearray(4)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buffer)
        (flags,) = struct.unpack("i", buffer)
        if not flags & _FS_TOPDIR_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | _FS_TOPDIR_FL))
    except OSError:
        return False  # ENOTTY, EOPNOTSUPP: not ext2/3/4 (tmpfs, xfs, btrfs, overlay)
    finally:
        os.close(fd)
    return True
