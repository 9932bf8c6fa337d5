"""``GET /containers/{id}/stats``: a container's counters in dockerd's ``StatsResponse``.

dockerd asks containerd for the task's cgroup metrics (containerd/cgroups ``Stat``), converts
them in ``daemon/stats_unix.go`` (``statsV1`` / ``statsV2``), samples the host's CPU time from
``/proc/stat`` right after, and adds the sandbox's interface counters. Here the same numbers are
read straight from the cgroup file system (cgroupfs driver, v1 or v2) and ``/proc``. The
dictionaries are JSON-ready: keys in the order API 1.51 (Docker 28) writes them, fields Go omits
when zero (``omitempty``) left out, ``null`` where Go writes a nil slice.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ..hostinfo import mem_total
from ..record import ZERO_TIME

__all__ = [
    "empty_stats_document",
    "read_cgroup_stats",
    "read_network_stats",
    "stats_document",
    "system_cpu_usage",
]

#: Clock ticks per second (USER_HZ) of ``cpuacct.stat`` and ``/proc/stat``, constant on Linux.
USER_HZ = 100
_NS = 1_000_000_000
#: What containerd's cgroup2 reader makes of ``max``.
_MAX_UINT64 = 2**64 - 1
_V1 = ("memory", "cpuacct", "cpu", "pids", "blkio")

#: ``BlkioStats``' fields, in Go's order; the value is the v1 file containerd reads (CFQ).
_BLKIO = {
    "io_service_bytes_recursive": "io_service_bytes_recursive",
    "io_serviced_recursive": "io_serviced_recursive",
    "io_queue_recursive": "io_queued_recursive",
    "io_service_time_recursive": "io_service_time_recursive",
    "io_wait_time_recursive": "io_wait_time_recursive",
    "io_merged_recursive": "io_merged_recursive",
    "io_time_recursive": "time_recursive",
    "sectors_recursive": "sectors_recursive",
}
#: The ``memory.stat`` keys ``statsV1`` copies (others are dropped; absent ones are 0).
_MEMORY_V1 = (  # noqa: SIM905
    "cache rss rss_huge mapped_file dirty writeback pgpgin pgpgout pgfault pgmajfault "
    "inactive_anon active_anon inactive_file active_file unevictable hierarchical_memory_limit "
    "hierarchical_memsw_limit total_cache total_rss total_rss_huge total_mapped_file total_dirty "
    "total_writeback total_pgpgin total_pgpgout total_pgfault total_pgmajfault "
    "total_inactive_anon total_active_anon total_inactive_file total_active_file "
    "total_unevictable"
).split()
#: The ``memory.stat`` keys ``statsV2`` copies.
_MEMORY_V2 = (  # noqa: SIM905
    "anon file kernel_stack slab sock shmem file_mapped file_dirty file_writeback anon_thp "
    "inactive_anon active_anon inactive_file active_file unevictable slab_reclaimable "
    "slab_unreclaimable pgfault pgmajfault workingset_refault workingset_activate "
    "workingset_nodereclaim pgrefill pgscan pgsteal pgactivate pgdeactivate pglazyfree "
    "pglazyfreed thp_fault_alloc thp_collapse_alloc"
).split()


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def _uint(text: str, *, unlimited: int = 0) -> int:
    """containerd's ``readUint``: ``max`` is 0 on v1 (2**64-1 on v2), a negative number 0,
    anything unreadable 0."""
    text = text.strip()
    if text == "max":
        return unlimited
    try:
        return max(int(text), 0)
    except ValueError:
        return 0


def _read_uint(path: Path, *, unlimited: int = 0) -> int:
    text = _text(path)
    return 0 if text is None else _uint(text, unlimited=unlimited)


def _read_kv(path: Path) -> dict[str, int] | None:
    """A flat keyed file (``memory.stat``, ``cpu.stat``...); None if it cannot be read."""
    text = _text(path)
    if text is None:
        return None
    pairs = (line.split() for line in text.splitlines())
    return {p[0]: _uint(p[1]) for p in pairs if len(p) == 2}


def _omit_zero(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Go's ``omitempty`` on numbers, maps and slices."""
    return {key: value for key, value in fields.items() if value}


def _cpu_stats(
    total: int, kernel: int, user: int, throttling: Mapping[str, int], percpu: list[int] | None
) -> dict[str, Any]:
    usage: dict[str, Any] = {"total_usage": total}
    if percpu:
        usage["percpu_usage"] = percpu
    usage |= {"usage_in_kernelmode": kernel, "usage_in_usermode": user}
    return {
        "cpu_usage": usage,
        "throttling_data": {
            "periods": throttling.get("periods", 0),
            "throttled_periods": throttling.get("throttled_periods", 0),
            "throttled_time": throttling.get("throttled_time", 0),
        },
    }


def _empty_cpu_stats() -> dict[str, Any]:
    return _cpu_stats(0, 0, 0, {}, None)


def _empty_blkio() -> dict[str, Any]:
    return dict.fromkeys(_BLKIO)


def system_cpu_usage(proc: Path = Path("/proc")) -> tuple[int, int]:
    """dockerd's ``getSystemCPUUsage``: the ``cpu`` line of ``/proc/stat`` (user, nice,
    system, idle, iowait, irq, softirq ticks) in nanoseconds, and the number of ``cpuN``
    lines as ``online_cpus``. dockerd fails the sample when the file cannot be read; here both
    are 0 (so Go's ``omitempty`` drops them)."""
    text = _text(proc / "stat")
    usage = cpus = 0
    for line in (text or "").splitlines():
        if len(line) < 4 or not line.startswith("cpu"):
            break  # the cpu lines come first, as glibc and dockerd assume
        if line[3] == " ":
            parts = line.split()
            if len(parts) < 8 or not all(p.isdigit() for p in parts[1:8]):
                return 0, 0
            usage = sum(int(p) for p in parts[1:8]) * _NS // USER_HZ
        elif line[3].isdigit():
            cpus += 1
    return usage, cpus


def _membership(path: Path) -> dict[str, str]:
    """``/proc/<pid>/cgroup``: hierarchy (a v1 controller, or ``""`` for v2) -> path."""
    found: dict[str, str] = {}
    for line in (_text(path) or "").splitlines():
        _, controllers, cgroup = [*line.split(":", 2), "", ""][:3]
        for name in controllers.split(",") if controllers else [""]:
            found[name.removeprefix("name=")] = cgroup
    return found


def _locate(cgroup_path: str, hierarchy: str, pid_cgroups: Mapping[str, str], proc: Path) -> str:
    """Where runc put the cgroup in one hierarchy. The container's pid says best; else an
    absolute ``cgroupsPath`` is taken as is and a relative one, as runc's cgroupfs manager
    does, under runc's own cgroup (v1) or its parent (v2) — the daemon's, runc's parent."""
    if hierarchy in pid_cgroups:
        return pid_cgroups[hierarchy]
    if cgroup_path.startswith("/"):
        return cgroup_path
    own = _membership(proc / "self" / "cgroup").get(hierarchy, "/")
    return os.path.join(own if hierarchy else os.path.dirname(own), cgroup_path)


def read_cgroup_stats(
    cgroup_path: str,
    *,
    root: Path = Path("/sys/fs/cgroup"),
    pid: int | None = None,
    proc: Path = Path("/proc"),
    machine_memory: int | None = None,
) -> dict[str, Any]:
    """The cgroup-derived part of a ``StatsResponse``: ``pids_stats``, ``blkio_stats``,
    ``num_procs`` (0 on Linux), ``storage_stats`` (``{}``), ``cpu_stats`` (with the host's
    ``system_cpu_usage`` and ``online_cpus`` sampled right after, as dockerd does) and
    ``memory_stats``. ``cgroup_path`` is the spec's ``linux.cgroupsPath``; ``pid`` (the
    container's init) locates it exactly. A memory limit above the host's memory (none set)
    is reported as the host's ``MemTotal``, as dockerd does. A controller that is not there
    gives what containerd then gives (its fields absent / zero / ``null``); a cgroup that is
    nowhere (the container is gone) gives ``{}``: dockerd's "not found", for which
    :func:`stats_document` writes the empty document. Blocking: run it in a worker thread."""
    machine = mem_total() if machine_memory is None else machine_memory
    pid_cgroups = _membership(proc / str(pid) / "cgroup") if pid else {}
    if (root / "cgroup.controllers").exists():
        path = root / _locate(cgroup_path, "", pid_cgroups, proc).lstrip("/")
        part = _v2(path, machine) if path.is_dir() else None
    else:
        dirs = {c: root / c / _locate(cgroup_path, c, pid_cgroups, proc).lstrip("/") for c in _V1}
        present = {c: d for c, d in dirs.items() if d.is_dir()}
        part = _v1(present, machine) if present else None
    if part is None:
        return {}
    system, online = system_cpu_usage(proc)
    usage, throttling = part["cpu_stats"]["cpu_usage"], part["cpu_stats"]["throttling_data"]
    extra = _omit_zero({"system_cpu_usage": system, "online_cpus": online})
    part["cpu_stats"] = {"cpu_usage": usage, **extra, "throttling_data": throttling}
    return part


def _blkio_entries(path: Path) -> list[dict[str, Any]]:
    """A v1 ``blkio.*`` file: ``major:minor [Op] value`` lines (the closing ``Total`` skipped)."""
    entries: list[dict[str, Any]] = []
    for line in (_text(path) or "").splitlines():
        fields = re.split(r"[\s:]+", line.strip())
        if len(fields) not in (3, 4) or not all(f.isdigit() for f in fields[:2] + fields[-1:]):
            continue
        op = fields[2] if len(fields) == 4 else ""
        entries.append({"major": int(fields[0]), "minor": int(fields[1]), "op": op,
                        "value": int(fields[-1])})  # fmt: skip
    return entries


def _v1(dirs: Mapping[str, Path], machine: int) -> dict[str, Any]:
    """``statsV1`` of what containerd's cgroup1 controllers read."""
    pids: dict[str, Any] = {}
    if "pids" in dirs:  # pids.max "max" -> 0: no limit, omitted
        pids = _omit_zero({"current": _read_uint(dirs["pids"] / "pids.current"),
                           "limit": _read_uint(dirs["pids"] / "pids.max")})  # fmt: skip
    blkio = _empty_blkio()
    if "blkio" in dirs:  # containerd reads CFQ's files if any has entries, else throttle's
        blk = dirs["blkio"]
        blkio = {key: [] for key in _BLKIO}
        if (blk / "blkio.io_serviced_recursive").exists():
            blkio = {k: _blkio_entries(blk / f"blkio.{name}") for k, name in _BLKIO.items()}
        if not any(blkio.values()):
            blkio["io_serviced_recursive"] = _blkio_entries(blk / "blkio.throttle.io_serviced")
            service_bytes = _blkio_entries(blk / "blkio.throttle.io_service_bytes")
            blkio["io_service_bytes_recursive"] = service_bytes
    acct = dirs.get("cpuacct")
    total = kernel = user = 0
    percpu: list[int] | None = None
    if acct is not None:
        total = _read_uint(acct / "cpuacct.usage")
        percpu = [_uint(v) for v in (_text(acct / "cpuacct.usage_percpu") or "").split()]
        ticks = _read_kv(acct / "cpuacct.stat") or {}
        user = ticks.get("user", 0) * _NS // USER_HZ
        kernel = ticks.get("system", 0) * _NS // USER_HZ
    throttle = (_read_kv(dirs["cpu"] / "cpu.stat") or {}) if "cpu" in dirs else {}
    throttling = {"periods": throttle.get("nr_periods", 0),
                  "throttled_periods": throttle.get("nr_throttled", 0),
                  "throttled_time": throttle.get("throttled_time", 0)}  # fmt: skip
    memory: dict[str, Any] = {}
    raw = _read_kv(dirs["memory"] / "memory.stat") if "memory" in dirs else None
    if raw is not None:
        mem = dirs["memory"]
        limit = _read_uint(mem / "memory.limit_in_bytes")
        memory = _omit_zero({
            "usage": _read_uint(mem / "memory.usage_in_bytes"),
            "max_usage": _read_uint(mem / "memory.max_usage_in_bytes"),
            "stats": {key: raw.get(key, 0) for key in sorted(_MEMORY_V1)},
            "failcnt": _read_uint(mem / "memory.failcnt"),
            "limit": machine if limit > machine > 0 else limit,
        })  # fmt: skip
    return _cgroup_part(pids, blkio, _cpu_stats(total, kernel, user, throttling, percpu), memory)


def _v2(path: Path, machine: int) -> dict[str, Any]:
    """``statsV2`` of what containerd's cgroup2 manager reads (every file optional)."""
    pids = _omit_zero({
        "current": _read_uint(path / "pids.current", unlimited=_MAX_UINT64),
        "limit": _read_uint(path / "pids.max", unlimited=_MAX_UINT64),  # "max": 2**64-1
    })  # fmt: skip
    service_bytes: list[dict[str, Any]] = []
    for line in (_text(path / "io.stat") or "").splitlines():
        device, *pairs = line.split(" ")
        major, _, minor = device.partition(":")
        if not pairs or not (major.isdigit() and minor.isdigit()):
            continue
        values = dict(pair.split("=", 1) for pair in pairs if pair.count("=") == 1)
        for op, key in (("read", "rbytes"), ("write", "wbytes")):
            value = values.get(key, "")
            service_bytes.append({"major": int(major), "minor": int(minor), "op": op,
                                  "value": int(value) if value.isdigit() else 0})  # fmt: skip
    blkio = _empty_blkio()  # only io_service_bytes_recursive is filled; nil (null) when empty
    blkio["io_service_bytes_recursive"] = service_bytes or None
    cpu = _read_kv(path / "cpu.stat") or {}
    throttling = {"periods": cpu.get("nr_periods", 0),
                  "throttled_periods": cpu.get("nr_throttled", 0),
                  "throttled_time": cpu.get("throttled_usec", 0) * 1000}  # fmt: skip
    raw = _read_kv(path / "memory.stat") or {}
    limit = _read_uint(path / "memory.max", unlimited=_MAX_UINT64)
    events = _read_kv(path / "memory.events") or {}
    memory = _omit_zero({
        "usage": _read_uint(path / "memory.current", unlimited=_MAX_UINT64),
        "stats": {key: raw.get(key, 0) for key in sorted(_MEMORY_V2)},
        "failcnt": events.get("oom", 0),  # statsV2: the "oom" count of memory.events
        "limit": machine if limit > machine > 0 else limit,
    })  # fmt: skip
    cpu_stats = _cpu_stats(
        cpu.get("usage_usec", 0) * 1000,
        cpu.get("system_usec", 0) * 1000,
        cpu.get("user_usec", 0) * 1000,
        throttling,
        None,  # no per-CPU usage on v2
    )
    return _cgroup_part(pids, blkio, cpu_stats, memory)


def _cgroup_part(
    pids: dict[str, Any], blkio: dict[str, Any], cpu: dict[str, Any], memory: dict[str, Any]
) -> dict[str, Any]:
    """What the cgroup gives of a ``StatsResponse`` (``num_procs`` is always 0 on Linux)."""
    return {"pids_stats": pids, "blkio_stats": blkio, "num_procs": 0, "storage_stats": {},
            "cpu_stats": cpu, "memory_stats": memory}  # fmt: skip


def read_network_stats(
    pid: int | None, *, proc: Path = Path("/proc"), interfaces: Collection[str] | None = None
) -> dict[str, dict[str, int]]:
    """The container's interfaces as ``/proc/<pid>/net/dev`` shows its network namespace,
    sorted by name (Go sorts map keys), ``lo`` left out: dockerd lists the interfaces
    libnetwork put in the sandbox (pass their names as ``interfaces`` to list only those).
    dockerd copies bytes, packets and drops from netlink, so ``rx_errors`` and ``tx_errors``
    are always 0 there, and here. ``{}`` without a pid or when the process is gone."""
    text = _text(proc / str(pid) / "net" / "dev") if pid else None
    found: dict[str, dict[str, int]] = {}
    for line in (text or "").splitlines()[2:]:
        name, _, counters = line.partition(":")
        name = name.strip()
        fields = counters.split()
        if name == "lo" or len(fields) < 12 or (interfaces is not None and name not in interfaces):
            continue
        rx_bytes, rx_packets, _, rx_dropped = (_uint(f) for f in fields[0:4])
        tx_bytes, tx_packets, _, tx_dropped = (_uint(f) for f in fields[8:12])
        found[name] = {
            "rx_bytes": rx_bytes, "rx_packets": rx_packets, "rx_errors": 0,
            "rx_dropped": rx_dropped, "tx_bytes": tx_bytes, "tx_packets": tx_packets,
            "tx_errors": 0, "tx_dropped": tx_dropped,
        }  # fmt: skip
    return dict(sorted(found.items()))


def _go_time(moment: _dt.datetime) -> str:
    """Go's ``time.RFC3339Nano`` in UTC (containerd's timestamps are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    text = moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def stats_document(
    container_id: str,
    name: str,
    cgroup_part: Mapping[str, Any],
    networks: Mapping[str, Mapping[str, int]],
    read: _dt.datetime | None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """dockerd's ``StatsResponse`` (API 1.51's key order; no ``os_type``, which API 1.52
    added). ``previous`` is the document sent before on the same stream (its ``read`` becomes
    ``preread``, its ``cpu_stats`` ``precpu_stats``); without one ``preread`` is Go's zero
    time and ``precpu_stats`` the empty shape. An empty ``cgroup_part`` (container not
    running, or gone) gives dockerd's empty response: zero ``read``, empty shapes, no
    ``networks``; ``networks`` is also left out when empty (``omitempty``)."""
    found = bool(cgroup_part)
    document: dict[str, Any] = {
        "name": name if name.startswith("/") else f"/{name}",
        "id": container_id,
        "read": _go_time(read) if found and read is not None else ZERO_TIME,
        "preread": previous["read"] if previous else ZERO_TIME,
        "pids_stats": copy.deepcopy(cgroup_part.get("pids_stats", {})),
        "blkio_stats": copy.deepcopy(cgroup_part.get("blkio_stats", _empty_blkio())),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": copy.deepcopy(cgroup_part.get("cpu_stats", _empty_cpu_stats())),
        "precpu_stats": copy.deepcopy(previous["cpu_stats"]) if previous else _empty_cpu_stats(),
        "memory_stats": copy.deepcopy(cgroup_part.get("memory_stats", {})),
    }
    if found and networks:
        document["networks"] = {key: dict(networks[key]) for key in sorted(networks)}
    return document


def empty_stats_document(container_id: str, name: str) -> dict[str, Any]:
    """What dockerd answers ``stream=false`` for a container that is not running (or is
    restarting), one-shot or not: only ``name`` and ``id`` set, everything else zero."""
    return stats_document(container_id, name, {}, {}, None)
