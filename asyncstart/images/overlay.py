"""Overlay root filesystems: the image's layers read-only, the container's upper and work dirs.

Between the image's layers and the container's own sits its init layer (``init``, read-only,
as dockerd's ``<id>-init``): the mount points the engine needs in every container,
``/etc/{hostname,hosts,resolv.conf}``, made at create. A start then writes nothing into the
container's layer (no copy-up of ``/etc``, no new inode on the start path), and the
container's changes (``docker diff``, ``commit``) never see them.

Created with the container, mounted on start (reference counted, dockerd's
``conditionalMountOnStart``), unmounted on exit, stop and failed start, deleted on remove.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import os
import posixpath
import shutil
import stat
import subprocess
from collections.abc import AsyncGenerator
from pathlib import Path

import anyio

from .. import errors
from .store import ImageStore

__all__ = ["OverlayMounter"]

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_MNT_DETACH = 2


def _mount(lower: str, upper: str, work: str, target: str) -> None:
    """Mount the overlay. Its directories are named in the options by descriptor
    (``/proc/self/fd/N``), not by path: the kernel shows the options as given in every
    ``/proc/*/mountinfo``, which runc and crun read several times per container they create,
    escaping each character — with paths, hundreds of characters per running container."""
    fds: list[int] = []
    try:
        for path in (*lower.split(":"), upper, work):
            fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        *lowers, upper_fd, work_fd = (f"/proc/self/fd/{fd}" for fd in fds)
        options = f"lowerdir={':'.join(lowers)},upperdir={upper_fd},workdir={work_fd}".encode()
        if _libc.mount(b"overlay", target.encode(), b"overlay", 0, options) != 0:
            code = ctypes.get_errno()
            raise errors.SystemError(f"error mounting overlay on {target}: {os.strerror(code)}")
    except OSError as exc:
        raise errors.SystemError(
            f"error mounting overlay on {target}: {exc.filename}: {exc.strerror}"
        ) from None
    finally:
        for fd in fds:
            os.close(fd)


def _umount(target: str) -> None:
    if _libc.umount2(target.encode(), 0) != 0:
        code = ctypes.get_errno()
        if code == 22:  # EINVAL: not mounted
            return
        # Busy (a process still has it open): detach now, the kernel frees it when unused.
        if _libc.umount2(target.encode(), _MNT_DETACH) != 0:
            raise errors.SystemError(f"error unmounting {target}: {os.strerror(code)}")


class OverlayMounter:
    """Per container: ``root/<id>/{upper,work,merged}`` and a ``lower`` file naming the layers."""

    def __init__(
        self, root: Path, images: ImageStore, owner: tuple[int, int] | None = None
    ) -> None:
        self.root = root
        self.images = images
        #: With user-namespace remapping, the remapped root owns what the container writes.
        self.owner = owner
        self.refs: collections.Counter[str] = collections.Counter()
        root.mkdir(parents=True, exist_ok=True)

    def _dir(self, container_id: str) -> Path:
        return self.root / container_id

    async def create(self, container_id: str, image: str) -> None:
        layers = self.images.layer_paths(self.images.resolve(image))
        directory = self._dir(container_id)

        def make() -> None:
            directory.mkdir(exist_ok=True)
            os.chmod(directory, 0o755)  # (not the umask's: a remapped root goes through it)
            for sub in ("upper", "work", "merged"):
                (directory / sub).mkdir(parents=True, exist_ok=True)
                if self.owner is not None and sub != "merged":
                    os.chown(directory / sub, *self.owner)
            # The container's "/" has the upper directory's mode: 0755, as dockerd's, whatever
            # the umask of the program that embeds the engine.
            os.chmod(directory / "upper", 0o755)
            _make_init_layer(directory / "init", layers, self.owner)
            # overlayfs lists the top layer first.
            lower = [directory / "init", *reversed(layers)]
            (directory / "lower").write_text(":".join(str(p) for p in lower))

        await anyio.to_thread.run_sync(make)

    async def mount(self, container_id: str) -> str:
        directory = self._dir(container_id)
        merged = str(directory / "merged")
        if self.refs[container_id] == 0:
            try:
                lower = (directory / "lower").read_text()
            except FileNotFoundError:
                raise errors.SystemError(
                    f"layer of container {container_id} does not exist"
                ) from None
            await anyio.to_thread.run_sync(
                _mount, lower, str(directory / "upper"), str(directory / "work"), merged
            )
        self.refs[container_id] += 1
        return merged

    async def unmount(self, container_id: str) -> None:
        if self.refs[container_id] > 1:
            self.refs[container_id] -= 1
            return
        # The last reference — or none counted in this process (mounted before a restart).
        self.refs.pop(container_id, None)
        await anyio.to_thread.run_sync(_umount, str(self._dir(container_id) / "merged"))

    async def cleanup(self, keep: set[str], known: set[str]) -> None:
        for directory in list(self.root.iterdir()):
            if directory.name in keep:
                continue
            await anyio.to_thread.run_sync(_umount, str(directory / "merged"))
            if directory.name not in known:
                await anyio.to_thread.run_sync(shutil.rmtree, directory, True)

    async def remove(self, container_id: str) -> None:
        self.refs.pop(container_id, None)
        directory = self._dir(container_id)
        await anyio.to_thread.run_sync(_umount, str(directory / "merged"))
        await anyio.to_thread.run_sync(shutil.rmtree, directory, True)

    async def changes(self, container_id: str) -> list[dict[str, object]]:
        directory = self._dir(container_id)
        try:
            lower = (directory / "lower").read_text()
        except FileNotFoundError:
            raise errors.SystemError(f"layer of container {container_id} does not exist") from None
        layers = [Path(p) for p in lower.split(":") if p]
        return await anyio.to_thread.run_sync(overlay_changes, directory / "upper", layers)

    async def export(self, container_id: str) -> AsyncGenerator[bytes, None]:
        root = await self.mount(container_id)
        try:
            argv = ["tar", "--numeric-owner", "--xattrs", "--transform", r"s,^\./,,",
                    "-C", root, "-cf", "-", "."]  # fmt: skip
            try:
                process = await anyio.open_process(argv, stdin=None, stderr=subprocess.PIPE)
            except OSError as exc:
                raise errors.SystemError(f"failed to export: tar: {exc.strerror}") from exc
            async with process:
                assert process.stdout is not None
                try:
                    async for chunk in process.stdout:
                        yield chunk
                finally:
                    with anyio.CancelScope(shield=True):
                        if process.returncode is None:
                            process.kill()
                        await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self.unmount(container_id)

    async def size(self, container_id: str) -> int:
        return await anyio.to_thread.run_sync(_usage, self._dir(container_id) / "upper")

    def upper_dir(self, container_id: str) -> Path | None:
        return self._dir(container_id) / "upper"

    def mounted(self, container_id: str) -> bool:
        return os.path.ismount(self._dir(container_id) / "merged")


#: The mount points in ``/etc`` that the init layer holds.
_INIT_FILES = ("hostname", "hosts", "resolv.conf")


def _image_entry(layers: list[Path], name: str) -> os.stat_result | None:
    """The image's top-level ``name`` as overlayfs shows it (the top-most layer's): None if
    no layer has it or a whiteout hides it."""
    for layer in reversed(layers):
        try:
            info = os.lstat(layer / name)
        except FileNotFoundError:
            continue
        return None if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0 else info
    return None


def _make_init_layer(init: Path, layers: list[Path], owner: tuple[int, int] | None) -> None:
    """The container's init layer: ``etc`` with the engine's empty mount points. ``etc`` gets
    the image's owner and mode, as a copy-up would give it; the files belong to the
    container's root (``owner`` under user-namespace remapping). An image whose ``/etc`` is
    not a directory (a link) gets none: a directory here would hide it; the runtime makes
    its mount points, resolving the link inside the root."""
    init.mkdir(exist_ok=True)
    image_etc = _image_entry(layers, "etc")
    if image_etc is not None and not stat.S_ISDIR(image_etc.st_mode):
        return
    etc = init / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    if image_etc is not None:
        os.chown(etc, image_etc.st_uid, image_etc.st_gid)
        os.chmod(etc, stat.S_IMODE(image_etc.st_mode))
    else:
        if owner is not None:
            os.chown(etc, *owner)
        os.chmod(etc, 0o755)  # (not the umask's)
    for name in _INIT_FILES:
        fd = os.open(etc / name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)


#: What a start put in the layer of a container made before init layers (the mount points of
#: the files that name it on its network): not the container's changes either.
_ENGINE_FILES = frozenset({"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"})


def overlay_changes(upper: Path, lowers: list[Path]) -> list[dict[str, object]]:
    """``upper``'s entries as dockerd's changes: a whiteout (a 0/0 character device) deleted,
    an entry the image has changed, another added; a directory the image has is listed only
    if something in it is (overlayfs copies a directory up for any change below it)."""
    entries: dict[str, int] = {}
    directories: set[str] = set()
    for root, dirs, files in os.walk(upper):
        here = "/" + os.path.relpath(root, upper) if root != str(upper) else "/"
        for name in [*dirs, *files]:
            path = posixpath.join(here, name)
            if path in _ENGINE_FILES:
                continue
            info = os.lstat(os.path.join(root, name))
            in_image = any(os.path.lexists(layer / path.lstrip("/")) for layer in lowers)
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                entries[path] = 2
            else:
                entries[path] = 0 if in_image else 1
                if stat.S_ISDIR(info.st_mode) and in_image:
                    directories.add(path)
    for directory in directories:  # a changed directory with nothing changed inside: not one
        if not any(other.startswith(directory + "/") for other in entries):
            del entries[directory]
    return [{"Path": path, "Kind": kind} for path, kind in sorted(entries.items())]


def _usage(root: Path) -> int:
    """The bytes of the regular files below ``root`` (each inode once)."""
    total, seen = 0, set()
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(directory, name))
                if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_size
    return total
