"""``docker cp``'s file system half: HEAD, GET and PUT ``/containers/{id}/archive``.

dockerd (daemon/archive_unix.go, containerfs_linux.go) runs them chrooted into the container's
root, volumes bind-mounted. ``ContainerView`` walks that view through directory descriptors
(``O_PATH|O_NOFOLLOW``) and interprets links itself: an absolute target restarts at the root,
``..`` stops at ``/``, a mount destination goes on in its source. No host path below the root is
ever looked up, so neither a hostile link nor a container swapping a directory for a link
mid-copy reaches the host. Every function blocks: call it from a worker thread.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import posixpath
import shutil
import stat
import tarfile
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .. import errors
from .._log import get_logger
from ..spec import user_ids
from .source import ImportLimits

__all__ = [
    "ContainerView", "PathArchive", "ResolvedPath", "archive_path", "extract_to", "go_file_mode",
    "prepare_archive", "stat_header", "stat_path",
]  # fmt: skip

log = get_logger("asyncstart.images")

_MAX_LINKS = 255  # Go's EvalSymlinks and FollowSymlinkInScope
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = _PATH | os.O_DIRECTORY
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR = "SCHILY.xattr."
_KINDS = (
    *tarfile.REGULAR_TYPES,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.FIFOTYPE,
)

# Go's os.FileMode bits, as fillFileStatFromSys sets them from st_mode.
MODE_DIR, MODE_SYMLINK, MODE_DEVICE, MODE_NAMED_PIPE = 1 << 31, 1 << 27, 1 << 26, 1 << 25
MODE_SOCKET, MODE_SETUID, MODE_SETGID, MODE_CHAR_DEVICE = 1 << 24, 1 << 23, 1 << 22, 1 << 21
MODE_STICKY = 1 << 20
_GO_TYPE = {stat.S_IFBLK: MODE_DEVICE, stat.S_IFCHR: MODE_DEVICE | MODE_CHAR_DEVICE}
_GO_TYPE |= {stat.S_IFDIR: MODE_DIR, stat.S_IFIFO: MODE_NAMED_PIPE, stat.S_IFSOCK: MODE_SOCKET}
_GO_TYPE |= {stat.S_IFLNK: MODE_SYMLINK}
_GO_SPECIAL = {stat.S_ISGID: MODE_SETGID, stat.S_ISUID: MODE_SETUID, stat.S_ISVTX: MODE_STICKY}

Loc = tuple[int | None, str]  # (directory descriptor, name), or (None, a mount's host source)


def go_file_mode(mode: int) -> int:
    """Go's ``os.FileMode`` for an ``st_mode`` (what PathStat's ``mode`` holds)."""
    out = (mode & 0o777) | _GO_TYPE.get(stat.S_IFMT(mode), 0)
    return out | sum(go for bit, go in _GO_SPECIAL.items() if mode & bit)


def _clean(path: str) -> str:  # Go's filepath.Clean
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/") if out.startswith("//") else out


def _base(path: str) -> str:  # Go's filepath.Base
    stripped = path.rstrip("/")
    return (stripped.rsplit("/", 1)[-1] if stripped else "/") if path else "."


def _preserve(cleaned: str, original: str) -> str:
    """go-archive's ``PreserveTrailingDotOrSeparator``: a trailing ``/.`` or ``/`` survives."""
    if _base(cleaned) != "." and _base(original) == ".":
        cleaned += "." if cleaned.endswith("/") else "/."
    return cleaned + "/" if original.endswith("/") and not cleaned.endswith("/") else cleaned


def _split(path: str) -> tuple[list[str], bool]:
    """The components to walk, and whether the path asserts a directory (ends in /, /., /..)."""
    parts = path.split("/")
    return [p for p in parts if p not in ("", ".")], parts[-1] in ("", ".", "..")


def _q(text: str) -> str:  # Go's %q, near enough
    return json.dumps(text, ensure_ascii=False)


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _proc(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class _Breakout(Exception):
    """A relative link in an entry's path leaves the extraction directory."""


@dataclass(frozen=True, slots=True)
class ResolvedPath:
    """Where a container path is: on the host, in the container (clean, links resolved)."""

    host_path: Path
    container_path: str
    read_only: bool


@dataclass(eq=False)
class _Found:
    resolved: list[str]  # container path components, links resolved
    chain: list[int]  # descriptors of the existing directories along it; [0] is "/"
    st: os.stat_result | None = None  # the last component; None: missing
    loc: Loc = (None, "")
    owned: set[int] = field(default_factory=set)

    def at_dir(self) -> None:  # the last component is the directory chain ends with, if any
        exists = len(self.chain) > len(self.resolved)
        self.st, self.loc = (os.fstat(self.chain[-1]) if exists else None), (self.chain[-1], ".")


class ContainerView:
    """A container's file system as dockerd's copy sees it: ``rootfs`` (the mounted ``merged``)
    with ``mounts`` (``(destination, host source, read_only)``), destinations resolved in the
    root as dockerd's ``GetResourcePath`` (a source's own host path is trusted). ``name``: the
    container as the client named it; ``user``: its ``Config.User`` (for ``copyUIDGID``);
    ``id_map``: userns-remap's ``(uid, gid, size)``."""

    def __init__(self, rootfs: str | os.PathLike[str], mounts: Sequence[tuple[str, str, bool]] = (),
                 *, name: str = "", readonly_rootfs: bool = False, user: str = "",
                 id_map: tuple[int, int, int] | None = None) -> None:  # fmt: skip
        self.name, self.user, self.id_map = name, user, id_map
        self._mounts: dict[tuple[str, ...], tuple[str, bool]] = {}
        self._mounts[()] = (os.path.realpath(rootfs), readonly_rootfs)
        for dest, source, read_only in sorted(mounts, key=lambda m: _clean(m[0]).count("/")):
            comps = tuple(_split(_clean("/" + dest))[0])
            try:  # dockerd fails a start on an error here; the path as written is a best guess
                with self._walk(comps, lenient=True) as found:
                    comps = tuple(found.resolved)
            except OSError:
                pass
            self._mounts[comps] = (os.path.realpath(source), read_only)

    def resolve(self, path: str, *, follow_last: bool = True) -> ResolvedPath:
        """``path`` (relative: from ``/``) as the kernel in dockerd's chroot resolves it;
        ``follow_last=False`` is ``lstat``'s (a trailing ``/`` still follows). ELOOP after 255
        links. Missing: NotFound with dockerd's message; else SystemError."""
        try:
            with self._walk(path, follow_last=follow_last) as found:
                prefix, source, read_only = self._mount_of(found.resolved)
                host = Path(source, *found.resolved[len(prefix) :])
                return ResolvedPath(host, "/" + "/".join(found.resolved), read_only)
        except OSError as err:
            raise self._error(err, "lstat", path, path) from None

    def _error(self, err: OSError, op: str, path: str, shown: str) -> errors.DockerError:
        """As daemon/archive.go: not-exist is ``containerFileNotFound`` (404), the rest 500."""
        if err.errno == errno.ENOENT:
            return errors.NotFound(f"Could not find the file {shown} in container {self.name}")
        text = os.strerror(err.errno) if err.errno else str(err)
        return errors.SystemError(f"{op} {path}: {text[:1].lower()}{text[1:]}")

    def _mount_of(self, comps: Sequence[str]) -> tuple[tuple[str, ...], str, bool]:
        """The mount holding ``comps`` (the longest destination prefix; the root's is ``()``)."""
        size = max(len(d) for d in self._mounts if tuple(comps[: len(d)]) == d)
        return tuple(comps[:size]), *self._mounts[tuple(comps[:size])]

    def _busy(self, comps: tuple[str, ...]) -> bool:
        """A mount at or below ``comps``: removing it is EBUSY in dockerd."""
        return any(d[: len(comps)] == comps for d in self._mounts if len(d) >= len(comps) > 0)

    def _to_host(self, uid: int, gid: int) -> tuple[int, int]:
        """userns-remap's ``ToHost``, with moby/sys/user's error."""
        if self.id_map is None:
            return uid, gid
        for ident in (uid, gid):
            if not 0 <= ident < self.id_map[2]:
                raise errors.SystemError(f"container ID {ident} cannot be mapped to a host ID")
        return self.id_map[0] + uid, self.id_map[1] + gid

    @contextmanager
    def _walk(self, path: str | Sequence[str], *, follow_last: bool = True, lenient: bool = False,
              strict: bool = False, base: _Found | None = None) -> Iterator[_Found]:  # fmt: skip
        """Resolve ``path`` (a string, or components) from ``/``, or from ``base``: the scope
        where absolute links restart and ``..`` stops. ``lenient``: missing components are kept
        (go-archive, FollowSymlinkInScope); ``strict``: a relative link out of the scope before
        an absolute one is ``_Breakout`` (go-archive's os.Root refusal). Directories stay open
        while the ``with`` lasts: what was checked is what gets used."""
        comps, must_dir = _split(path) if isinstance(path, str) else (path, False)
        found = _Found([], [])
        chain, resolved = found.chain, found.resolved

        def enter(loc: Loc) -> None:
            chain.append(os.open(loc[1], _DIR, dir_fd=loc[0]))
            found.owned.add(chain[-1])

        def drop(keep: int) -> None:
            while len(chain) > keep:
                if (fd := chain.pop()) in found.owned:
                    found.owned.discard(fd)
                    os.close(fd)

        try:
            if base is None:
                enter((None, self._mounts[()][0]))
            else:
                chain += base.chain
                resolved += base.resolved
            scope, links, absolute, todo = len(resolved), 0, False, deque(comps)
            found.at_dir()
            while todo:
                name = todo.popleft()
                if name == "..":
                    if len(resolved) > scope:
                        resolved.pop()
                        drop(len(resolved) + 1)
                    elif strict and not absolute:
                        raise _Breakout
                    found.at_dir()
                    continue
                if len(chain) <= len(resolved):  # below a missing directory
                    resolved.append(name)
                    continue
                mount = self._mounts.get((*resolved, name))
                loc: Loc = (None, mount[0]) if mount else (chain[-1], name)
                try:
                    st = os.stat(loc[1], dir_fd=loc[0], follow_symlinks=False)
                except FileNotFoundError:
                    if not lenient:
                        raise
                    resolved.append(name)
                    found.st = None
                    continue
                if stat.S_ISLNK(st.st_mode) and (todo or follow_last or must_dir):
                    if (links := links + 1) > _MAX_LINKS:
                        raise _oserror(errno.ELOOP)
                    target = os.readlink(loc[1], dir_fd=loc[0])
                    if target.startswith("/"):
                        absolute = True
                        del resolved[scope:]
                        drop(scope + 1)
                    todo.extendleft(reversed(_split(target)[0]))
                    found.at_dir()
                    continue
                resolved.append(name)
                found.st, found.loc = st, loc
                if stat.S_ISDIR(st.st_mode):
                    enter(loc)
                    found.loc = (chain[-1], ".")
                elif todo:
                    raise _oserror(errno.ENOTDIR)
            if must_dir and found.st is not None and not stat.S_ISDIR(found.st.st_mode):
                raise _oserror(errno.ENOTDIR)
            yield found
        finally:
            for fd in found.owned:
                os.close(fd)

    def _read_text(self, path: str) -> str | None:
        """A small file of the container's (``/etc/passwd``), or None."""
        try:
            with self._walk(path) as found:
                fd = os.open(found.loc[1], _READ, dir_fd=found.loc[0])
            with os.fdopen(fd, "rb") as file:
                return file.read(4 << 20).decode("utf-8", "replace")
        except OSError:
            return None


def _go_time(ns: int) -> str:
    """A ``time.Time`` as Go's JSON writes it: RFC 3339 with nanoseconds, in the local zone."""
    sec, nsec = divmod(ns, 10**9)
    try:
        local = datetime.fromtimestamp(sec, UTC).astimezone()
    except (OverflowError, OSError, ValueError):
        local = datetime.fromtimestamp(0, UTC)
    delta = local.utcoffset()
    minutes = int(delta.total_seconds()) // 60 if delta else 0
    sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
    zone = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}" if minutes else "Z"
    frac = f".{nsec:09d}".rstrip("0") if nsec else ""
    return local.replace(tzinfo=None).isoformat(timespec="seconds") + frac + zone


def _stat(view: ContainerView, path: str, shown: str) -> dict[str, Any]:
    """dockerd's ``containerFSView.Stat``: ``lstat(path)`` in the container, and a link's target
    evaluated inside it (``FollowSymlinkInScope(path, "/")``: missing parts kept)."""
    try:
        if not path:
            raise _oserror(errno.ENOENT)
        with view._walk(path, follow_last=False) as found:
            st = found.st
        assert st is not None
    except OSError as err:
        raise view._error(err, "lstat", path, shown) from None
    target = ""
    if stat.S_ISLNK(st.st_mode):
        clean = _clean("/" + path)
        try:
            with view._walk(clean, lenient=True) as found:
                target = "/" + "/".join(found.resolved)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise view._error(err, "lstat", clean, shown) from None
            raise errors.SystemError(f"evalSymlinksInScope: too many links in {clean}") from None
    target = target.encode(errors="surrogateescape").decode(errors="replace")  # as Go's JSON
    return {"name": _base(path), "size": st.st_size, "mode": go_file_mode(st.st_mode),
            "mtime": _go_time(st.st_mtime_ns), "linkTarget": target}  # fmt: skip


def stat_path(view: ContainerView, path: str) -> dict[str, Any]:
    """HEAD: the ``container.PathStat`` of the path as given (dockerd stats the raw query path:
    its last link is not followed unless it ends in ``/``; ``file/`` is ENOTDIR, a 500)."""
    return _stat(view, path, path)


def stat_header(stat_: Mapping[str, Any]) -> str:
    """``X-Docker-Container-Path-Stat``: standard base64 of the stat as Go's ``json.Marshal``
    writes it (compact; ``<>&`` and U+2028/9 escaped, other characters as they are)."""
    text = json.dumps(dict(stat_), ensure_ascii=False, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return base64.b64encode(text.encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class PathArchive:
    """GET's answer before its body: ``stat`` for the header, ``write`` for the tar."""

    view: ContainerView
    path: str  # dockerd's absPath: clean, absolute, a trailing "/" or "/." kept
    stat: dict[str, Any]

    def write(self, out: IO[bytes]) -> None:
        """The plain tar, as go-archive's Tarballer with ``TarResourceRebaseOpts``: names start
        with ``filepath.Base(path)`` (for ``/``: ``/``, ``/bin``...), owners numeric, links as
        links, hard links as such, mounts below included; what cannot be read is logged and
        left out, as dockerd does. A reader gone (EPIPE) ends it quietly."""
        name = "" if (rebase := _base(self.path)) == "/" else rebase
        try:
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                try:
                    with self.view._walk(self.path, follow_last=False) as found:
                        _add(self.view, tar, {}, found.loc, tuple(found.resolved), name)
                except ConnectionError:
                    raise
                except OSError as err:
                    log.warning("copy.archive_failed", path=self.path, error=str(err))
        except ConnectionError:
            log.info("copy.archive_reader_gone", path=self.path)


def prepare_archive(view: ContainerView, path: str) -> PathArchive:
    """GET's first half (dockerd's ``containerArchivePath``): the stat of
    ``PreserveTrailingDotOrSeparator(Join("/", path), path)``; NotFound with dockerd's message."""
    abs_path = _preserve(_clean("/" + path), path)
    return PathArchive(view, abs_path, _stat(view, abs_path, path))


def archive_path(view: ContainerView, path: str, out: IO[bytes]) -> dict[str, Any]:
    """GET in one call: the tar of ``path`` written to ``out``; returns the stat."""
    (prepared := prepare_archive(view, path)).write(out)
    return prepared.stat


def _add(view: ContainerView, tar: tarfile.TarFile, seen: dict[Any, str], loc: Loc,
         comps: tuple[str, ...], name: str) -> None:  # fmt: skip
    st = os.stat(loc[1], dir_fd=loc[0], follow_symlinks=False)
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFSOCK:
        return  # Go's tar writer refuses sockets: dockerd logs and skips them
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = st.st_mode & 0o7777, st.st_mtime_ns // 10**9
    info.uid, info.gid = st.st_uid, st.st_gid  # as they are: dockerd's tar has no IDMap
    if kind != stat.S_IFDIR and st.st_nlink > 1:
        if (st.st_dev, st.st_ino) in seen:
            info.type, info.linkname = tarfile.LNKTYPE, seen[st.st_dev, st.st_ino]
            return tar.addfile(info)
        seen[st.st_dev, st.st_ino] = name
    if kind == stat.S_IFREG:
        with os.fdopen(os.open(loc[1], _READ, dir_fd=loc[0]), "rb") as file:
            info.size = os.fstat(file.fileno()).st_size
            try:  # as go-archive: security.capability only, v3 written as v2
                cap = os.getxattr(file.fileno(), "security.capability")
                cap = cap[:3] + b"\x02" + cap[4:20] if cap[3:4] == b"\x03" else cap
                value = cap.decode(errors="surrogateescape")
                info.pax_headers = {f"{_XATTR}security.capability": value}
            except OSError:
                pass
            return tar.addfile(info, file)
    if kind == stat.S_IFLNK:
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(loc[1], dir_fd=loc[0])
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        info.type = tarfile.DIRTYPE if kind == stat.S_IFDIR else tarfile.FIFOTYPE
    tar.addfile(info)
    if kind != stat.S_IFDIR:
        return
    fd = os.open(loc[1], _READ | os.O_DIRECTORY, dir_fd=loc[0])
    try:  # mount points missing from the root are there in dockerd's view: it makes them
        below = {d[-1] for d in view._mounts if len(d) == len(comps) + 1 and d[:-1] == comps}
        for child in sorted(set(os.listdir(fd)) | below):
            mount = view._mounts.get((*comps, child))
            where: Loc = (None, mount[0]) if mount else (fd, child)
            try:
                _add(view, tar, seen, where, (*comps, child), f"{name}/{child}")
            except ConnectionError:
                raise
            except OSError as err:
                log.warning("copy.archive_skipped", path=f"{name}/{child}", error=str(err))
    finally:
        os.close(fd)


def extract_to(view: ContainerView, path: str, tar_stream: IO[bytes], *,
               no_overwrite_dir_non_dir: bool, copy_uid_gid: bool,
               limits: ImportLimits | None = None) -> None:  # fmt: skip
    """PUT: dockerd's ``ContainerExtractToDir``. ``path``, every link followed, must exist (else
    404), be a directory (400 ``extraction point is not a directory``) and be writable (400
    ``mounted volume``/``container rootfs is marked read-only``). The tar (plain, gzip, bzip2,
    xz) is unpacked as go-archive's ``Unpack`` with the destination as its root: a leading
    ``/`` is dropped; links in an entry's path resolve in that root (absolute ones restart
    there; a relative one out of it is refused); what is in the way is replaced, but with
    ``no_overwrite_dir_non_dir`` a directory/non-directory swap is dockerd's 500. Owners: the
    headers' (remapped), or with ``copy_uid_gid`` and a ``Config.User``, that user's. Hostile
    content (``..``, device nodes, hard links out of the root, a bad tar, beyond ``limits``)
    is a 400; entries before it stay, as in dockerd; nothing is written outside the view."""
    abs_path = _preserve(_clean("/" + path), path)
    try:
        with view._walk(abs_path) as dest:
            assert dest.st is not None
            if not stat.S_ISDIR(dest.st.st_mode):
                raise errors.InvalidParameter("extraction point is not a directory")
            prefix, _, read_only = view._mount_of(dest.resolved)
            if read_only:
                what = "mounted volume" if prefix else "container rootfs"
                raise errors.InvalidParameter(f"{what} is marked read-only")
            owner = None
            if copy_uid_gid and view.user:
                passwd, group = view._read_text("/etc/passwd"), view._read_text("/etc/group")
                ids = user_ids(view.user, passwd, group)
                owner = view._to_host(ids["uid"], ids["gid"])
            unpack = _Unpack(view, dest, _clean(abs_path), path, no_overwrite_dir_non_dir, owner)
            unpack.run(tar_stream, limits or ImportLimits())
    except OSError as err:
        raise view._error(err, "lstat", abs_path, path) from None


@dataclass
class _Unpack:
    view: ContainerView
    dest: _Found
    dest_path: str
    shown: str
    no_overwrite: bool
    owner: tuple[int, int] | None
    dirs: list[tuple[list[str], int]] = field(default_factory=list)

    def run(self, stream: IO[bytes], limits: ImportLimits) -> None:
        entries = size = 0
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    entries, size = entries + 1, size + max(member.size, 0)
                    if entries > limits.max_entries:
                        raise limits.too_large(f"more than {limits.max_entries} entries")
                    if size > (most := limits.max_bytes):
                        raise limits.too_large(f"its members hold more than {most} bytes")
                    self._member(tar, member)
        except (tarfile.TarError, EOFError) as err:
            if str(err) != "empty file":  # Go's reader takes an empty body for an empty tar
                raise errors.InvalidParameter(f"invalid tar archive: {err}") from None
        for comps, mtime in reversed(self.dirs):  # after their content, as go-archive does
            try:
                with self.view._walk(comps, follow_last=False) as found:
                    if found.st is not None and stat.S_ISDIR(found.st.st_mode):
                        os.utime(_proc(found.chain[-1]), ns=(mtime, mtime))
            except OSError:
                pass

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = posixpath.normpath(member.name.lstrip("/"))
        if name == ".":
            return
        if name == ".." or name.startswith("../"):
            raise errors.InvalidParameter(f"invalid entry name {_q(member.name)}")
        if member.ischr() or member.isblk():
            raise errors.InvalidParameter(f"refusing to extract {_q(name)}: it is a device node")
        if member.type not in _KINDS:
            raise errors.InvalidParameter(f"unhandled tar header type {member.type[0]}")
        *dirs, base = name.split("/")
        try:
            with ExitStack() as stack:
                walk = self.view._walk(dirs, lenient=True, strict=True, base=self.dest)
                parent = stack.enter_context(walk)
                link = self._hardlink(stack, member.linkname) if member.islnk() else None
                self._place(tar, member, name, parent, base, link)
        except _Breakout:
            leaves = f"a link in its path leaves {self.dest_path}"
            raise errors.InvalidParameter(f"refusing to extract {_q(name)}: {leaves}") from None
        except OSError as err:
            raise self.view._error(err, "extract", name, self.shown) from None

    def _hardlink(self, stack: ExitStack, raw: str) -> tuple[Loc, tuple[str, ...]]:
        """go-archive's ``resolveHardlinkTarget``: a leading ``/`` means the extraction root."""
        target = posixpath.normpath(raw.lstrip("/") if raw.startswith("/") else raw)
        if target in (".", "..") or target.startswith("../"):
            raise errors.InvalidParameter(f"invalid hardlink target {_q(raw)}")
        *dirs, base = target.split("/")
        walk = self.view._walk(dirs, lenient=True, strict=True, base=self.dest)
        if (parent := stack.enter_context(walk)).st is None:
            raise _oserror(errno.ENOENT)
        here = (*parent.resolved, base)
        mount = self.view._mounts.get(here)
        loc: Loc = (None, mount[0]) if mount else (parent.chain[-1], base)
        return loc, self.view._mount_of(here)[0]

    def _place(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, parent: _Found,
               base: str, link: tuple[Loc, tuple[str, ...]] | None) -> None:  # fmt: skip
        here = (*parent.resolved, base)
        prefix, source, read_only = self.view._mount_of(here)
        if read_only:
            raise _oserror(errno.EROFS)
        if parent.st is None:
            self._implied(parent)
        elif not stat.S_ISDIR(parent.st.st_mode):
            raise _oserror(errno.ENOTDIR)
        pfd = parent.chain[-1]
        loc: Loc = (None, source) if prefix == here else (pfd, base)
        try:
            old: os.stat_result | None = os.stat(loc[1], dir_fd=loc[0], follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None and not (stat.S_ISDIR(old.st_mode) and member.isdir()):
            if self.no_overwrite and (stat.S_ISDIR(old.st_mode) or member.isdir()):
                kinds = ("non-directory", "directory")[:: 1 if member.isdir() else -1]
                where = f"{_q(name)} with {kinds[1]} {_q(self.dest_path)}"
                raise errors.SystemError(f"cannot overwrite {kinds[0]} {where}")
            if self.view._busy(here):
                raise _oserror(errno.EBUSY)
            if stat.S_ISDIR(old.st_mode):
                shutil.rmtree(base, dir_fd=pfd)
            else:
                os.unlink(base, dir_fd=pfd)
            old = None
        if member.isdir() and old is None:
            os.mkdir(base, member.mode & 0o777, dir_fd=pfd)
        elif member.isreg():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            data = tar.extractfile(member)
            assert data is not None
            with os.fdopen(os.open(base, flags, member.mode & 0o777, dir_fd=pfd), "wb") as out:
                shutil.copyfileobj(data, out, 1 << 20)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=pfd)
        elif link is not None:
            if link[1] != prefix:
                raise _oserror(errno.EXDEV)
            os.link(link[0][1], base, src_dir_fd=link[0][0], dst_dir_fd=pfd, follow_symlinks=False)
        elif member.isfifo():
            os.mkfifo(base, member.mode & 0o777, dir_fd=pfd)
        self._attributes(member, loc, list(here))

    def _implied(self, parent: _Found) -> None:
        """Missing parents: 0755 and the (remapped) root's, as createImpliedDirectories."""
        uid, gid = self.view._to_host(0, 0)
        for name in parent.resolved[len(parent.chain) - 1 :]:
            os.mkdir(name, 0o755, dir_fd=parent.chain[-1])
            parent.chain.append(os.open(name, _DIR, dir_fd=parent.chain[-1]))
            parent.owned.add(parent.chain[-1])
            os.chmod(_proc(parent.chain[-1]), 0o755)
            if uid or gid:
                os.chown(_proc(parent.chain[-1]), uid, gid)
        parent.at_dir()

    def _attributes(self, member: tarfile.TarInfo, loc: Loc, comps: list[str]) -> None:
        """Owner, xattrs (EPERM and ENOTSUP ignored), mode (after the owner: chown clears set-id
        bits), times, as go-archive's ``createTarFile``; through a descriptor of the entry, so
        never through a link a container swapped in meanwhile."""
        uid, gid = self.owner or self.view._to_host(member.uid, member.gid)
        mtime = int(member.mtime * 10**9) if 0 <= member.mtime < (1 << 63) / 10**9 else 0
        fd = os.open(loc[1], _PATH, dir_fd=loc[0])
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                os.chown(loc[1], uid, gid, dir_fd=loc[0], follow_symlinks=False)
                return os.utime(loc[1], ns=(mtime, mtime), dir_fd=loc[0], follow_symlinks=False)
            os.chown(_proc(fd), uid, gid)
            for key, value in member.pax_headers.items():
                try:
                    if key.startswith(_XATTR):
                        xattr = value.encode(errors="surrogateescape")
                        os.setxattr(_proc(fd), key[len(_XATTR) :], xattr)
                except OSError as err:
                    if err.errno not in (errno.EPERM, errno.ENOTSUP):
                        raise
            os.chmod(_proc(fd), member.mode & 0o7777)
            if member.isdir():
                self.dirs.append((comps, mtime))
            else:
                os.utime(_proc(fd), ns=(mtime, mtime))
        finally:
            os.close(fd)
