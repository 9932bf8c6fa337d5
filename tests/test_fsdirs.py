"""fsdirs: where the engine tells ext4 to spread the directories it makes, and where not."""

from __future__ import annotations

import errno
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from asyncstart import fsdirs
from asyncstart.fsdirs import spread_subdirectories, walks_recently_freed

from .helpers import (
    NODUMP_FL,
    TOPDIR_FL,
    file_flags,
    set_file_flags,
    skip_unless_markable,
    spread_mark,
    without_journal,
)

Ext4 = Callable[[bool], Path]


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Ext4]:
    """``ext4(journal)``: a small ext4, with or without a journal, mounted (loop) for the test."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4")
    if platform.machine() not in fsdirs._GENERIC_IOCTLS:
        pytest.skip("the engine marks nothing on this machine (its ioctl numbers differ)")
    mounted: list[Path] = []

    def make(journal: bool) -> Path:
        image = tmp_path / ("journal.img" if journal else "nojournal.img")
        with open(image, "wb") as file:
            file.truncate(16 << 20)
        features = [] if journal else ["-O", "^has_journal"]
        subprocess.run(["mkfs.ext4", "-q", "-F", *features, str(image)], check=True)
        target = tmp_path / image.stem
        target.mkdir()
        mount = subprocess.run(
            ["mount", "-o", "loop", str(image), str(target)], capture_output=True, text=True
        )
        if mount.returncode != 0:
            pytest.skip(f"cannot mount a loop device here: {mount.stderr.strip()}")
        mounted.append(target)
        return target

    try:
        yield make
    finally:
        for target in mounted:
            if subprocess.run(["umount", str(target)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(target)], check=True)  # (the loop goes too)


def _walks(directory: Path) -> bool:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return walks_recently_freed(fd)
    finally:
        os.close(fd)


@pytest.mark.root
def test_an_ext4_without_a_journal_is_spread_and_a_journaled_one_is_not(ext4: Ext4) -> None:
    """Without a journal, ext4 walks past every inode its group freed in the last minute for
    each inode it allocates: there the mark pays. With one it would only cost (a directory
    made under it took 0.1-0.2 ms more)."""
    bare, journaled = ext4(False), ext4(True)
    assert _walks(bare) is True
    assert _walks(journaled) is False
    for root in (bare, journaled):
        (root / "containers").mkdir()
    assert spread_subdirectories(bare / "containers") is True
    assert spread_mark(bare / "containers")
    assert spread_subdirectories(journaled / "containers") is False
    assert not spread_mark(journaled / "containers")
    # A mark that is there (an older version's, a person's) is left as it is.
    marked = journaled / "containers"
    set_file_flags(marked, (file_flags(marked) or 0) | TOPDIR_FL)
    assert spread_subdirectories(marked) is True


@pytest.mark.root
def test_spreading_keeps_a_directorys_other_flags(ext4: Ext4) -> None:
    directory = ext4(False) / "d"
    directory.mkdir()
    set_file_flags(directory, (file_flags(directory) or 0) | NODUMP_FL)  # chattr +d
    assert spread_subdirectories(directory) is True
    flags = file_flags(directory) or 0
    assert flags & TOPDIR_FL and flags & NODUMP_FL


def test_tmpfs_and_other_file_systems_are_not_ext4(tmp_path: Path) -> None:
    assert _walks(Path("/proc")) is False  # (proc: no block device at all)
    if Path("/dev/shm").is_dir():
        assert _walks(Path("/dev/shm")) is False  # tmpfs


def test_a_directory_is_not_spread_where_it_cannot_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_unless_markable(tmp_path)
    without_journal(monkeypatch)  # (so that only what is tried here keeps the mark off)
    assert spread_subdirectories(tmp_path / "missing") is False
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert spread_subdirectories(tmp_path / "link") is False  # a link is not followed
    assert not spread_mark(tmp_path / "target")

    def unsupported(fd: int, request: int, arg: object = 0) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")  # xfs, btrfs, tmpfs

    monkeypatch.setattr(fsdirs.fcntl, "ioctl", unsupported)
    assert spread_subdirectories(tmp_path / "target") is False
