"""The OCI runtime spec (``config.json``) for a container. A pure function: no I/O.

Defaults follow dockerd's ``oci.DefaultSpec`` and ``createSpec``: the default mounts, masked
and read-only paths, namespaces and capability set, with the container's Config and HostConfig
applied on top.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import errors
from .config import CAPABILITIES, Config, HostConfig, capability_name
from .mounts import MountPoint, oci_mount, parse_mounts
from .security import parse_security_opt

__all__ = ["DEFAULT_CAPABILITIES", "DEFAULT_PATH", "build_spec", "process_args", "user_ids"]

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

_DEFAULT_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["ro", "nosuid", "noexec", "nodev"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
)  # fmt: skip

_RLIMITS = {
    "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO", "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK", "as": "RLIMIT_AS",
}  # fmt: skip


def process_args(config: Config) -> list[str]:
    """``Entrypoint + Cmd``, as dockerd joins them."""
    return [*(config.entrypoint or ()), *(config.cmd or ())]


def _lookup(table: str | None, name: str) -> list[str] | None:
    for line in (table or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name:
            return fields
    return None


def _gid(name: str, group: str | None) -> int:
    if name.isdigit():
        return int(name)
    entry = _lookup(group, name)
    if entry is None or not entry[2].isdigit():
        raise errors.InvalidParameter(
            f"unable to find group {name}: no matching entries in group file"
        )
    return int(entry[2])


def user_ids(
    user: str, passwd: str | None, group: str | None, group_add: Sequence[str] = ()
) -> dict[str, Any]:
    """``user[:group]`` by number or by name in the image's /etc/passwd and /etc/group, and the
    supplementary groups ``GroupAdd`` names."""
    name, _, group_name = user.partition(":")
    uid = gid = 0
    if name.isdigit():
        uid = int(name)
        for line in (passwd or "").splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[2] == name and fields[3].isdigit():
                gid = int(fields[3])
                break
    elif name:
        entry = _lookup(passwd, name)
        if entry is None or len(entry) < 4 or not (entry[2].isdigit() and entry[3].isdigit()):
            raise errors.InvalidParameter(
                f"unable to find user {name}: no matching entries in passwd file"
            )
        uid, gid = int(entry[2]), int(entry[3])
    if group_name:
        gid = _gid(group_name, group)
    ids: dict[str, Any] = {"uid": uid, "gid": gid}
    if group_add:
        ids["additionalGids"] = [_gid(name, group) for name in group_add]
    return ids


def _rlimits(host_config: HostConfig, host_hard: Mapping[str, int]) -> list[dict[str, Any]]:
    limits = []
    for ulimit in host_config.ulimits or ():
        kind = _RLIMITS.get(ulimit.name)
        if kind is None:
            raise errors.InvalidParameter(f"invalid ulimit type: {ulimit.name}")
        ceiling = host_hard.get(kind)
        if ceiling is not None and ceiling >= 0 and ulimit.hard > ceiling:
            raise errors.InvalidParameter(
                f"ulimit {ulimit.name}: hard limit {ulimit.hard} is above the daemon's own "
                f"hard limit {ceiling}"
            )
        limits.append({"type": kind, "hard": ulimit.hard, "soft": ulimit.soft})
    return limits


def build_spec(
    container_id: str,
    config: Config,
    host_config: HostConfig,
    *,
    rootfs: str,
    netns: str | None,
    host_hard_limits: Mapping[str, int] | None = None,
    cgroup_parent: str = "asyncstart",
    passwd: str | None = None,
    group: str | None = None,
    userns: tuple[int, int, int] | None = None,
    network_files: Mapping[str, str] | None = None,
    hostname: str | None = None,
    arch: str = "amd64",
    kernel: tuple[int, int] | None = None,
    apparmor: bool = False,
    absent_arches: Iterable[str] = (),
    extra_env: Sequence[str] = (),
    mount_points: Sequence[MountPoint] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` for one start. ``netns`` None shares the host's network namespace;
    ``userns`` (uid, gid, size) runs it in a user namespace whose root is that uid/gid.
    ``arch`` (Go's GOARCH), ``kernel`` (version, major) and ``apparmor`` (the host has it) are
    the machine's facts the seccomp filter and ``SecurityOpt`` depend on. ``extra_env`` (what
    legacy links give) comes before the container's own ``Env``, which overrides it.

    The spec is the caller's to edit, but for ``linux.seccomp``: the one cached filter every
    start shares (a copy per start is costly: the filter has hundreds of rules)."""
    env = list(config.env or ())
    if extra_env:
        named = {item.partition("=")[0] for item in env}
        env = [item for item in extra_env if item.partition("=")[0] not in named] + env
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, DEFAULT_PATH)
    if config.tty and not any(item.startswith("TERM=") for item in env):
        env.append("TERM=xterm")
    capabilities = list(
        _capabilities(tuple(host_config.cap_add or ()), tuple(host_config.cap_drop or ()))
    )
    security = parse_security_opt(host_config.security_opt)  # checked at create; cached
    # A namespace of its own for each kind, but those HostConfig shares with the host.
    namespaces: list[dict[str, str]] = [
        {"type": kind}
        for kind, shared in (
            ("mount", False),
            ("uts", host_config.uts_mode == "host"),
            ("ipc", host_config.ipc_mode == "host"),
            ("pid", host_config.pid_mode == "host"),
            ("cgroup", host_config.cgroupns_mode != "private"),
        )
        if not shared
    ]
    if netns is not None:
        namespaces.append({"type": "network", "path": netns} if netns else {"type": "network"})
    id_mappings: dict[str, Any] = {}
    if userns is not None:
        uid, gid, size = userns
        namespaces.append({"type": "user"})
        id_mappings = {
            "uidMappings": [{"containerID": 0, "hostID": uid, "size": size}],
            "gidMappings": [{"containerID": 0, "hostID": gid, "size": size}],
        }
    resources = _resources(host_config)
    # Copied (each mount holds strings and its options): the caller may edit the spec's
    # mounts; the defaults must stay as they are.
    mounts = [{**mount, "options": list(mount["options"])} for mount in _DEFAULT_MOUNTS]
    if userns is not None and netns:
        # In a user namespace, sysfs can only be mounted in a network namespace it owns; one
        # made outside it (the bridge driver's) gets the host's /sys read-only, as dockerd.
        mounts = [
            {"destination": "/sys", "type": "bind", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
            if m["destination"] == "/sys" else m
            for m in mounts
        ]  # fmt: skip
    if host_config.ipc_mode == "host":
        mounts.append({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                       "options": ["rbind", "nosuid", "noexec", "nodev"]})  # fmt: skip
    elif host_config.ipc_mode != "none":
        shm = host_config.shm_size or 64 * 1024 * 1024
        shm_options = ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"]
        mounts.append(
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": shm_options}
        )
    for target, options in (host_config.tmpfs or {}).items():
        extra = [o for o in options.split(",") if o]
        mounts.append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "noexec", "nodev", *extra]})  # fmt: skip
    if mount_points is None:  # (a record of an older daemon: its binds and bind mounts)
        mount_points = parse_mounts(host_config.binds, host_config.mounts, (), _no_volume)
    mounts += [oci_mount(point) for point in mount_points]
    taken = {point.destination for point in mount_points}
    for target, source in (network_files or {}).items():
        if target not in taken:  # (a user's own file there wins, as in dockerd)
            mounts.append({"destination": target, "type": "bind", "source": source,
                           "options": ["rbind", "rprivate"]})  # fmt: skip
    process: dict[str, Any] = {
            "terminal": config.tty,
            "user": user_ids(config.user, passwd, group, host_config.group_add or ()),
            "args": process_args(config),
            "env": env,
            "cwd": config.working_dir or "/",
            "capabilities": {k: capabilities for k in ("bounding", "effective", "permitted")},
            "rlimits": _rlimits(host_config, host_hard_limits or {}),
            **security.spec_process(apparmor_host=apparmor),
            "oomScoreAdj": host_config.oom_score_adj,
    }  # fmt: skip
    height, width = [*host_config.console_size, 0, 0][:2]
    if config.tty and height and width:
        process["consoleSize"] = {"height": height, "width": width}
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": host_config.readonly_rootfs},
        "mounts": mounts,
        "linux": {
            "cgroupsPath": f"{host_config.cgroup_parent or cgroup_parent}/{container_id}",
            "namespaces": namespaces,
            "resources": resources,
            "maskedPaths": list(
                MASKED_PATHS if host_config.masked_paths is None else host_config.masked_paths
            ),
            "readonlyPaths": list(
                READONLY_PATHS if host_config.readonly_paths is None else host_config.readonly_paths
            ),
            "sysctl": dict(host_config.sysctls or {}),
            **id_mappings,
        },
    }
    seccomp = security.seccomp_filter(
        capabilities, arch=arch, kernel=kernel, absent_arches=absent_arches, shared=True
    )
    if seccomp is not None:  # dockerd's default profile unless unconfined or the caller's
        spec["linux"]["seccomp"] = seccomp  # (the cached filter, shared: never edited)
    if host_config.uts_mode != "host":  # the host's names are not the container's to set
        spec["hostname"] = hostname or config.hostname or container_id[:12]
        if config.domainname:
            # runc before 1.2 ignores the spec's "domainname": the namespaced sysctl is what
            # every runtime applies.
            spec["linux"]["sysctl"].setdefault("kernel.domainname", config.domainname)
    if host_config.annotations:
        spec["annotations"] = dict(host_config.annotations)
    return spec


def _resources(host_config: HostConfig) -> dict[str, Any]:
    """The cgroup limits, as dockerd's ``getMemoryResources``/``getCPUResources``: a field
    only when it is set."""
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    memory: dict[str, Any] = {}
    for key, value in (
        ("limit", host_config.memory),
        ("reservation", host_config.memory_reservation),
        ("swap", host_config.memory_swap),
    ):
        if value > 0:
            memory[key] = value
    if host_config.memory_swappiness is not None and host_config.memory_swappiness >= 0:
        memory["swappiness"] = host_config.memory_swappiness
    if host_config.oom_kill_disable:
        memory["disableOOMKiller"] = True
    cpu: dict[str, Any] = {}
    if host_config.cpu_shares:
        cpu["shares"] = host_config.cpu_shares
    if host_config.nano_cpus:
        cpu["period"] = 100_000
        cpu["quota"] = host_config.nano_cpus * cpu["period"] // 1_000_000_000
    if host_config.cpu_period:
        cpu["period"] = host_config.cpu_period
    if host_config.cpu_quota:
        cpu["quota"] = host_config.cpu_quota
    if host_config.cpuset_cpus:
        cpu["cpus"] = host_config.cpuset_cpus
    if host_config.cpuset_mems:
        cpu["mems"] = host_config.cpuset_mems
    if memory:
        resources["memory"] = memory
    if cpu:
        resources["cpu"] = cpu
    if host_config.blkio_weight:
        resources["blockIO"] = {"weight": host_config.blkio_weight}
    if host_config.pids_limit is not None and host_config.pids_limit > 0:
        resources["pids"] = {"limit": host_config.pids_limit}
    return resources


def _no_volume() -> str:
    raise errors.InvalidParameter("this container was created without its volumes: create it again")


def update_resources(old: HostConfig, new: HostConfig) -> dict[str, Any]:
    """The limits a running container gets at ``docker update`` from ``old`` to ``new``: its
    cgroup limits as at create; the pids limit only when it changed, a lifted one said as
    such (-1: a zero would leave the old limit)."""
    resources = _resources(new)
    del resources["devices"]
    if new.pids_limit == old.pids_limit:
        resources.pop("pids", None)
    else:
        resources.setdefault("pids", {"limit": -1})
    return resources


@functools.lru_cache(maxsize=256)
def _capabilities(add: tuple[str, ...], drop: tuple[str, ...]) -> tuple[str, ...]:
    """dockerd's ``TweakCapabilities``: ``ALL`` added is every capability but those dropped;
    ``ALL`` dropped leaves only those added; else the defaults, plus added, minus dropped.
    (Worked out once per distinct ``CapAdd``/``CapDrop``: most containers share theirs.)"""
    added = {capability_name(c) for c in add}
    dropped = {capability_name(c) for c in drop}
    if "ALL" in added:
        return tuple(sorted(set(CAPABILITIES) - dropped))
    if "ALL" in dropped:
        return tuple(sorted(added))
    return tuple(sorted((set(DEFAULT_CAPABILITIES) | added) - dropped))
