"""``docker stats``' numbers: fake cgroup v1 and v2 trees, /proc files, and one real cgroup."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncstart.runtime.stats import (
    empty_stats_document,
    read_cgroup_stats,
    read_network_stats,
    stats_document,
    system_cpu_usage,
)

CID = "4716f4bd8ec942c2cd5ed638b78e0f642cffb247967bf86b430d6d69ca77547d"
GIB = 1 << 30
UNLIMITED_V1 = "9223372036854771712"
PROC_STAT = """\
cpu  1407996 0 612535 5134907 40416 0 13374 38775 0 0
cpu0 516836 0 278404 2797803 5460 0 1314 18913 0 0
cpu1 891160 0 334130 2337103 34956 0 12059 19861 0 0
intr 55092184 0 0 0
ctxt 131092153
cpu9 this line is past the cpu block and not counted
"""
#: (1407996 + 0 + 612535 + 5134907 + 40416 + 0 + 13374) ticks at USER_HZ 100, in ns.
SYSTEM_NS = 7_209_228 * 10_000_000
NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  856111    9433    0    0    0     0          0         0   856111    9433    0    0    0     0       0          0
  eth1:    1500      12    3    4    0     0          0         0      700       9    5    6    0     0       0          0
  eth0: 1411290266   39045    0    2    0     0          0         0  2744418   23106    0    1    0     0       0          0
"""  # noqa: E501
V1_MEMORY_STAT = """\
cache 9990144
rss 6217728
rss_huge 0
shmem 9797632
mapped_file 8228864
dirty 32768
writeback 0
swap 0
pgpgin 122882
pgpgout 118925
pgfault 266579
pgmajfault 3
inactive_anon 0
active_anon 1531904
inactive_file 12288
active_file 180224
unevictable 0
hierarchical_memory_limit 67108864
hierarchical_memsw_limit 134217728
total_cache 9990144
total_rss 6217728
total_rss_huge 0
total_shmem 9797632
total_mapped_file 8228864
total_dirty 32768
total_writeback 0
total_swap 0
total_pgpgin 122882
total_pgpgout 118925
total_pgfault 266579
total_pgmajfault 3
total_inactive_anon 0
total_active_anon 1531904
total_inactive_file 12288
total_active_file 180224
total_unevictable 0
"""
THROTTLE_BYTES = """\
254:0 Read 4096
254:0 Write 8192
254:0 Sync 12288
254:0 Async 0
254:0 Discard 0
254:0 Total 12288
Total 12288
"""
THROTTLE_IOS = "254:0 Read 1\n254:0 Write 2\n254:0 Sync 3\n254:0 Async 0\n254:0 Discard 0\n"
THROTTLE_IOS += "254:0 Total 3\nTotal 3\n"
V2_MEMORY_STAT = """\
anon 1048576
file 2097152
kernel_stack 16384
slab 65536
sock 0
shmem 0
file_mapped 4096
file_dirty 0
file_writeback 0
anon_thp 0
inactive_anon 1040384
active_anon 8192
inactive_file 1572864
active_file 524288
unevictable 0
slab_reclaimable 32768
slab_unreclaimable 32768
pgfault 1200
pgmajfault 7
workingset_refault_anon 0
workingset_refault_file 0
pgscan 0
pgsteal 0
zswap 0
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    return write(tmp_path / "proc", {"stat": PROC_STAT})


def v1_tree(root: Path, path: str = f"asyncstart/{CID}", *, limit: str = "67108864") -> None:
    write(root / "memory", {"memory.limit_in_bytes": UNLIMITED_V1})
    write(root / "memory" / path, {
        "memory.stat": V1_MEMORY_STAT, "memory.usage_in_bytes": "16232448\n",
        "memory.max_usage_in_bytes": "20000768\n", "memory.failcnt": "2\n",
        "memory.limit_in_bytes": f"{limit}\n", "memory.oom_control": "oom_kill_disable 0\n",
    })  # fmt: skip
    write(root / "cpuacct" / path, {
        "cpuacct.usage": "24070330\n", "cpuacct.usage_percpu": "14082040 9988290 \n",
        "cpuacct.stat": "user 3\nsystem 2\n",
    })  # fmt: skip
    write(root / "cpu" / path, {"cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\n"
                                "nr_bursts 0\nburst_time 0\n"})  # fmt: skip
    write(root / "pids" / path, {"pids.current": "3\n", "pids.max": "max\n"})
    write(root / "blkio" / path, {
        "blkio.throttle.io_service_bytes": THROTTLE_BYTES,
        "blkio.throttle.io_serviced": THROTTLE_IOS,
        "blkio.bfq.io_serviced_recursive": "Total 0\n",
    })  # fmt: skip


def v2_tree(root: Path, path: str = f"asyncstart/{CID}") -> Path:
    write(root, {"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n"})
    return write(root / path, {
        "cpu.stat": "usage_usec 52000\nuser_usec 31000\nsystem_usec 21000\nnr_periods 7\n"
                    "nr_throttled 1\nthrottled_usec 250\nnr_bursts 0\nburst_usec 0\n",
        "memory.current": "3186688\n", "memory.max": "max\n", "memory.peak": "4000000\n",
        "memory.stat": V2_MEMORY_STAT,
        "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
        "pids.current": "2\n", "pids.max": "max\n",
        "io.stat": "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                   "7:1 rbytes=512 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    })  # fmt: skip


def entry(op: str, value: int, major: int = 254, minor: int = 0) -> dict[str, object]:
    return {"major": major, "minor": minor, "op": op, "value": value}


def test_v1_every_field(tmp_path: Path, proc: Path) -> None:
    v1_tree(tmp_path / "cg")
    part = read_cgroup_stats(f"/asyncstart/{CID}", root=tmp_path / "cg", proc=proc,
                             machine_memory=8 * GIB)  # fmt: skip
    assert part["cpu_stats"] == {
        "cpu_usage": {"total_usage": 24070330, "percpu_usage": [14082040, 9988290],
                      "usage_in_kernelmode": 20_000_000, "usage_in_usermode": 30_000_000},
        "system_cpu_usage": SYSTEM_NS, "online_cpus": 2,
        "throttling_data": {"periods": 10, "throttled_periods": 4, "throttled_time": 5000},
    }  # fmt: skip
    memory = part["memory_stats"]
    assert list(memory) == ["usage", "max_usage", "stats", "failcnt", "limit"]
    assert (memory["usage"], memory["max_usage"], memory["failcnt"]) == (16232448, 20000768, 2)
    assert memory["limit"] == 67108864
    stats = memory["stats"]
    assert len(stats) == 32 and list(stats) == sorted(stats)  # Go writes map keys sorted
    assert stats["total_inactive_file"] == 12288 and stats["cache"] == 9990144
    assert stats["hierarchical_memsw_limit"] == 134217728 and stats["unevictable"] == 0
    assert "shmem" not in stats and "swap" not in stats  # statsV1 copies a fixed set
    assert part["pids_stats"] == {"current": 3}  # pids.max "max": 0, omitted
    blkio = part["blkio_stats"]
    # No CFQ files: containerd falls back to the throttle files; every field a list.
    assert blkio["io_service_bytes_recursive"] == [
        entry("Read", 4096), entry("Write", 8192), entry("Sync", 12288),
        entry("Async", 0), entry("Discard", 0), entry("Total", 12288),
    ]  # fmt: skip
    assert [e["value"] for e in blkio["io_serviced_recursive"]] == [1, 2, 3, 0, 0, 3]
    assert list(blkio)[2:] == ["io_queue_recursive", "io_service_time_recursive",
                               "io_wait_time_recursive", "io_merged_recursive",
                               "io_time_recursive", "sectors_recursive"]  # fmt: skip
    assert all(blkio[key] == [] for key in list(blkio)[2:])
    assert (part["num_procs"], part["storage_stats"]) == (0, {})


def test_v1_unlimited_memory_is_the_hosts(tmp_path: Path, proc: Path) -> None:
    v1_tree(tmp_path / "cg", limit=UNLIMITED_V1)
    part = read_cgroup_stats(f"/asyncstart/{CID}", root=tmp_path / "cg", proc=proc,
                             machine_memory=8 * GIB)  # fmt: skip
    assert part["memory_stats"]["limit"] == 8 * GIB


def test_v1_cfq_files_when_they_have_entries(tmp_path: Path, proc: Path) -> None:
    v1_tree(tmp_path / "cg")
    blk = tmp_path / "cg" / "blkio" / "asyncstart" / CID
    write(blk, {f"blkio.{name}": "" for name in ("io_service_bytes_recursive",
               "io_queued_recursive", "io_service_time_recursive", "io_wait_time_recursive",
               "io_merged_recursive", "sectors_recursive")})  # fmt: skip
    write(blk, {"blkio.io_serviced_recursive": "8:0 Read 5\n8:0 Write 6\nTotal 11\n",
                "blkio.time_recursive": "8:0 77\n"})  # fmt: skip
    blkio = read_cgroup_stats(f"/asyncstart/{CID}", root=tmp_path / "cg", proc=proc)["blkio_stats"]
    assert blkio["io_serviced_recursive"] == [entry("Read", 5, 8), entry("Write", 6, 8)]
    assert blkio["io_time_recursive"] == [entry("", 77, 8)]
    assert blkio["io_service_bytes_recursive"] == []  # no fallback once CFQ had entries


def test_v1_missing_controllers(tmp_path: Path, proc: Path) -> None:
    root = tmp_path / "cg"
    write(root / "pids" / "asyncstart" / CID, {"pids.current": "1\n", "pids.max": "100\n"})
    part = read_cgroup_stats(f"/asyncstart/{CID}", root=root, proc=proc)
    assert part["pids_stats"] == {"current": 1, "limit": 100}
    assert part["memory_stats"] == {}  # containerd's Memory nil: every field omitted
    assert part["blkio_stats"] == dict.fromkeys(part["blkio_stats"])  # nil slices: null
    assert len(part["blkio_stats"]) == 8
    assert part["cpu_stats"]["cpu_usage"] == {
        "total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0,
    }  # fmt: skip


def test_gone_cgroup_is_empty(tmp_path: Path, proc: Path) -> None:
    v1_tree(tmp_path / "v1")
    v2_tree(tmp_path / "v2")
    assert read_cgroup_stats("/asyncstart/gone", root=tmp_path / "v1", proc=proc) == {}
    assert read_cgroup_stats("/asyncstart/gone", root=tmp_path / "v2", proc=proc) == {}
    assert read_cgroup_stats("/x", root=tmp_path / "nothing", proc=tmp_path / "noproc") == {}


def test_relative_path_under_runcs_own_cgroup(tmp_path: Path, proc: Path) -> None:
    """runc puts a relative cgroupsPath under its own cgroup, per v1 hierarchy."""
    root = tmp_path / "cg"
    v1_tree(root, f"process_api/abc/asyncstart/{CID}")
    write(proc / "self", {"cgroup": "8:pids:/process_api/abc\n4:memory:/process_api/abc\n"
                                    "2:cpu,cpuacct:/process_api/abc\n0::/\n"})  # fmt: skip
    part = read_cgroup_stats(f"asyncstart/{CID}", root=root, proc=proc)
    assert part["pids_stats"] == {"current": 3}
    assert part["memory_stats"]["usage"] == 16232448
    assert part["cpu_stats"]["cpu_usage"]["total_usage"] == 24070330
    assert part["blkio_stats"]["io_queue_recursive"] is None  # blkio: / + path, not there


def test_pid_locates_the_cgroup(tmp_path: Path, proc: Path) -> None:
    root = tmp_path / "cg"
    v1_tree(root, f"elsewhere/{CID}")
    write(proc / "4242", {"cgroup": f"4:memory:/elsewhere/{CID}\n8:pids:/elsewhere/{CID}\n"})
    part = read_cgroup_stats(f"asyncstart/{CID}", root=root, proc=proc, pid=4242)
    assert part["memory_stats"]["usage"] == 16232448
    assert part["pids_stats"] == {"current": 3}
    assert part["cpu_stats"]["cpu_usage"]["total_usage"] == 0  # cpuacct not in its file


def test_v2_every_field(tmp_path: Path, proc: Path) -> None:
    v2_tree(tmp_path / "cg")
    part = read_cgroup_stats(f"/asyncstart/{CID}", root=tmp_path / "cg", proc=proc,
                             machine_memory=8 * GIB)  # fmt: skip
    assert part["cpu_stats"] == {
        "cpu_usage": {"total_usage": 52_000_000, "usage_in_kernelmode": 21_000_000,
                      "usage_in_usermode": 31_000_000},
        "system_cpu_usage": SYSTEM_NS, "online_cpus": 2,
        "throttling_data": {"periods": 7, "throttled_periods": 1, "throttled_time": 250_000},
    }  # fmt: skip
    memory = part["memory_stats"]
    assert list(memory) == ["usage", "stats", "failcnt", "limit"]  # no max_usage on v2
    assert (memory["usage"], memory["failcnt"], memory["limit"]) == (3186688, 1, 8 * GIB)
    assert len(memory["stats"]) == 31 and memory["stats"]["inactive_file"] == 1572864
    assert memory["stats"]["pgactivate"] == 0 and "zswap" not in memory["stats"]
    assert part["pids_stats"] == {"current": 2, "limit": 2**64 - 1}  # containerd's "max"
    blkio = part["blkio_stats"]
    assert blkio["io_service_bytes_recursive"] == [
        entry("read", 4096), entry("write", 8192),
        entry("read", 512, 7, 1), entry("write", 0, 7, 1),
    ]  # fmt: skip
    assert all(blkio[key] is None for key in list(blkio)[1:])


def test_v2_sparse_cgroup(tmp_path: Path, proc: Path) -> None:
    path = v2_tree(tmp_path / "cg")
    for name in ("io.stat", "memory.stat", "memory.events", "pids.max", "cpu.stat"):
        (path / name).unlink()
    (path / "memory.max").write_text("1073741824\n")
    part = read_cgroup_stats(f"/asyncstart/{CID}", root=tmp_path / "cg", proc=proc,
                             machine_memory=8 * GIB)  # fmt: skip
    assert part["blkio_stats"]["io_service_bytes_recursive"] is None
    assert part["memory_stats"]["limit"] == GIB and "failcnt" not in part["memory_stats"]
    assert set(part["memory_stats"]["stats"].values()) == {0}
    assert part["pids_stats"] == {"current": 2}
    assert part["cpu_stats"]["throttling_data"]["periods"] == 0


def test_v2_relative_path_under_the_parent_of_runcs_cgroup(tmp_path: Path, proc: Path) -> None:
    v2_tree(tmp_path / "cg", f"system.slice/asyncstart/{CID}")
    write(proc / "self", {"cgroup": "0::/system.slice/engine.service\n"})
    part = read_cgroup_stats(f"asyncstart/{CID}", root=tmp_path / "cg", proc=proc)
    assert part["pids_stats"]["current"] == 2


def test_system_cpu_usage(tmp_path: Path, proc: Path) -> None:
    assert system_cpu_usage(proc) == (SYSTEM_NS, 2)
    assert system_cpu_usage(tmp_path / "absent") == (0, 0)
    write(tmp_path / "bad", {"stat": "cpu  1 2 3\n"})
    assert system_cpu_usage(tmp_path / "bad") == (0, 0)
    usage, cpus = system_cpu_usage()
    assert usage > 0 and cpus >= 1


def test_network_stats(tmp_path: Path) -> None:
    write(tmp_path / "77" / "net", {"dev": NET_DEV})
    networks = read_network_stats(77, proc=tmp_path)
    assert list(networks) == ["eth0", "eth1"]
    assert networks["eth0"] == {
        "rx_bytes": 1411290266, "rx_packets": 39045, "rx_errors": 0, "rx_dropped": 2,
        "tx_bytes": 2744418, "tx_packets": 23106, "tx_errors": 0, "tx_dropped": 1,
    }  # fmt: skip
    assert networks["eth1"]["rx_errors"] == 0  # dockerd does not copy the error counters
    assert list(read_network_stats(77, proc=tmp_path, interfaces={"eth1"})) == ["eth1"]
    assert read_network_stats(None) == {} and read_network_stats(0) == {}
    assert read_network_stats(99, proc=tmp_path) == {}
    assert "lo" not in read_network_stats(os.getpid())


def test_document_shape(tmp_path: Path, proc: Path) -> None:
    v1_tree(tmp_path / "cg")
    part = read_cgroup_stats(f"/asyncstart/{CID}", root=tmp_path / "cg", proc=proc)
    read = dt.datetime(2025, 1, 2, 3, 4, 5, 120000, tzinfo=dt.UTC)
    nets = {"eth1": {"rx_bytes": 1}, "eth0": {"rx_bytes": 2}}
    first = stats_document(CID, "web", part, nets, read)
    assert list(first) == ["name", "id", "read", "preread", "pids_stats", "blkio_stats",
                           "num_procs", "storage_stats", "cpu_stats", "precpu_stats",
                           "memory_stats", "networks"]  # fmt: skip
    assert (first["name"], first["id"]) == ("/web", CID)
    assert (first["read"], first["preread"]) == ("2025-01-02T03:04:05.12Z", "0001-01-01T00:00:00Z")
    assert first["precpu_stats"] == {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }  # fmt: skip
    assert list(first["networks"]) == ["eth0", "eth1"]
    assert first["cpu_stats"] == part["cpu_stats"] and first["cpu_stats"] is not part["cpu_stats"]
    later = read + dt.timedelta(seconds=1, microseconds=-120000)
    second = stats_document(CID, "/web", part, {}, later, first)
    assert (second["name"], second["read"]) == ("/web", "2025-01-02T03:04:06Z")
    assert second["preread"] == first["read"]
    assert second["precpu_stats"] == first["cpu_stats"] and "networks" not in second
    json.dumps(second)


def test_stopped_and_gone_documents() -> None:
    empty = empty_stats_document(CID, "/web")
    assert json.dumps(empty) == json.dumps({
        "name": "/web", "id": CID, "read": "0001-01-01T00:00:00Z",
        "preread": "0001-01-01T00:00:00Z", "pids_stats": {},
        "blkio_stats": {key: None for key in (
            "io_service_bytes_recursive", "io_serviced_recursive", "io_queue_recursive",
            "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
            "io_time_recursive", "sectors_recursive")},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                                    "usage_in_usermode": 0},
                      "throttling_data": {"periods": 0, "throttled_periods": 0,
                                          "throttled_time": 0}},
        "precpu_stats": empty["cpu_stats"], "memory_stats": {},
    })  # fmt: skip
    # A container gone mid-stream: dockerd's empty sample, pre* still from the last one.
    previous = {"read": "2025-01-02T03:04:05Z", "cpu_stats": {"cpu_usage": {"total_usage": 9}}}
    gone = stats_document(CID, "web", {}, {"eth0": {}}, dt.datetime.now(dt.UTC), previous)
    assert gone["read"] == "0001-01-01T00:00:00Z" and "networks" not in gone
    assert gone["preread"] == previous["read"] and gone["precpu_stats"] == previous["cpu_stats"]


V1_MEMORY = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
CHILD = """\
import sys
sys.stdin.readline()
block = bytearray(16 << 20)
print("ready", flush=True)
sys.stdin.readline()
"""


def _own_cgroup(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return "/"


def _rmdir(path: Path) -> None:
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise
            time.sleep(0.05)
    path.rmdir()


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not V1_MEMORY.exists(), reason="needs root and cgroup v1 memory"
)
def test_real_v1_cgroup() -> None:
    """A child moved into cgroups made the way runc makes them for a relative cgroupsPath
    (under this process's own cgroup in each hierarchy), then read back."""
    name = f"asyncstart-test-stats-{secrets.token_hex(4)}"
    dirs = {c: Path("/sys/fs/cgroup", c, _own_cgroup(c).lstrip("/"), name)
            for c in ("memory", "cpuacct", "pids")}  # fmt: skip
    made: list[Path] = []
    child: subprocess.Popen[str] | None = None
    try:
        for directory in dirs.values():
            directory.mkdir()
            made.append(directory)
        (dirs["memory"] / "memory.limit_in_bytes").write_text(str(256 << 20))
        (dirs["pids"] / "pids.max").write_text("50")
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        for directory in dirs.values():
            (directory / "cgroup.procs").write_text(str(child.pid))
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "ready\n"
        for part in (read_cgroup_stats(name), read_cgroup_stats("elsewhere", pid=child.pid)):
            memory = part["memory_stats"]
            assert memory["limit"] == 256 << 20
            assert memory["usage"] >= 16 << 20 and memory["max_usage"] >= memory["usage"]
            assert memory["stats"]["rss"] > 0
            assert part["pids_stats"] == {"current": 1, "limit": 50}
            assert part["cpu_stats"]["cpu_usage"]["total_usage"] > 0
            assert part["cpu_stats"]["online_cpus"] >= 1
        assert read_network_stats(child.pid).keys() == read_network_stats(os.getpid()).keys()
    finally:
        if child is not None:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for directory in reversed(made):
            _rmdir(directory)
    assert not any(directory.exists() for directory in made)
