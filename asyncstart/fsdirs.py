"""Where the host's file system places the directories the engine makes."""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import struct
from pathlib import Path

from ._log import get_logger

__all__ = ["spread_subdirectories"]

log = get_logger("asyncstart.fsdirs")

#: ``FS_IOC_GETFLAGS``/``FS_IOC_SETFLAGS`` as the generic ``_IOR``/``_IOW('f', 1|2, long)``
#: encode them on 64-bit machines; powerpc, mips and sparc encode the direction otherwise
#: (there, and on 32-bit machines, nothing is done).
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_GENERIC_IOCTLS = frozenset({"x86_64", "aarch64", "s390x", "riscv64", "loongarch64"})
#: ``chattr +T``: ext2/3/4's Orlov allocator takes each subdirectory of such a directory for
#: the top of a hierarchy of its own and spreads them over the block groups (each starts its
#: search at the group its name hashes to and takes a less used one), rather than keeping
#: them in their parent's group. Not inherited: what is below each subdirectory stays with it.
_FS_TOPDIR_FL = 0x00020000
#: What a file system that has no such flag answers (tmpfs, xfs, btrfs; overlayfs passes the
#: request on to its upper layer's).
_UNSUPPORTED = frozenset({errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL})


def spread_subdirectories(path: Path) -> bool:
    """Mark ``path`` as a top of directory hierarchies where the file system knows the hint
    (ext2/3/4); elsewhere nothing happens. True if the mark is there.

    Without it every container's directories share their parent's block group, and so do
    the inodes each start creates and frees: the overlay mount alone makes and deletes four
    (its work directory's probes). ext4 without a journal does not reuse an inode freed less
    than a minute before (six while its inode table block is unwritten), and walks past
    every such inode of the group for each inode it allocates: under a steady churn of
    starts and removals that walk made the overlay mount cost 1.7 ms instead of 0.15.
    Spread, the churn of each container stays in its own part of the disk. On a journaled
    ext4, which has no such walk, the mark costs a little locality and, per directory made
    there, a look at every group's counters.

    For every directory that holds one directory per container: the data root's containers,
    layers and volumes (an anonymous volume per container, often), the exec root's bundles,
    the OCI runtime's state root.
    """
    if platform.machine() not in _GENERIC_IOCTLS:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        log.debug("fsdirs.not_spread", path=str(path), error=str(exc))
        return False
    try:
        buffer = bytearray(4)  # (the kernel reads and writes an int, whatever the encoding says)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buffer)
        (flags,) = struct.unpack("i", buffer)
        if not flags & _FS_TOPDIR_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | _FS_TOPDIR_FL))
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:  # EPERM, EACCES, EROFS, EIO: worth a word
            log.debug("fsdirs.not_spread", path=str(path), error=str(exc))
        return False
    finally:
        os.close(fd)
    return True
