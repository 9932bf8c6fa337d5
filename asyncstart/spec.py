"""The OCI runtime spec (``config.json``) for a container. A pure function: no I/O.

Defaults follow dockerd's ``oci.DefaultSpec`` and ``createSpec``: the default mounts, masked
and read-only paths, namespaces and capability set, with the container's Config and HostConfig
applied on top.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from . import errors
from .config import CAPABILITIES, Config, HostConfig, capability_name

__all__ = ["DEFAULT_CAPABILITIES", "DEFAULT_PATH", "build_spec", "process_args"]

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


def _user(user: str, passwd: str | None, group: str | None) -> dict[str, Any]:
    """``user[:group]`` by number or by name in the image's /etc/passwd and /etc/group."""
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
        if entry is None or len(entry) < 4:
            raise errors.InvalidParameter(
                f"unable to find user {name}: no matching entries in passwd file"
            )
        uid, gid = int(entry[2]), int(entry[3])
    if group_name.isdigit():
        gid = int(group_name)
    elif group_name:
        entry = _lookup(group, group_name)
        if entry is None:
            raise errors.InvalidParameter(
                f"unable to find group {group_name}: no matching entries in group file"
            )
        gid = int(entry[2])
    return {"uid": uid, "gid": gid}


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
) -> dict[str, Any]:
    """The ``config.json`` for one start. ``netns`` None shares the host's network namespace;
    ``userns`` (uid, gid, size) runs it in a user namespace whose root is that uid/gid."""
    env = list(config.env or ())
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, DEFAULT_PATH)
    if config.tty and not any(item.startswith("TERM=") for item in env):
        env.append("TERM=xterm")
    capabilities = _capabilities(host_config.cap_add or (), host_config.cap_drop or ())
    namespaces: list[dict[str, str]] = [
        {"type": "mount"},
        {"type": "uts"},
        {"type": "ipc"},
        {"type": "pid"},
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
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if host_config.memory:
        resources["memory"] = {"limit": host_config.memory}
    if host_config.nano_cpus:
        period = 100_000
        resources["cpu"] = {"quota": host_config.nano_cpus * period // 1_000_000_000,
                            "period": period}  # fmt: skip
    if host_config.cpu_shares:
        resources.setdefault("cpu", {})["shares"] = host_config.cpu_shares
    if host_config.pids_limit is not None and host_config.pids_limit > 0:
        resources["pids"] = {"limit": host_config.pids_limit}
    # Deep: the caller may edit the spec it gets; the defaults must stay as they are.
    mounts = copy.deepcopy(list(_DEFAULT_MOUNTS))
    if userns is not None and netns:
        # In a user namespace, sysfs can only be mounted in a network namespace it owns; one
        # made outside it (the bridge driver's) gets the host's /sys read-only, as dockerd.
        mounts = [
            {"destination": "/sys", "type": "bind", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
            if m["destination"] == "/sys" else m
            for m in mounts
        ]  # fmt: skip
    shm = host_config.shm_size or 64 * 1024 * 1024
    shm_options = ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"]
    mounts.append(
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": shm_options}
    )
    for target, options in (host_config.tmpfs or {}).items():
        extra = [o for o in options.split(",") if o]
        mounts.append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "noexec", "nodev", *extra]})  # fmt: skip
    for bind in host_config.binds or ():
        source, _, rest = bind.partition(":")
        target, _, mode = rest.partition(":")
        if not source.startswith("/") or not target.startswith("/"):
            raise errors.InvalidParameter(f"invalid volume specification: '{bind}'")
        bind_options = ["rbind", "ro" if "ro" in mode.split(",") else "rw"]
        mounts.append({"destination": target, "type": "bind", "source": source,
                       "options": bind_options})  # fmt: skip
    for target, source in (network_files or {}).items():
        mounts.append({"destination": target, "type": "bind", "source": source,
                       "options": ["rbind", "rprivate"]})  # fmt: skip
    for mount in host_config.mounts or ():
        if mount.type != "bind":
            raise errors.InvalidParameter(f"mount type {mount.type!r} is not supported")
        mounts.append({"destination": mount.target, "type": "bind", "source": mount.source,
                       "options": ["rbind", "ro" if mount.read_only else "rw"]})  # fmt: skip
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": config.tty,
            "user": _user(config.user, passwd, group),
            "args": process_args(config),
            "env": env,
            "cwd": config.working_dir or "/",
            "capabilities": {k: capabilities for k in ("bounding", "effective", "permitted")},
            "rlimits": _rlimits(host_config, host_hard_limits or {}),
            "noNewPrivileges": "no-new-privileges" in (host_config.security_opt or ())
            or "no-new-privileges:true" in (host_config.security_opt or ()),
            "oomScoreAdj": host_config.oom_score_adj,
        },
        "root": {"path": rootfs, "readonly": host_config.readonly_rootfs},
        "hostname": hostname or config.hostname or container_id[:12],
        "mounts": mounts,
        "linux": {
            "cgroupsPath": f"{cgroup_parent}/{container_id}",
            "namespaces": namespaces,
            "resources": resources,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "sysctl": dict(host_config.sysctls or {}),
            **id_mappings,
        },
    }


def _capabilities(add: Sequence[str], drop: Sequence[str]) -> list[str]:
    """dockerd's ``TweakCapabilities``: ``ALL`` added is every capability but those dropped;
    ``ALL`` dropped leaves only those added; else the defaults, plus added, minus dropped."""
    added = {capability_name(c) for c in add}
    dropped = {capability_name(c) for c in drop}
    if "ALL" in added:
        return sorted(set(CAPABILITIES) - dropped)
    if "ALL" in dropped:
        return sorted(added)
    return sorted((set(DEFAULT_CAPABILITIES) | added) - dropped)
