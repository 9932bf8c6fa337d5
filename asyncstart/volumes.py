"""Volumes: dockerd's ``local`` driver and its store, with dockerd's answers.

Each volume is ``root/<name>/_data`` (dockerd's layout; ``root`` is ``data_root/volumes``) and
its metadata ``root/<name>/volume.json`` (created at, labels, options, anonymous), written
whole or not at all. A directory with ``_data`` and a missing or garbled metadata file is still
a volume (without labels; created at its directory's ctime, as dockerd's local driver says).
Names are checked against the local driver's pattern before any path is made of them, so no
name reaches outside ``root``. ``root`` and the volumes' own directories are 0700 (0710 to the
remapped root's group), so no other host user reaches a volume's content — a setuid binary an
image or a container leaves there is no way to host root; ``_data`` is 0755, the remapped
root's. Blocking work runs in worker threads; one lock orders creations and removals.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec

from . import errors
from ._log import get_logger
from .filters import Filters, has_label, normalise
from .fsdirs import spread_subdirectories
from .ids import random_hex
from .mounts import VOLUME_NAME, check_volume_name
from .store import write_atomic

__all__ = ["ANONYMOUS_LABEL", "VolumeStore", "copy_up", "resolve_in_root"]

log = get_logger("asyncstart.volumes")

#: The label dockerd (23+) puts on the volumes it names itself; ``prune`` takes only those.
ANONYMOUS_LABEL: Final = "com.docker.volume.anonymous"
_DATA: Final = "_data"
_META: Final = "volume.json"
_TRASH: Final = ".trash-"  # a volume being removed (not a valid name: never listed)
_LIST_FILTERS: Final = ("dangling", "name", "driver", "label")
_PRUNE_FILTERS: Final = ("label", "label!", "all")
_LOCAL_OPTS: Final = ("type", "o", "device", "size")
_REQUIRED_OPTS: Final = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
_GO_BOOLS: Final = {**dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
                    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False)}  # fmt: skip

Volume = dict[str, Any]
_Volumes = list[Volume]  # (the store's ``list`` method hides the builtin in its class)
_Pruned = tuple[list[str], int]


class _Meta(msgspec.Struct, rename="pascal", kw_only=True):
    created_at: str
    labels: dict[str, str] | None = None
    options: dict[str, str] | None = None
    anonymous: bool = False


def _rfc3339(when: float) -> str:
    """Go's ``time.RFC3339`` of a local time: seconds, ``Z`` for UTC."""
    text = datetime.fromtimestamp(int(when)).astimezone().isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def _valid(name: str) -> bool:
    return VOLUME_NAME.fullmatch(name) is not None


def _no_such(name: str) -> errors.NotFound:
    return errors.NotFound(f"get {name}: no such volume")


def _check_driver_opts(name: str, opts: Mapping[str, str] | None) -> None:
    """The local driver's ``validateOpts`` (its 400s), then the refusal: this engine mounts no
    device nor network file system at a volume's first use, so any option is refused."""
    opts = opts or {}
    unknown = [key for key in opts if key not in _LOCAL_OPTS]
    needed = [need for key, need in _REQUIRED_OPTS.items() if key in opts]
    missing = [other for need in needed for other in need if other not in opts]
    problem = (
        f'invalid option: "{unknown[0]}"' if unknown
        else "quota size requested but no quota support" if "size" in opts
        else f'missing required option: "{missing[0]}"' if missing
        else f"asyncstart's local volume driver does not mount devices or network file systems: "
        f"DriverOpts {dict(opts)} are refused rather than ignored" if opts
        else None
    )  # fmt: skip
    if problem is not None:
        raise errors.InvalidParameter(f"create {name}: {problem}")


def _bool_filter(wanted: Filters, key: str) -> bool | None:
    """dockerd's ``GetBoolOrDefault``: absent None; one of true/1 or false/0, else a 400."""
    if key not in wanted:
        return None
    values = wanted[key]
    truthy, falsy = bool(values & {"1", "true"}), bool(values & {"0", "false"})
    if not values or truthy == falsy:
        shown = f"={_go_list(values)}" if values else ""
        raise errors.InvalidParameter(f"invalid filter '{key}{shown}'")
    return truthy


def _go_list(values: Collection[str]) -> str:
    return "[" + " ".join(sorted(values)) + "]"


def _prune_filters(filters: Mapping[str, Any] | None) -> Filters:
    """dockerd's ``withPrune``: ``all`` (one Go bool) or only anonymous volumes; then its
    accepted keys (``label``, ``label!``, ``all``)."""
    every = normalise(filters, list(filters or ())).get("all")
    if every is not None and len(every) > 1:
        raise errors.InvalidParameter(
            f"invalid filter 'all={_go_list(every)}': only one value is expected"
        )
    wanted = normalise(filters, _PRUNE_FILTERS)
    value = next(iter(every or ()), None)
    if value is not None and value not in _GO_BOOLS:
        raise errors.InvalidParameter(
            f"invalid filter 'all': strconv.ParseBool: parsing \"{value}\": invalid syntax"
        )
    if value is None or not _GO_BOOLS[value]:
        wanted.setdefault("label", set()).add(ANONYMOUS_LABEL)
    return wanted


def _labels_match(volume: Volume, wanted: Filters) -> bool:
    """``label``: every one matches (key, or key=value); ``label!``: not all of them match."""
    labels = volume["Labels"] or {}
    if not all(has_label(labels, label) for label in wanted.get("label", ())):
        return False
    excluded = wanted.get("label!", set())
    return not (excluded and labels and all(has_label(labels, e) for e in excluded))


def _name_matches(name: str, patterns: Collection[str]) -> bool:
    """dockerd's ``Match``: the name itself, or a (Go) regular expression found in it."""
    for pattern in patterns:
        try:
            if pattern == name or re.search(pattern, name):
                return True
        except re.error:
            continue
    return False


class VolumeStore:
    """dockerd's volume service over its ``local`` driver, under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        fsync: bool = True,
        root_ids: tuple[int, int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self._fsync = fsync
        self._root_ids = root_ids  # the remapped root (user namespaces): owns each _data
        self._clock = clock
        self._lock = anyio.Lock()
        self._pruning = False

    def mountpoint(self, name: str) -> Path:
        """Where a volume's data lives (what the runtime bind-mounts); 404 for a bad name."""
        if not _valid(name):
            raise _no_such(name)
        return self.root / name / _DATA

    # -- the API's operations ----------------------------------------------------------------

    async def create(
        self,
        name: str | None = None,
        driver: str = "local",
        driver_opts: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        anonymous: bool = False,
    ) -> Volume:
        """dockerd's volume create: an existing volume of that name is returned as it is (its
        labels and options kept); no name makes an anonymous volume (64 hex, labelled
        ``com.docker.volume.anonymous``). Another driver is dockerd's 404 for a plugin not
        found; a bad name or option its 400."""
        if not name:
            name, anonymous = random_hex(32), True
        if anonymous:
            labels = {**(labels or {}), ANONYMOUS_LABEL: ""}
        if driver not in ("", "local"):
            raise errors.NotFound(
                f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" '
                "not found"
            )
        check_volume_name(name)
        async with self._lock:
            existing = await anyio.to_thread.run_sync(self._read, name)
            if existing is not None:
                return existing
            _check_driver_opts(name, driver_opts)
            meta = _Meta(
                created_at=_rfc3339(self._clock()),
                labels=None if labels is None else dict(labels),
                options=None if driver_opts is None else dict(driver_opts),
                anonymous=anonymous,
            )
            return await anyio.to_thread.run_sync(self._make, name, meta)

    async def get(self, name: str) -> Volume:
        """A volume as dockerd's ``GET /volumes/{name}`` shows it (404 ``no such volume``)."""
        volume = await anyio.to_thread.run_sync(self._read, name)
        if volume is None:
            raise _no_such(name)
        return volume

    async def list(
        self, filters: Mapping[str, Any] | None = None, *, in_use: Collection[str] = ()
    ) -> _Volumes:
        """``GET /volumes``, by name: dockerd's filters ``name`` (the name, or a regular
        expression found in it), ``driver``, ``label`` (all of them) and ``dangling`` (not in
        ``in_use``, the names the containers hold); another key is a 400."""
        wanted = normalise(filters, _LIST_FILTERS)
        dangling = _bool_filter(wanted, "dangling")

        def matches(volume: Volume) -> bool:  # (a client's regular expression: in a thread)
            return (
                ("driver" not in wanted or volume["Driver"] in wanted["driver"])
                and ("name" not in wanted or _name_matches(volume["Name"], wanted["name"]))
                and _labels_match(volume, wanted)
                and (dangling is None or (volume["Name"] in in_use) != dangling)
            )

        return await anyio.to_thread.run_sync(lambda: [v for v in self._all() if matches(v)])

    async def remove(
        self, name: str, *, force: bool = False, in_use: Mapping[str, Sequence[str]]
    ) -> None:
        """``docker volume rm``: 404 for a missing volume (nothing with ``force``); 409 while
        containers use it (``in_use``: name -> their IDs), ``force`` or not, as dockerd."""
        async with self._lock:
            if await anyio.to_thread.run_sync(self._read, name) is None:
                if force:
                    return
                raise _no_such(name)
            if users := in_use.get(name):
                raise errors.Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            await anyio.to_thread.run_sync(self._delete, name)

    async def prune(
        self, filters: Mapping[str, Any] | None = None, *, in_use: Collection[str] = ()
    ) -> _Pruned:
        """``docker volume prune`` (API >= 1.42): the unused anonymous volumes (every unused
        one with ``all=true``) passing the ``label``/``label!`` filters and holding no driver
        options; the names removed and the bytes freed. One prune at a time (409)."""
        if self._pruning:
            raise errors.Conflict("a prune operation is already running")
        self._pruning = True
        try:
            wanted = _prune_filters(filters)
            async with self._lock:
                return await anyio.to_thread.run_sync(self._prune, wanted, frozenset(in_use))
        finally:
            self._pruning = False

    async def usage(self, name: str) -> int:
        """The bytes a volume's data holds (``system df``; hard links counted once)."""
        if await anyio.to_thread.run_sync(self._read, name) is None:
            raise _no_such(name)
        return await anyio.to_thread.run_sync(_size, self.mountpoint(name))

    async def populate(self, name: str, rootfs: Path, destination: str) -> bool:
        """dockerd's copy-up at create: an empty volume takes what the image has at its mount
        point, found in ``rootfs`` as dockerd's ``GetResourcePath`` does (links followed as
        if ``rootfs`` were ``/``: :func:`resolve_in_root`), then :func:`copy_up`. False when
        nothing was copied."""
        async with self._lock:
            if await anyio.to_thread.run_sync(self._read, name) is None:
                raise _no_such(name)
            try:
                source = await anyio.to_thread.run_sync(resolve_in_root, rootfs, destination)
                return await anyio.to_thread.run_sync(copy_up, source, self.mountpoint(name))
            except (OSError, RecursionError) as exc:
                raise errors.SystemError(f"failed to populate volume {name}: {exc}") from None

    async def cleanup(self) -> None:
        """What a daemon killed mid-removal left: the volumes it was deleting."""
        async with self._lock:
            await anyio.to_thread.run_sync(self._empty_trash)

    # -- in a worker thread ------------------------------------------------------------------

    def _read(self, name: str) -> Volume | None:
        """The volume's JSON, or None: a bad name, no directory, no ``_data`` nor metadata."""
        if not _valid(name):
            return None
        path = self.root / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(info.st_mode):
            return None
        meta = self._meta(path)
        if meta is None and not _is_dir(path / _DATA):
            return None
        meta = meta or _Meta(created_at=_rfc3339(info.st_ctime))
        return {
            "CreatedAt": meta.created_at,
            "Driver": "local",
            "Labels": meta.labels,
            "Mountpoint": str(path / _DATA),
            "Name": name,
            "Options": meta.options,
            "Scope": "local",
        }

    def _meta(self, path: Path) -> _Meta | None:
        try:
            return msgspec.json.decode((path / _META).read_bytes(), type=_Meta)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("volume.metadata_unreadable", volume=path.name, error=str(exc))
            return None

    def _make(self, name: str, meta: _Meta) -> Volume:
        try:
            _private_dir(self.root, self._root_ids)  # (a link there is refused, not followed)
        except OSError as exc:
            raise errors.SystemError(
                f"create {name}: error while creating volume root path '{self.root}': "
                f"{exc.strerror}"
            ) from None
        spread_subdirectories(self.root)  # a volume per container, often (anonymous ones)
        path = self.root / name
        try:
            _private_dir(path, self._root_ids)
            data = path / _DATA
            _mkdir(data, 0o755)
            if self._root_ids is not None:
                os.chown(data, *self._root_ids, follow_symlinks=False)
            write_atomic(path / _META, msgspec.json.encode(meta), fsync=self._fsync)
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise errors.SystemError(
                f"create {name}: error while creating volume path '{path}': {exc.strerror}"
            ) from None
        log.info("volume.created", volume=name, anonymous=meta.anonymous)
        volume = self._read(name)
        assert volume is not None
        return volume

    def _all(self) -> _Volumes:
        try:
            names = sorted(entry.name for entry in os.scandir(self.root) if _valid(entry.name))
        except FileNotFoundError:
            return []
        return [volume for name in names if (volume := self._read(name)) is not None]

    def _delete(self, name: str) -> None:
        """Out of sight at once (renamed into the trash), then deleted, never through a link."""
        trash = self.root / f"{_TRASH}{name}-{random_hex(4)}"
        try:
            (self.root / name).rename(trash)
            shutil.rmtree(trash)
        except OSError as exc:
            raise errors.SystemError(
                f"remove {name}: error removing volume path '{trash}': {exc.strerror}"
            ) from None
        log.info("volume.removed", volume=name)

    def _prune(self, wanted: Filters, in_use: frozenset[str]) -> _Pruned:
        removed: list[str] = []
        reclaimed = 0
        for volume in self._all():
            name = volume["Name"]
            if name in in_use or volume["Options"] or not _labels_match(volume, wanted):
                continue
            size = _size(Path(volume["Mountpoint"]))
            try:
                self._delete(name)
            except errors.SystemError as exc:
                log.warning("volume.prune_failed", volume=name, error=str(exc))
                continue
            removed.append(name)
            reclaimed += size
        return removed, reclaimed

    def _empty_trash(self) -> None:
        for entry in os.scandir(self.root) if self.root.is_dir() else ():
            if entry.name.startswith(_TRASH):
                shutil.rmtree(entry.path, ignore_errors=True)


# -- files -----------------------------------------------------------------------------------


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def _mkdir(path: Path, mode: int) -> None:
    """A directory of ours with ``mode``: made, or already there — a directory, not a link."""
    try:
        path.mkdir(mode)
    except FileExistsError:
        if not _is_dir(path):
            raise
    os.chmod(path, mode)


def _private_dir(path: Path, root_ids: tuple[int, int] | None) -> None:
    """0700 (0710 with the remapped root's group, which must reach ``_data``)."""
    _mkdir(path, 0o700 if root_ids is None else 0o710)
    if root_ids is not None:
        os.chown(path, os.getuid(), root_ids[1], follow_symlinks=False)
        os.chmod(path, 0o710)


def _size(path: Path) -> int:
    """dockerd's ``directory.Size``: the sizes of what is not a directory (links not
    followed), each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                info = os.lstat(os.path.join(top, name))
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode) or not info.st_size:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: How each kind of entry is opened: never through a link, never blocking (a FIFO).
_OPEN: Final = {stat.S_IFDIR: _DIR_FLAGS, stat.S_IFREG: os.O_RDONLY, stat.S_IFIFO: os.O_RDONLY}


def resolve_in_root(root: Path, path: str) -> Path:
    """``path`` inside ``root`` with its links followed as if ``root`` were ``/`` (moby's
    ``FollowSymlinkInScope``): nothing it names is outside ``root``."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved[:-1]
        if part in (".", ".."):
            continue
        try:
            info = os.lstat(root.joinpath(*resolved, part))
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if not stat.S_ISLNK(info.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > 255:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
        target = os.readlink(root.joinpath(*resolved, part))
        resolved = [] if target.startswith("/") else resolved
        parts = [p for p in target.split("/") if p] + parts
    return root.joinpath(*resolved)


def copy_up(source: Path, target: Path) -> bool:
    """dockerd's ``copyExistingContents``: if ``target`` is empty and ``source`` a directory,
    its content (owners, modes, times, extended attributes) and its own owner and mode are
    copied. Every step goes through directory descriptors and never follows a link: a link
    in the image is copied as a link, whatever it points to; ``source`` itself must not be
    one (the caller resolves it inside the root filesystem). Device nodes and sockets are
    left out; hard links become copies. False when nothing was copied."""
    try:
        src = os.open(source, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        log.warning("volume.copy_up_refused", source=str(source), reason="a symbolic link")
        return False
    try:
        dst = os.open(target, _DIR_FLAGS)
        try:
            if os.listdir(dst):
                return False
            _copy_tree(src, dst)
            _copy_meta(src, dst, os.fstat(src))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return True


def _copy_tree(src: int, dst: int) -> None:
    with os.scandir(src) as entries:
        children = [(entry.name, entry.stat(follow_symlinks=False)) for entry in entries]
    for name, info in children:
        kind = stat.S_IFMT(info.st_mode)
        if kind == stat.S_IFLNK:
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
            try:
                os.chown(name, info.st_uid, info.st_gid, dir_fd=dst, follow_symlinks=False)
            except PermissionError:
                log.debug("volume.copy_up_chown_refused", name=name)
            times = (info.st_atime_ns, info.st_mtime_ns)
            os.utime(name, ns=times, dir_fd=dst, follow_symlinks=False)
        elif kind in _OPEN:
            _copy_entry(name, kind, src, dst)
        else:
            log.warning("volume.copy_up_left_out", name=name, mode=oct(info.st_mode))


def _copy_entry(name: str, kind: int, src: int, dst: int) -> None:
    """One directory, file or FIFO: opened without following a link (and skipped if it is no
    longer what was listed), made anew on the other side, copied, then its metadata."""
    flags = _OPEN[kind] | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    src_fd = os.open(name, flags, dir_fd=src)
    try:
        info = os.fstat(src_fd)
        if stat.S_IFMT(info.st_mode) != kind:
            return
        if kind == stat.S_IFREG:
            create = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            dst_fd = os.open(name, create, 0o600, dir_fd=dst)
        else:
            (os.mkdir if kind == stat.S_IFDIR else os.mkfifo)(name, 0o700, dir_fd=dst)
            dst_fd = os.open(name, flags, dir_fd=dst)
        try:
            if kind == stat.S_IFDIR:
                _copy_tree(src_fd, dst_fd)
            elif kind == stat.S_IFREG:
                _copy_bytes(src_fd, dst_fd)
            _copy_meta(src_fd, dst_fd, info)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def _copy_bytes(src: int, dst: int) -> None:
    while os.sendfile(dst, src, None, 1 << 30):
        pass


def _copy_meta(src: int, dst: int, info: os.stat_result) -> None:
    """Owner, then mode (a chown clears set-id bits), extended attributes, then times."""
    try:
        os.fchown(dst, info.st_uid, info.st_gid)
    except PermissionError:
        log.debug("volume.copy_up_chown_refused")
    os.fchmod(dst, stat.S_IMODE(info.st_mode))
    try:
        for key in os.listxattr(src):
            os.setxattr(dst, key, os.getxattr(src, key))
    except OSError as exc:  # best effort: not every file system keeps every attribute
        log.debug("volume.copy_up_xattr_skipped", error=str(exc))
    os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns))
