"""HostConfig settings that were accepted and ignored are applied: each is checked in a real
container (runc), from inside it and from the host's side of its cgroups and namespaces.

Networking is the loopback driver: no bridge, so these run beside the bridge tests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import asyncstart
from asyncstart.images.busybox import build_busybox_tar

from .helpers import open_clean, real_containers

pytestmark = real_containers()


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_tar(tmp_path_factory.mktemp("image") / "busybox.tar")


@pytest.fixture
async def daemon(tmp_path: Path, busybox_tar: Path) -> AsyncIterator[asyncstart.Daemon]:
    config = asyncstart.DaemonConfig(
        data_root=tmp_path / "d", exec_root=tmp_path / "x", runtime="runc", network="loopback"
    )
    async with open_clean(config) as engine:
        await engine.image_import(str(busybox_tar), repo="busybox", tag="latest")
        yield engine


async def _output(daemon: asyncstart.Daemon, script: str, **host: Any) -> tuple[int, str]:
    """Run ``sh -c script`` to its end: (exit code, stdout and stderr)."""
    cid = await daemon.container_create(
        config={"Image": "busybox", "Cmd": ["sh", "-c", script]}, host_config=host
    )
    await daemon.container_start(cid)
    status = (await daemon.container_wait(cid))["StatusCode"]
    text = b"".join([data async for _, data in daemon.container_logs(cid)]).decode()
    await daemon.container_remove(cid)
    return status, text


@contextlib.asynccontextmanager
async def _running(daemon: asyncstart.Daemon, **host: Any) -> AsyncIterator[int]:
    """A container that sleeps while the block runs: its pid on the host."""
    cid = await daemon.container_create(
        config={"Image": "busybox", "Cmd": ["sleep", "60"]}, host_config=host
    )
    await daemon.container_start(cid)
    try:
        yield (await daemon.container_inspect(cid))["State"]["Pid"]
    finally:
        await daemon.container_remove(cid, force=True)


def _cgroup_file(pid: int, controller: str, name: str) -> str:
    """A cgroup v1 file of the process's own cgroup, read from the host."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return (Path("/sys/fs/cgroup") / controller / path.lstrip("/") / name).read_text()
    raise AssertionError(f"{controller} not in /proc/{pid}/cgroup")


def _ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


v1_only = pytest.mark.skipif(
    not Path("/sys/fs/cgroup/memory").is_dir(), reason="needs the cgroup v1 memory controller"
)


@pytest.mark.parametrize(
    ("host", "kind"),
    [({"PidMode": "host"}, "pid"), ({"IpcMode": "host"}, "ipc"), ({"UTSMode": "host"}, "uts")],
)
async def test_a_namespace_shared_with_the_host_is_the_hosts(
    daemon: asyncstart.Daemon, host: dict[str, str], kind: str
) -> None:
    async with _running(daemon, **host) as pid:
        assert _ns(pid, kind) == _ns("self", kind)
    async with _running(daemon) as pid:
        assert _ns(pid, kind) != _ns("self", kind), "by default the container has its own"


async def test_cgroupns_private_is_a_namespace_of_its_own(daemon: asyncstart.Daemon) -> None:
    async with _running(daemon, CgroupnsMode="private") as pid:
        assert _ns(pid, "cgroup") != _ns("self", "cgroup")
    async with _running(daemon, CgroupnsMode="host") as pid:
        assert _ns(pid, "cgroup") == _ns("self", "cgroup")


async def test_ipc_none_has_no_shm_and_host_shares_the_hosts(daemon: asyncstart.Daemon) -> None:
    status, _ = await _output(daemon, "test -d /dev/shm", IpcMode="none")
    assert status != 0
    marker = Path("/dev/shm") / f"asyncstart-test-{os.getpid()}"
    marker.write_text("from the host")
    try:
        status, text = await _output(daemon, f"cat /dev/shm/{marker.name}", IpcMode="host")
    finally:
        marker.unlink()
    assert (status, text) == (0, "from the host")


async def test_uts_host_keeps_the_hosts_name(daemon: asyncstart.Daemon) -> None:
    status, text = await _output(daemon, "hostname", UTSMode="host")
    assert (status, text.strip()) == (0, os.uname().nodename)


async def test_group_add_gives_supplementary_groups(daemon: asyncstart.Daemon) -> None:
    # busybox's image has no /etc/group: numeric groups, as dockerd allows.
    status, text = await _output(daemon, "id -G", GroupAdd=["1234", "50"])
    assert status == 0
    assert {"1234", "50"} <= set(text.split())


async def test_group_add_by_name_is_looked_up_in_the_image(
    daemon: asyncstart.Daemon, tmp_path: Path
) -> None:
    """Without ``User``, the image's /etc/group was never read: any name was "not found"."""
    cid = await daemon.container_create(
        config={"Image": "busybox", "Cmd": ["id", "-G"]}, host_config={"GroupAdd": ["audio"]}
    )
    etc = tmp_path / "d" / "overlay" / cid / "upper" / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "group").write_text("root:x:0:\naudio:x:63:\n")
    await daemon.container_start(cid)
    assert (await daemon.container_wait(cid))["StatusCode"] == 0
    text = b"".join([d async for _, d in daemon.container_logs(cid)]).decode()
    assert "63" in text.split()


async def test_masked_and_readonly_paths_replace_the_defaults(daemon: asyncstart.Daemon) -> None:
    status, text = await _output(
        daemon,
        "cat /etc/passwd | wc -c; touch /tmp/x 2>/dev/null && echo writable || echo readonly",
        MaskedPaths=["/etc/passwd"],
        ReadonlyPaths=["/tmp"],
    )
    assert (status, text.split()) == (0, ["0", "readonly"])
    # An empty list unmasks what dockerd masks by default (docker's systempaths=unconfined).
    probe = "head -c 10 /proc/timer_list | wc -c"
    assert (await _output(daemon, probe))[1].strip() == "0", "masked by default"
    assert (await _output(daemon, probe, MaskedPaths=[]))[1].strip() == "10"


async def test_domainname_is_set(daemon: asyncstart.Daemon) -> None:
    cid = await daemon.container_create(
        config={
            "Image": "busybox",
            "Cmd": ["cat", "/proc/sys/kernel/domainname"],
            "Domainname": "example.test",
        }
    )
    await daemon.container_start(cid)
    await daemon.container_wait(cid)
    assert [d async for _, d in daemon.container_logs(cid)] == [b"example.test\n"]


async def test_console_size_is_the_ttys_first_size(daemon: asyncstart.Daemon) -> None:
    cid = await daemon.container_create(
        config={"Image": "busybox", "Cmd": ["stty", "size"], "Tty": True},
        host_config={"ConsoleSize": [33, 101]},
    )
    await daemon.container_start(cid)
    await daemon.container_wait(cid)
    text = b"".join([d async for _, d in daemon.container_logs(cid)])
    assert text.split() == [b"33", b"101"]


@v1_only
async def test_memory_settings_reach_the_cgroup(daemon: asyncstart.Daemon) -> None:
    mib = 1024 * 1024
    host = {
        "Memory": 64 * mib,
        "MemoryReservation": 32 * mib,
        "MemorySwap": 96 * mib,
        "MemorySwappiness": 7,
    }
    async with _running(daemon, **host) as pid:
        assert int(_cgroup_file(pid, "memory", "memory.limit_in_bytes")) == 64 * mib
        assert int(_cgroup_file(pid, "memory", "memory.soft_limit_in_bytes")) == 32 * mib
        assert int(_cgroup_file(pid, "memory", "memory.memsw.limit_in_bytes")) == 96 * mib
        assert int(_cgroup_file(pid, "memory", "memory.swappiness")) == 7
    async with _running(daemon, Memory=64 * mib, OomKillDisable=True) as pid:
        assert "oom_kill_disable 1" in _cgroup_file(pid, "memory", "memory.oom_control")
        # dockerd's default: swap twice the memory.
        assert int(_cgroup_file(pid, "memory", "memory.memsw.limit_in_bytes")) == 128 * mib


@v1_only
async def test_cpu_settings_reach_the_cgroup(daemon: asyncstart.Daemon) -> None:
    async with _running(daemon, CpuPeriod=50_000, CpuQuota=25_000, CpusetCpus="0") as pid:
        assert int(_cgroup_file(pid, "cpu", "cpu.cfs_period_us")) == 50_000
        assert int(_cgroup_file(pid, "cpu", "cpu.cfs_quota_us")) == 25_000
        assert _cgroup_file(pid, "cpuset", "cpuset.cpus").strip() == "0"
        status = Path(f"/proc/{pid}/status").read_text()
        assert "Cpus_allowed_list:\t0\n" in status


@v1_only
async def test_cgroup_parent_places_the_container(daemon: asyncstart.Daemon) -> None:
    async with _running(daemon, CgroupParent="asyncstart-test-parent") as pid:
        line = next(
            row for row in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":pids:" in row
        )
        assert "/asyncstart-test-parent/" in line


async def test_inspect_echoes_the_whole_host_config_with_defaults(
    daemon: asyncstart.Daemon,
) -> None:
    cid = await daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
    host = (await daemon.container_inspect(cid))["HostConfig"]
    for key in ("Init", "UTSMode", "MemorySwap", "CgroupnsMode", "VolumeDriver", "CpuQuota",
                "BlkioWeightDevice", "DeviceRequests", "ConsoleSize", "Isolation"):  # fmt: skip
        assert key in host, key
    assert host["IpcMode"] == "private"
    assert host["ShmSize"] == 64 * 1024 * 1024
    assert host["OomKillDisable"] is False
    assert host["Runtime"] == daemon.system_info()["DefaultRuntime"]
    assert "/proc/kcore" in host["MaskedPaths"] and "/proc/sys" in host["ReadonlyPaths"]
    await daemon.container_remove(cid)
