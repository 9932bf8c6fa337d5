"""Where the host's file system places the directories the engine makes."""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import platform
import struct
from pathlib import Path

from ._log import get_logger

__all__ = ["spread_subdirectories", "walks_recently_freed"]

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
#: What a file system answers that cannot take the mark: xfs, btrfs and tmpfs (6.0 on) know
#: the request and refuse the flag, older tmpfs and others do not know the request at all.
#: (overlayfs passes it on to its upper layer's file system.)
_UNSUPPORTED = frozenset({errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL})


def walks_recently_freed(fd: int) -> bool:
    """Whether the file system of the open file ``fd`` is an ext4 without a journal: one
    whose inode allocator walks past the recently freed inodes of a group."""
    # (Not cached by device: a loop device, say, can carry another file system tomorrow; the
    # few system calls here are made at a daemon's open and at a volume's create.)
    device = os.fstat(fd).st_dev
    # ext4 names each of its file systems after its block device (sysfs's name for it) and
    # shows the journal's thread in /sys/fs/ext4/<device>/journal_task, "<none>" without
    # one; a kernel older than that attribute has /proc/fs/jbd2/<device>-<n> per journal.
    # A file system without a block device (tmpfs, overlayfs, btrfs, NFS) is none of these.
    try:
        name = os.path.basename(
            os.path.realpath(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
        )
        ext4 = Path("/sys/fs/ext4") / name
        if not ext4.is_dir():
            return False
        try:
            return (ext4 / "journal_task").read_text().strip() == "<none>"
        except FileNotFoundError:
            return not any(Path("/proc/fs/jbd2").glob(f"{glob.escape(name)}-*"))
    except OSError:
        return False


def spread_subdirectories(path: Path) -> bool:
    """Mark ``path`` as a top of directory hierarchies where that pays: on an ext4 without a
    journal (:func:`walks_recently_freed`); elsewhere nothing happens. True if the mark is
    there.

    Without it every container's directories share their parent's block group, and so do
    the inodes each start creates and frees: the overlay mount alone makes and deletes four
    (its work directory's probes). ext4 without a journal avoids reusing an inode freed less
    than a minute before (six while its inode table block is unwritten), and walks past
    every such inode of the group for each inode it allocates: under a steady churn of
    starts and removals that walk made the overlay mount cost 1.7 ms instead of 0.15.
    Spread, the churn of each container stays in its own part of the disk. A journaled ext4
    has no such walk, and there the mark would only cost: a directory made under it takes
    0.1-0.2 ms more (the allocator looks at every group's counters), and locality.

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
        if flags & _FS_TOPDIR_FL:
            return True
        if not walks_recently_freed(fd):
            return False
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | _FS_TOPDIR_FL))
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:  # EPERM, EACCES, EROFS, EIO: worth a word
            log.debug("fsdirs.not_spread", path=str(path), error=str(exc))
        return False
    finally:
        os.close(fd)
    return True
