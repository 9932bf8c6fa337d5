"""Mount points: what ``docker create`` asks to mount, parsed and checked as dockerd does.

Pure. ``HostConfig.Binds`` (``src:dst[:mode]``, dockerd's linux parser), ``HostConfig.Mounts``
(``validateMountConfig``), the image's and ``Config.Volumes`` (anonymous volumes) and what
``VolumesFrom`` inherits become one list of :class:`MountPoint`, with dockerd's 400s. Then
:func:`oci_mount` makes each point's runtime-spec entry and :func:`inspect_entry` its line in
inspect's ``Mounts``. Volumes are named here (``new_name`` for anonymous ones) and made by the
volume store; their ``source`` is filled in once they exist.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Final, TypeVar

import msgspec

from . import errors
from .config import Mount, not_applied

__all__ = [
    "DEFAULT_PROPAGATION", "PROPAGATIONS", "VOLUME_NAME", "MountPoint", "check_volume_name",
    "clean_path", "inherit_mounts", "inspect_entry", "merge_tmpfs_options", "oci_mount",
    "parse_bind", "parse_mounts", "parse_volumes_from", "read_write", "rootfs_propagation",
    "sort_mounts", "validate_tmpfs_destination",
]  # fmt: skip

#: dockerd's propagation for a bind that names none (``linuxDefaultPropagationMode``).
DEFAULT_PROPAGATION: Final = "rprivate"
PROPAGATIONS: Final = frozenset({"private", "rprivate", "shared", "rshared", "slave", "rslave"})
_CONSISTENCY: Final = ("consistent", "cached", "delegated")  # no effect on Linux: all consistent
#: ``linuxValidMountMode``'s words by kind: at most one of each. ``z``/``Z`` (SELinux labels)
#: are accepted and change nothing on a host without SELinux, as with dockerd.
_MODE_KINDS: Final = {
    "rw": "rw", "ro": "rw", "z": "label", "Z": "label", "nocopy": "copy",
    **dict.fromkeys(PROPAGATIONS, "propagation"), **dict.fromkeys(_CONSISTENCY, "consistency"),
}  # fmt: skip
#: Local volume names (``names.RestrictedNamePattern``): they name a directory under the root.
VOLUME_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


class MountPoint(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One mount of a container, as dockerd's ``volume/mounts.MountPoint`` keeps it.

    ``source``: a bind's host path, a volume's ``_data`` once the store made it ("" before, and
    for tmpfs). ``mode``: as given (``ro,z``), "z" for a local volume that gave none.
    ``propagation``: a bind's, else "rprivate"; "" for volumes and tmpfs. ``copy_data``: the
    image's content is copied into the empty volume (not ``nocopy``). ``anonymous``: not named
    (``rm -v`` removes it). ``create_source``: a ``-v`` bind (or ``CreateMountpoint``) whose
    missing source is made at start. ``volume_labels``, ``driver_opts``: for the store's create.
    """

    type: str  # "bind", "volume" or "tmpfs"
    destination: str
    source: str = ""
    name: str = ""
    driver: str = ""
    mode: str = ""
    rw: bool = True
    propagation: str = ""
    copy_data: bool = False
    anonymous: bool = False
    create_source: bool = False
    non_recursive: bool = False
    read_only_non_recursive: bool = False
    read_only_force_recursive: bool = False
    tmpfs_options: tuple[str, ...] = ()  # dockerd's ``ConvertTmpfsOptions``
    volume_labels: dict[str, str] | None = None
    driver_opts: dict[str, str] | None = None


# -- the options of HostConfig.Mounts, decoded as Go's JSON decoder would --------------------


class _Options(msgspec.Struct, rename="pascal", forbid_unknown_fields=True, kw_only=True):
    pass


class _BindOptions(_Options):
    propagation: str = ""
    non_recursive: bool = False
    create_mountpoint: bool = False
    read_only_non_recursive: bool = False
    read_only_force_recursive: bool = False


class _DriverConfig(_Options):
    name: str = ""
    options: dict[str, str] | None = None


class _VolumeOptions(_Options):
    no_copy: bool = False
    labels: dict[str, str] | None = None
    subpath: str = ""
    driver_config: _DriverConfig | None = None


class _TmpfsOptions(_Options):
    size_bytes: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    mode: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 0
    options: list[list[str]] | None = None


_O = TypeVar("_O", bound=_Options)
_Parsed = tuple[Mount, _BindOptions | None, _VolumeOptions | None, _TmpfsOptions | None]


def _decode(kind: type[_O], section: str, value: dict[str, Any] | None) -> _O | None:
    """An option section (a ``null`` field left as it is, as Go decodes); a field the engine
    does not know is refused, never ignored."""
    if value is None:
        return None
    try:
        return msgspec.convert({k: v for k, v in value.items() if v is not None}, kind)
    except msgspec.ValidationError as exc:
        if "unknown field" in str(exc):
            raise not_applied("HostConfig", f"Mounts.{section}", value) from None
        raise errors.InvalidParameter(f"invalid HostConfig.Mounts {section}: {exc}") from None


# -- paths, modes, names ---------------------------------------------------------------------


def _q(text: str) -> str:
    """Go's ``%q``, closely enough for names and types."""
    return json.dumps(text, ensure_ascii=False)


def clean_path(path: str) -> str:
    """Go's ``path.Clean`` (POSIX keeps a leading ``//``; Go does not)."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _valid_mode(mode: str) -> bool:
    """dockerd's ``linuxValidMountMode``: known words, at most one of each kind."""
    kinds = [_MODE_KINDS.get(word) for word in mode.split(",")] if mode else []
    return None not in kinds and len(kinds) == len(set(kinds))


def read_write(mode: str) -> bool:
    """dockerd's ``ReadWrite``: a valid mode without ``ro``."""
    return _valid_mode(mode) and "ro" not in mode.split(",")


def _absolute_error(path: str) -> str | None:
    """dockerd's ``linuxValidateAbsolute``, without its taking ``\\`` for ``/``: the path is
    used as given, so ``\\x`` would be relative."""
    if path.startswith("/"):
        return None
    return f"invalid mount path: '{path}' mount path must be absolute"


def _target_error(target: str) -> str | None:
    """dockerd's ``linuxValidateNotRoot`` then ``linuxValidateAbsolute``."""
    if clean_path(target.replace("\\", "/")) == "/":
        return "invalid specification: destination can't be '/'"
    return _absolute_error(target)


def validate_tmpfs_destination(destination: str) -> None:
    """dockerd's ``ValidateTmpfsMountDestination`` for ``HostConfig.Tmpfs``' keys (400)."""
    if (error := _target_error(destination)) is not None:
        raise errors.InvalidParameter(error)


def check_volume_name(name: str) -> None:
    """The local driver's ``validateName``, worded as its ``create`` fails (400)."""
    if len(name) == 1:
        problem = "volume name is too short, names should be at least two alphanumeric characters"
    elif not VOLUME_NAME.fullmatch(name):
        problem = (
            f"{_q(name)} includes invalid characters for a local volume name, only "
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
            "use absolute path"
        )
    else:
        return
    raise errors.InvalidParameter(f"create {name}: {problem}")


# -- HostConfig.Mounts: validateMountConfig, parseMountSpec ----------------------------------


def _parse_mount(mount: Mount, source_exists: Callable[[str], bool] | None) -> _Parsed:
    """dockerd's ``validateMountConfigImpl``: options decoded, then its checks in its order."""
    bind = _decode(_BindOptions, "BindOptions", mount.bind_options)
    volume = _decode(_VolumeOptions, "VolumeOptions", mount.volume_options)
    tmpfs = _decode(_TmpfsOptions, "TmpfsOptions", mount.tmpfs_options)
    kind = mount.type
    sections = (("BindOptions", "bind", bind), ("VolumeOptions", "volume", volume),
                ("TmpfsOptions", "tmpfs", tmpfs))  # fmt: skip
    for section, owner, value in sections:
        if kind != owner and value is not None:
            raise _config_error(kind, f"field {section} must not be specified")
    if (error := _mount_error(mount, bind, volume, source_exists)) is not None:
        raise _config_error(kind, error)
    if kind == "tmpfs":
        _tmpfs_data(tmpfs, mount.read_only)
    return mount, bind, volume, tmpfs


def _config_error(kind: str, message: str) -> errors.InvalidParameter:
    return errors.InvalidParameter(f"invalid mount config for type {_q(kind)}: {message}")


def _mount_error(
    mount: Mount,
    bind: _BindOptions | None,
    volume: _VolumeOptions | None,
    source_exists: Callable[[str], bool] | None,
) -> str | None:
    kind, source = mount.type, mount.source
    if mount.target == "":
        return "field Target must not be empty"
    if (error := _target_error(mount.target)) is not None:
        return error
    if kind == "bind":
        if source == "":
            return "field Source must not be empty"
        if bind and bind.propagation and bind.propagation not in PROPAGATIONS:
            return f"invalid propagation mode: {bind.propagation}"
        if (error := _absolute_error(source)) is not None:
            return error
        create = bind is not None and bind.create_mountpoint
        if source_exists is not None and not create and not source_exists(source):
            return f"bind source path does not exist: {source}"
    elif kind == "volume" and volume is not None and volume.subpath:
        if source == "":
            return "must not set Subpath when using anonymous volumes"
        cleaned = clean_path(volume.subpath)  # Go's filepath.IsLocal
        if volume.subpath.startswith("/") or cleaned == ".." or cleaned.startswith("../"):
            return "subpath must be a relative path within the volume"
    elif kind in ("tmpfs", "image") and (source != "") == (kind == "tmpfs"):
        return f"field Source must not be {'specified' if source else 'empty'}"
    elif kind not in ("bind", "volume", "tmpfs", "image"):
        return "mount type unknown"
    return None


def _tmpfs_data(options: _TmpfsOptions | None, read_only: bool) -> tuple[str, ...]:
    """dockerd's ``ConvertTmpfsOptions``: ``ro``, ``mode=`` (octal), ``size=`` with the largest
    unit that divides it, then ``exec``/``noexec``."""
    data = ["ro"] if read_only else []
    options = options or _TmpfsOptions()
    if options.mode:
        data.append(f"mode={options.mode:o}")
    if size := options.size_bytes:
        units = (("g", 30), ("m", 20), ("k", 10), ("", 0))
        unit, shift = next((u, s) for u, s in units if size % (1 << s) == 0)
        data.append(f"size={size >> shift}{unit}")
    for option in options.options or ():
        if not 1 <= len(option) <= 2:
            raise _config_error("tmpfs", "invalid option array length")
        if option[0] not in ("exec", "noexec"):
            raise _config_error("tmpfs", f"invalid option: {option[0]}")
        data.append("=".join(option))
    return tuple(data)


def _from_mount(parsed: _Parsed, new_name: Callable[[], str]) -> MountPoint:
    """dockerd's ``parseMountSpec`` (and what ``registerMountPoints`` adds) for a valid mount;
    what the engine does not apply (``image`` mounts, ``Subpath``) is refused."""
    mount, bind, volume, tmpfs = parsed
    destination, rw = clean_path(mount.target), not mount.read_only
    if mount.consistency not in ("", "default", *_CONSISTENCY):
        raise not_applied("HostConfig", "Mounts.Consistency", mount.consistency)
    if mount.type == "bind":
        bind = bind or _BindOptions()
        non_recursive, force = bind.read_only_non_recursive, bind.read_only_force_recursive
        conflicts = (  # found by dockerd at start (``setupMounts``), refused at create here
            (rw and non_recursive, "!ReadOnly && BindOptions.ReadOnlyNonRecursive"),
            (rw and force, "!ReadOnly && BindOptions.ReadOnlyForceRecursive"),
            (non_recursive and force, "ReadOnlyNonRecursive && BindOptions.ReadOnlyForceRecursive"),
        )
        for conflict, message in conflicts:
            if conflict:
                raise errors.InvalidParameter(f"mount options conflict: {message}")
        return MountPoint(
            type="bind", destination=destination, source=clean_path(mount.source), rw=rw,
            propagation=bind.propagation or DEFAULT_PROPAGATION,
            create_source=bind.create_mountpoint, non_recursive=bind.non_recursive,
            read_only_non_recursive=non_recursive, read_only_force_recursive=force,
        )  # fmt: skip
    if mount.type == "volume":
        volume = volume or _VolumeOptions()
        if volume.subpath:
            raise not_applied("HostConfig", "Mounts.VolumeOptions.Subpath", volume.subpath)
        if mount.source:
            check_volume_name(mount.source)
        driver = volume.driver_config or _DriverConfig()
        return MountPoint(
            type="volume", destination=destination, name=mount.source or new_name(),
            anonymous=not mount.source, driver=driver.name or "local", mode="z", rw=rw,
            copy_data=not volume.no_copy, volume_labels=volume.labels, driver_opts=driver.options,
        )  # fmt: skip
    if mount.type == "tmpfs":
        data = _tmpfs_data(tmpfs, mount.read_only)
        return MountPoint(type="tmpfs", destination=destination, rw=rw, tmpfs_options=data)
    raise not_applied("HostConfig", "Mounts.Type", mount.type)


# -- HostConfig.Binds: ParseMountRaw ---------------------------------------------------------


def parse_bind(raw: str, new_name: Callable[[], str], *, volume_driver: str = "") -> MountPoint:
    """One ``Binds`` entry as dockerd's ``ParseMountRaw``: an absolute source is a bind, any
    other a volume's name, a destination alone an anonymous volume."""
    parts = raw.split(":", 3)
    invalid = f"invalid volume specification: '{raw}'"
    if parts[0] == "" or len(parts) == 4 or (len(parts) == 2 and _valid_mode(parts[1])):
        raise errors.InvalidParameter(invalid)
    source, target, mode = ["", parts[0], ""] if len(parts) == 1 else [*parts, ""][:3]
    if not _valid_mode(mode):
        raise errors.InvalidParameter(f"invalid mode: {mode}")
    words = mode.split(",")
    kind = "bind" if source.startswith("/") else "volume"
    propagation = next((word for word in words if word in PROPAGATIONS), None)
    volume_options: dict[str, Any] = {}
    if volume_driver and kind == "volume":
        volume_options["DriverConfig"] = {"Name": volume_driver}
    if "nocopy" in words:
        volume_options["NoCopy"] = True
    spec = Mount(
        type=kind, source=source, target=target, read_only=not read_write(mode),
        bind_options={"Propagation": propagation} if propagation else None,
        volume_options=volume_options or None,
    )  # fmt: skip
    try:
        _parse_mount(spec, None)
    except errors.InvalidParameter as exc:
        raise errors.InvalidParameter(f"{invalid}: {exc}") from None
    destination, rw = clean_path(target), not spec.read_only
    if kind == "bind":
        return MountPoint(
            type="bind", destination=destination, source=clean_path(source), mode=mode, rw=rw,
            propagation=propagation or DEFAULT_PROPAGATION, create_source=True,
        )  # fmt: skip
    if source:
        check_volume_name(source)
    return MountPoint(
        type="volume", destination=destination, name=source or new_name(),
        anonymous=not source, driver=volume_driver or "local", mode=mode or "z", rw=rw,
        copy_data="nocopy" not in words,
    )  # fmt: skip


def _in_daemon_root(point: MountPoint, given: str | None, daemon_root: str) -> MountPoint:
    """dockerd's ``validateBindDaemonRoot``: a bind of (or holding) the daemon's root gets
    ``rslave`` unless it asked for ``rslave``/``rshared``; any other propagation is a 400."""
    source = point.source
    if point.type != "bind" or not daemon_root or given in ("rslave", "rshared"):
        return point
    if not (source.startswith(daemon_root) or daemon_root.startswith(source)):
        return point
    if not given:
        return msgspec.structs.replace(point, propagation="rslave")
    raise errors.InvalidParameter(
        'invalid mount config: must use either propagation mode "rslave" or "rshared" when '
        f"mount source is within the daemon root, daemon root: {_q(daemon_root)}, bind mount "
        f"source: {_q(source)}, propagation: {_q(given)}"
    )


# -- VolumesFrom, and all of them ------------------------------------------------------------


def parse_volumes_from(spec: str) -> tuple[str, str]:
    """dockerd's ``ParseVolumesFrom``: ``container[:mode]``, the mode ``rw`` by default; no
    propagation nor copy mode (400)."""
    if spec == "":
        raise errors.InvalidParameter("volumes-from specification cannot be an empty string")
    container, _, mode = spec.partition(":")
    words = mode.split(",")
    if not _valid_mode(mode) or PROPAGATIONS.intersection(words) or "nocopy" in words:
        raise errors.InvalidParameter(f"invalid mode: {mode}")
    return container, mode or "rw"


def inherit_mounts(points: Iterable[MountPoint], mode: str) -> list[MountPoint]:
    """What a container takes from another's mount points (``--volumes-from c:mode``): each
    one, read-only if either says so, without its mode and never copied up again."""
    writable = read_write(mode)
    replace = msgspec.structs.replace
    return [replace(p, rw=p.rw and writable, mode="", copy_data=False) for p in points]


def parse_mounts(
    binds: Sequence[str] | None,
    mounts: Sequence[Mount] | None,
    image_volumes: Iterable[str] | None,
    new_name: Callable[[], str],
    *,
    tmpfs: Iterable[str] = (),
    inherited: Sequence[MountPoint] = (),
    volume_driver: str = "",
    daemon_root: str = "",
    source_exists: Callable[[str], bool] | None = None,
) -> list[MountPoint]:
    """A container's mount points, in dockerd's precedence: ``inherited`` (``VolumesFrom``,
    in order) are overridden by ``binds`` then ``mounts`` (a destination twice among those, or
    in ``HostConfig.Tmpfs``: ``Duplicate mount point``); ``image_volumes`` (``Config.Volumes``)
    fill the destinations nothing else took. ``source_exists`` checks a ``Mounts`` bind's
    source (dockerd does, at create); ``new_name`` names anonymous volumes. 400 on any error,
    in dockerd's order; the result is sorted for mounting (:func:`sort_mounts`)."""
    parsed = [_parse_mount(mount, source_exists) for mount in mounts or ()]
    for destination in (tmpfs := list(tmpfs)):
        validate_tmpfs_destination(destination)
    on_tmpfs = {clean_path(destination) for destination in tmpfs}
    points = {p.destination: p for p in inherited if p.destination not in on_tmpfs}
    explicit: list[tuple[MountPoint, str | None, str]] = []
    for raw in binds or ():
        point = parse_bind(raw, new_name, volume_driver=volume_driver)
        given = point.propagation if PROPAGATIONS.intersection(point.mode.split(",")) else None
        explicit.append((point, given, point.destination))
    for one in parsed:
        given = None if one[1] is None else one[1].propagation
        explicit.append((_from_mount(one, new_name), given, one[0].target))
    taken: set[str] = set()
    for point, given, shown in explicit:
        point = _in_daemon_root(point, given, daemon_root)
        if point.destination in taken or point.destination in on_tmpfs:
            raise errors.InvalidParameter(f"Duplicate mount point: {shown}")
        taken.add(point.destination)
        points.pop(point.destination, None)
        points[point.destination] = point
    for path in image_volumes or ():
        destination = clean_path(path)
        validate_tmpfs_destination(destination)  # absolute, not "/" (dockerd does not check)
        if destination not in points and destination not in on_tmpfs:
            points[destination] = MountPoint(
                type="volume", destination=destination, name=new_name(), anonymous=True,
                driver=volume_driver or "local", copy_data=True,
            )  # fmt: skip
    return sort_mounts(points.values())


def sort_mounts(points: Iterable[MountPoint]) -> list[MountPoint]:
    """dockerd's ``sortMounts``: fewer path components first, so ``/etc`` is mounted before
    ``/etc/app`` and never hides it (stable: otherwise as given)."""
    return sorted(points, key=lambda point: clean_path(point.destination).count("/"))


# -- the runtime's mounts and inspect's ------------------------------------------------------

_OPPOSITES: Final = ("suid", "dev", "exec", "atime", "diratime", "mand", "relatime", "strictatime")
#: Mount flags by what they set: a flag and its opposite share a key; one propagation at most.
_FLAG_KEYS: Final = {
    **{word: flag for flag in _OPPOSITES for word in (flag, "no" + flag)},
    "ro": "rdonly", "rw": "rdonly", "sync": "sync", "async": "sync", "dirsync": "dirsync",
    "remount": "remount",
    **dict.fromkeys(("bind", "rbind", "unbindable", "runbindable", *PROPAGATIONS), "propagation"),
}  # fmt: skip
_TMPFS_DATA: Final = frozenset({"", "size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})


def merge_tmpfs_options(options: Iterable[str]) -> list[str]:
    """moby's ``MergeTmpfsOptions``: the last of each flag (or its opposite) and of each
    ``key=`` wins, in the order of the winners; an unknown option is a 400."""
    seen: set[str] = set()
    merged: list[str] = []
    for option in reversed(list(options)):
        if option == "defaults":
            continue
        key = _FLAG_KEYS.get(option)
        if key is None:
            name, equals, _ = option.partition("=")
            if not equals or name not in _TMPFS_DATA:
                raise errors.InvalidParameter(f"invalid tmpfs option {_q(name)}")
            key = "=" + name
        if key not in seen:
            seen.add(key)
            merged.append(option)
    return merged[::-1]


def oci_mount(
    point: MountPoint, source_path: str | None = None, *, rro: bool = False
) -> dict[str, Any]:
    """The runtime-spec mount of a point, as dockerd's ``withMounts`` writes it. A tmpfs:
    ``noexec,nosuid,nodev,rprivate`` merged with its own options. A bind or volume (at
    ``source_path``, else ``point.source``): ``rbind`` (``bind`` if ``NonRecursive``), ``rw``
    (implicit in dockerd's; written here) or ``ro`` (``rro`` where ``rro`` says the kernel and
    runtime can), its propagation."""
    mount: dict[str, Any] = {"destination": point.destination, "type": "bind"}
    if point.type == "tmpfs":
        defaults = ["noexec", "nosuid", "nodev", DEFAULT_PROPAGATION]
        options = merge_tmpfs_options([*defaults, *point.tmpfs_options])
        return mount | {"type": "tmpfs", "source": "tmpfs", "options": options}
    source = point.source if source_path is None else source_path
    if not source:
        raise ValueError(f"mount point {point.destination} has no source yet")
    options = ["bind" if point.non_recursive else "rbind"]
    if point.read_only_force_recursive and not rro:
        raise errors.SystemError(
            "rro is not supported: BindOptions.ReadOnlyForceRecursive needs a kernel >= 5.12 "
            "and a runtime that knows rro"
        )
    recursive = rro and not point.read_only_non_recursive
    options.append("rw" if point.rw else "rro" if recursive else "ro")
    options += [point.propagation] if point.propagation else []
    return mount | {"source": source, "options": options}


def rootfs_propagation(points: Iterable[MountPoint]) -> str | None:
    """The root's propagation dockerd's ``withMounts`` sets for these points: ``shared`` if one
    shares its mounts, else ``rslave`` if one receives them, else None (left as it is)."""
    kinds = {point.propagation.removeprefix("r") for point in points}
    return "shared" if "shared" in kinds else "rslave" if "slave" in kinds else None


def inspect_entry(point: MountPoint) -> dict[str, Any]:
    """One entry of inspect's ``Mounts`` (dockerd's ``types.MountPoint``: ``Name`` and
    ``Driver`` only when set)."""
    entry: dict[str, Any] = {"Type": point.type, "Name": point.name, "Source": point.source,
                             "Destination": point.destination, "Driver": point.driver}  # fmt: skip
    entry |= {"Mode": point.mode, "RW": point.rw, "Propagation": point.propagation}
    return {key: value for key, value in entry.items() if value or key not in ("Name", "Driver")}
