"""``docker commit``: a container's overlay upper directory as a layer tar in Docker's spelling,
and the config of the image it makes (dockerd's ``daemon/commit.go``, ``image.NewChildImage``).

The tar is what dockerd's overlay2 driver writes (``go-archive`` with its overlay whiteout
converter): entries in lexical order, a directory before its contents; numeric owners, no
names; modes with set-id and sticky bits; mtimes in whole seconds; hard links within the layer
as links to the first name; ``security.capability`` the only xattr kept (as dockerd: a v3
capability becomes v2); an overlay whiteout (a 0/0 character device) as an empty ``.wh.<name>``
file (mode 0600); an opaque directory (``trusted.overlay.opaque=y``) as the directory then an
empty ``.wh..wh..opq`` in it; sockets skipped. The engine's own mount points, which dockerd
keeps in an init layer below the container's, are left out: ``/etc/hostname``, ``/etc/hosts``
and ``/etc/resolv.conf`` when they are the empty files the start made, and ``/etc`` itself when
it holds nothing else.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from .. import errors
from ..hostinfo import go_arch
from .changes import apply_changes
from .layers import EMPTY_LAYER
from .save import TarWriter

__all__ = ["child_config", "commit_config", "layer_tar_from_upper", "merge_config"]

_ENGINE_FILES = frozenset({"hostname", "hosts", "resolv.conf"})  # in /etc
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_CAPABILITY = "security.capability"


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def _opaque(path: str) -> bool:
    return any(_xattr(path, name) == b"y" for name in _OPAQUE_XATTRS)


def _placeholder(path: str) -> bool:
    """An empty regular file: what the start made as a mount point."""
    st = os.lstat(path)
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _engine_only(path: str) -> bool:
    """Whether the upper ``etc`` holds only the start's mount points (then it is not the
    container's change: dockerd has them in its init layer)."""
    names = os.listdir(path)
    return (
        bool(names)
        and set(names) <= _ENGINE_FILES
        and not _opaque(path)
        and all(_placeholder(os.path.join(path, name)) for name in names)
    )


def _children(upper: str, relative: str) -> list[tuple[str, str]]:
    """(relative name, path) of a directory's entries in byte order, the start's mount
    points left out."""
    directory = os.path.join(upper, relative)
    children = []
    for name in sorted(os.listdir(directory), key=os.fsencode):
        child = f"{relative}/{name}" if relative else name
        path = os.path.join(directory, name)
        if relative == "etc" and name in _ENGINE_FILES and _placeholder(path):
            continue
        if child == "etc" and _real_dir(path) and _engine_only(path):
            continue
        children.append((child, path))
    return children


def _real_dir(path: str) -> bool:
    return stat.S_ISDIR(os.lstat(path).st_mode)


def _entries(upper: str) -> Iterator[tuple[str, str]]:
    """Every entry below ``upper`` as Go's ``WalkDir`` visits them: names in byte order, a
    directory before its contents (no recursion: any depth)."""
    stack = [iter(_children(upper, ""))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        yield item
        if _real_dir(item[1]):
            stack.append(iter(_children(upper, item[0])))


def _to_container(host_id: int, base: int, size: int) -> int:
    if not base <= host_id < base + size:
        raise errors.SystemError(f"Host ID {host_id} cannot be mapped to a container ID")
    return host_id - base


def _header(
    name: str, path: str, st: os.stat_result, id_map: tuple[int, int, int] | None
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid
    if id_map is not None:
        uid_base, gid_base, size = id_map
        info.uid = _to_container(st.st_uid, uid_base, size)
        info.gid = _to_container(st.st_gid, gid_base, size)
    capability = _xattr(path, _CAPABILITY)
    if capability:
        if len(capability) > 3 and capability[3] == 3:  # VFS_CAP_REVISION_3 -> 2
            capability = capability[:3] + b"\x02" + capability[4:20]
        value = capability.decode("utf-8", "surrogateescape")
        info.pax_headers = {"SCHILY.xattr." + _CAPABILITY: value}
    return info


def layer_tar_from_upper(
    upper: Path, out: BinaryIO, *, id_map: tuple[int, int, int] | None = None
) -> int:
    """Write the container's changes, its overlay ``upper`` directory, into ``out`` as a layer
    tar in Docker's spelling (module doc); return the members written (0: no change — the tar
    is then the two zero blocks, whose digest is :data:`~.layers.EMPTY_LAYER`).

    ``id_map`` (host uid, host gid, size) is the user-namespace remapping: owners are written
    as the container sees them (whiteouts, made by the kernel, as they are)."""
    writer = TarWriter(out)
    seen: dict[tuple[int, int], str] = {}
    for name, path in _entries(str(upper)):
        st = os.lstat(path)
        mode = st.st_mode
        if stat.S_ISCHR(mode) and st.st_rdev == 0:  # an overlay whiteout
            parent, _, base = name.rpartition("/")
            info = _header(f"{parent}/.wh.{base}" if parent else f".wh.{base}", path, st, None)
            info.mode, info.pax_headers = 0o600, {}
            writer.add(info)
        elif stat.S_ISDIR(mode):
            info = _header(name + "/", path, st, id_map)
            info.type = tarfile.DIRTYPE
            writer.add(info)
            if _opaque(path):
                opaque = tarfile.TarInfo(f"{name}/.wh..wh..opq")
                opaque.mode, opaque.uid, opaque.gid = info.mode & 0o777, info.uid, info.gid
                writer.add(opaque)
        elif not stat.S_ISSOCK(mode):  # (sockets are not archived)
            info = _header(name, path, st, id_map)
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:  # a hard link to an earlier name
                info.type, info.linkname = tarfile.LNKTYPE, seen[key]
                writer.add(info)
                continue
            if st.st_nlink > 1:
                seen[key] = name
            if stat.S_ISREG(mode):
                info.size = st.st_size
                with open(path, "rb") as file:
                    writer.add(info, file)
                continue
            if stat.S_ISLNK(mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            elif stat.S_ISFIFO(mode):
                info.type = tarfile.FIFOTYPE
            else:
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            writer.add(info)
    writer.close()
    return writer.members


# -- the image config ------------------------------------------------------------------------


def merge_config(user: dict[str, Any], image: Mapping[str, Any]) -> dict[str, Any]:
    """dockerd's ``merge(userConf, imageConf)`` (``daemon/commit.go``): what ``user`` leaves
    unset taken from ``image`` (the container's config); ``user`` is changed and returned."""
    if not user.get("User"):
        user["User"] = image.get("User", "")
    if not user.get("ExposedPorts"):
        user["ExposedPorts"] = copy.deepcopy(image.get("ExposedPorts"))
    elif image.get("ExposedPorts"):
        for port in image["ExposedPorts"]:
            user["ExposedPorts"].setdefault(port, {})
    if not user.get("Env"):
        user["Env"] = copy.deepcopy(image.get("Env"))
    else:
        own = {item.partition("=")[0] for item in user["Env"]}
        user["Env"] += [e for e in image.get("Env") or () if e.partition("=")[0] not in own]
    labels = user.get("Labels") or {}
    user["Labels"] = {**(image.get("Labels") or {}), **labels}
    if not user.get("Entrypoint"):
        if not user.get("Cmd"):
            user["Cmd"] = copy.deepcopy(image.get("Cmd"))
        if user.get("Entrypoint") is None:
            user["Entrypoint"] = copy.deepcopy(image.get("Entrypoint"))
    if image.get("Healthcheck") is not None:
        if user.get("Healthcheck") is None:
            user["Healthcheck"] = copy.deepcopy(image["Healthcheck"])
        else:
            for key in ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
                if not user["Healthcheck"].get(key) and image["Healthcheck"].get(key):
                    user["Healthcheck"][key] = copy.deepcopy(image["Healthcheck"][key])
    if not user.get("WorkingDir"):
        user["WorkingDir"] = image.get("WorkingDir", "")
    if not user.get("Volumes"):
        user["Volumes"] = copy.deepcopy(image.get("Volumes"))
    else:
        user["Volumes"].update(image.get("Volumes") or {})
    if not user.get("StopSignal"):
        user["StopSignal"] = image.get("StopSignal", "")
    return user


def commit_config(
    config: Mapping[str, Any] | None, container_config: Mapping[str, Any], changes: Iterable[str]
) -> dict[str, Any]:
    """The new image's ``config``: the request's config (the container's if it sent none),
    the ``changes`` applied (400 for one dockerd refuses), then merged over the container's."""
    return merge_config(apply_changes(config or container_config, changes), container_config)


def _go_time(nanoseconds: int) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros dropped (how dockerd writes ``created``)."""
    seconds, fraction = divmod(nanoseconds, 10**9)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def child_config(
    parent: Mapping[str, Any],
    diff_id: str,
    config: Mapping[str, Any],
    *,
    container_id: str,
    container_config: Mapping[str, Any],
    author: str = "",
    comment: str = "",
    now_ns: int | None = None,
) -> bytes:
    """The serialised config of the image a commit makes on ``parent`` (its config; empty for
    none): dockerd's ``image.NewChildImage``. The layer is added unless it is the empty one
    (nothing changed), which the history records as ``empty_layer``."""
    created = _go_time(time.time_ns() if now_ns is None else now_ns)
    empty = diff_id == EMPTY_LAYER
    diff_ids = list((parent.get("rootfs") or {}).get("diff_ids") or [])
    if not empty:
        diff_ids.append(diff_id)
    entry: dict[str, Any] = {"created": created}
    created_by = " ".join(container_config.get("Cmd") or [])
    entry |= {"created_by": created_by} if created_by else {}
    entry |= {"author": author} if author else {}
    entry |= {"comment": comment} if comment else {}
    entry |= {"empty_layer": True} if empty else {}
    document: dict[str, Any] = {
        "architecture": parent.get("architecture") or go_arch(),
        "config": dict(config),
        "container": container_id,
        "container_config": dict(container_config),
        "created": created,
        "history": [*(parent.get("history") or []), entry],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    for key in ("variant", "os.version", "os.features"):
        if parent.get(key):
            document[key] = parent[key]
    if author:
        document["author"] = author
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
