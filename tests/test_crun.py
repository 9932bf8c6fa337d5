"""crun beside runc: a container names it (``HostConfig.Runtime``) or the daemon makes it the
default; its limits are enforced (on this host's hybrid cgroups crun runs where the cgroup2
half is hidden and uses the v1 hierarchies); a reopened daemon takes its containers back and
deletes those no record claims. Real processes, as root; the loopback network, no bridge.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncstart
from asyncstart.images.busybox import build_busybox_tar
from asyncstart.runtime.runc_cli import launcher
from asyncstart.runtime.seccomp_cache import ANNOTATION

from .helpers import lose_record, open_clean, real_containers

pytestmark = real_containers(("crun is not installed", shutil.which("crun") is None))

RUNTIMES = ["runc", "crun"]


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_tar(tmp_path_factory.mktemp("image") / "busybox.tar")


def _config(root: Path, **extra: Any) -> asyncstart.DaemonConfig:
    return asyncstart.DaemonConfig(
        data_root=root / "d", exec_root=root / "x", runtime="runc", network="loopback", **extra
    )


@pytest.fixture
async def daemon(tmp_path: Path, busybox_tar: Path) -> AsyncIterator[asyncstart.Daemon]:
    async with open_clean(_config(tmp_path)) as engine:
        await engine.image_import(str(busybox_tar), repo="busybox", tag="latest")
        yield engine


def _listed(root: Path, binary: str) -> list[str]:
    argv = [*launcher(binary), binary, "--root", str(root / "x" / "runc"), "list", "--format",
            "json"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    return [entry["id"] for entry in json.loads(out or "null") or []]


async def _run(daemon: asyncstart.Daemon, script: str, **host: Any) -> tuple[str, int, str]:
    cid = await daemon.container_create(
        config={"Image": "busybox", "Cmd": ["sh", "-c", script]}, host_config=host
    )
    await daemon.container_start(cid)
    code = (await daemon.container_wait(cid))["StatusCode"]
    text = b"".join([d async for _, d in daemon.container_logs(cid)]).decode()
    return cid, code, text


async def test_a_container_runs_on_crun_and_leaves_nothing(
    daemon: asyncstart.Daemon, tmp_path: Path
) -> None:
    cid, code, text = await _run(daemon, "echo on crun; exit 3", Runtime="crun")
    assert (code, text) == (3, "on crun\n")
    assert (await daemon.container_inspect(cid))["HostConfig"]["Runtime"] == "crun"
    assert "crun" in daemon.system_info()["Runtimes"]
    await daemon.container_remove(cid)
    assert _listed(tmp_path, "crun") == [] and _listed(tmp_path, "runc") == []


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_a_memory_limit_kills_what_exceeds_it(
    daemon: asyncstart.Daemon, runtime: str
) -> None:
    # The shell holds what it reads in a variable: 64 MiB against a 16 MiB limit, no swap.
    mib = 1024 * 1024
    limits = {"Memory": 16 * mib, "MemorySwap": 16 * mib, "Runtime": runtime}
    hog = "x=$(head -c {}m /dev/zero | tr '\\0' a); echo ${{#x}}"
    hogged, code, _ = await _run(daemon, hog.format(64), **limits)
    assert code == 137, "killed by the OOM killer (SIGKILL)"
    # Its monitor saw the OOM kill: inspect says so, as dockerd's.
    assert (await daemon.container_inspect(hogged))["State"]["OOMKilled"] is True
    fits, code, text = await _run(daemon, hog.format(2), **limits)
    assert (code, text) == (0, f"{2 * mib}\n"), "within the limit it runs"
    assert (await daemon.container_inspect(fits))["State"]["OOMKilled"] is False


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_a_pids_limit_stops_forks(daemon: asyncstart.Daemon, runtime: str) -> None:
    script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 3 & done 2>&1; echo done"
    _, _, text = await _run(daemon, script, PidsLimit=6, Runtime=runtime)
    assert "can't fork" in text


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_cpu_limits_reach_the_cgroup(daemon: asyncstart.Daemon, runtime: str) -> None:
    cid = await daemon.container_create(
        config={"Image": "busybox", "Cmd": ["sleep", "30"]},
        host_config={"CpuPeriod": 50_000, "CpuQuota": 20_000, "Runtime": runtime},
    )
    await daemon.container_start(cid)
    pid = (await daemon.container_inspect(cid))["State"]["Pid"]
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            directory = Path("/sys/fs/cgroup") / controllers / path.lstrip("/")
            assert int((directory / "cpu.cfs_quota_us").read_text()) == 20_000
            break
    else:
        raise AssertionError("no cpu controller in the container's cgroups")
    await daemon.container_remove(cid, force=True)


async def test_crun_as_the_default_runtime(tmp_path: Path, busybox_tar: Path) -> None:
    async with open_clean(_config(tmp_path, default_runtime="crun")) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")
        assert daemon.system_info()["DefaultRuntime"] == "crun"
        cid, code, _ = await _run(daemon, "true")
        assert code == 0
        assert (await daemon.container_inspect(cid))["HostConfig"]["Runtime"] == "crun"
    with pytest.raises(asyncstart.errors.InvalidParameter, match="default runtime nope"):
        _config(tmp_path, default_runtime="nope").runtime_table()


async def test_a_reopened_daemon_takes_back_crun_containers_and_deletes_strays(
    tmp_path: Path, busybox_tar: Path
) -> None:
    async with asyncstart.open_daemon(_config(tmp_path)) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")
        kept = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sleep", "60"]}, host_config={"Runtime": "crun"}
        )
        await daemon.container_start(kept)
        stray = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sleep", "60"]}, host_config={"Runtime": "crun"}
        )
        await daemon.container_start(stray)
    # The daemon is gone, its containers live on; one loses its record.
    lose_record(tmp_path / "d", stray)
    async with open_clean(_config(tmp_path)) as daemon:
        state = (await daemon.container_inspect(kept))["State"]
        assert state["Running"], "taken back through crun"
        assert _listed(tmp_path, "crun") == [kept], "the stray is deleted"
        await daemon.container_stop(kept, timeout=0)
        assert (await daemon.container_inspect(kept))["State"]["ExitCode"] == 137
    assert _listed(tmp_path, "crun") == []


@pytest.mark.parametrize("monitor", ["none", "conmon"])
async def test_processes_that_end_at_once_on_crun_keep_their_exit_codes(
    tmp_path: Path, busybox_tar: Path, monitor: str
) -> None:
    """Every code arrives, from many at once as from one. Without a monitor, crun's ``run
    --detach`` lost some (255): it returns before its own child, the init's parent, has
    exited, and the daemon asked for the code of a zombie not yet its own; crun creates, then
    starts there. Under conmon (which reaps whatever comes to it) it runs detached."""
    if monitor == "conmon" and shutil.which("conmon") is None:
        pytest.skip("needs conmon")
    async with open_clean(_config(tmp_path, monitor=monitor)) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")
        for code in (0, 7, 0, 42):
            _, got, _ = await _run(daemon, f"exit {code}", Runtime="crun")
            assert got == code
        got_codes: dict[int, int] = {}

        async def one(code: int) -> None:
            got_codes[code] = (await _run(daemon, f"exit {code}", Runtime="crun"))[1]

        async with anyio.create_task_group() as tg:
            for code in range(20):
                tg.start_soon(one, code)
        assert got_codes == {code: code for code in range(20)}


@pytest.mark.parametrize("monitor", ["none", "conmon"])
@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_systemds_sockets_are_kept_from_the_runtime(
    tmp_path: Path,
    busybox_tar: Path,
    monkeypatch: pytest.MonkeyPatch,
    runtime: str,
    monitor: str,
) -> None:
    """A daemon (or a program embedding the engine) run as a systemd service may have
    ``NOTIFY_SOCKET`` (``Type=notify``) and ``LISTEN_FDS`` (socket activation) in its
    environment. Passed on, runc handed the notify socket to the container and ``runc run
    --detach`` waited for a ``READY=1`` that never came: the start hung; crun handed its own
    descriptors from 3 on (its log file among them) to the container. As under dockerd, no
    runtime sees them: the container has its three streams and no such variable, and the
    notify socket hears nothing."""
    if monitor == "conmon" and shutil.which("conmon") is None:
        pytest.skip("needs conmon")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with listener:
        listener.bind(str(tmp_path / "notify"))
        listener.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        monkeypatch.setenv("LISTEN_FDS", "2")
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
        monkeypatch.setenv("LISTEN_FDNAMES", "api:api")
        config = _config(tmp_path, monitor=monitor, default_runtime=runtime)
        async with open_clean(config) as daemon:
            await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")
            with anyio.fail_after(20):
                script = 'ls /proc/$$/fd; env | grep -E "^(NOTIFY|LISTEN)_"; exit 3'
                _, code, text = await _run(daemon, script)
                assert (code, text.split()) == (3, ["0", "1", "2"])
                alive = await daemon.container_create(
                    config={"Image": "busybox", "Cmd": ["sleep", "30"]}
                )
                await daemon.container_start(alive)
                exec_id = await daemon.exec_create(alive, {"Cmd": ["sh", "-c", "exit 5"]})
                await daemon.exec_start(exec_id, detach=True)
                while (found := await daemon.exec_inspect(exec_id))["Running"]:
                    await anyio.sleep(0.05)
                assert found["ExitCode"] == 5
        with pytest.raises(BlockingIOError):
            listener.recv(1024)


_PTRACE_ATTACH, _PTRACE_DETACH, _PTRACE_SECCOMP_GET_FILTER = 16, 17, 0x420C


def _loaded_filter(pid: int) -> bytes:
    """The seccomp program the kernel runs for ``pid``: read while it is stopped by ptrace."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(_PTRACE_ATTACH, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace attach")
    try:
        os.waitpid(pid, 0x40000000)  # __WALL: it is stopped
        count = libc.ptrace(_PTRACE_SECCOMP_GET_FILTER, pid, 0, None)
        if count < 0:
            raise OSError(ctypes.get_errno(), "no seccomp filter")
        program = ctypes.create_string_buffer(count * 8)
        libc.ptrace(_PTRACE_SECCOMP_GET_FILTER, pid, 0, program)
        return program.raw
    finally:
        libc.ptrace(_PTRACE_DETACH, pid, None, None)


@pytest.mark.parametrize("monitor", ["none", "conmon"])
async def test_crun_compiles_a_profile_once_and_the_kernel_runs_the_same_filter(
    tmp_path: Path, busybox_tar: Path, monitor: str
) -> None:
    """crun compiles dockerd's default profile at the first start; the next starts with the
    same profile hand it the program it compiled then (``run.oci.seccomp_bpf_data``), and the
    kernel runs the very same filter for them. Another profile (CAP_SYS_ADMIN's) is compiled
    anew; an unconfined container has no filter at all."""
    if monitor == "conmon" and shutil.which("conmon") is None:
        pytest.skip("needs conmon")
    config = _config(tmp_path, monitor=monitor, default_runtime="crun")
    async with open_clean(config) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")

        async def start(**host: Any) -> tuple[bool, bytes]:
            cid = await daemon.container_create(
                config={"Image": "busybox", "Cmd": ["sleep", "60"]}, host_config=host
            )
            await daemon.container_start(cid)
            spec = json.loads((tmp_path / "x" / cid / "config.json").read_text())
            pid = (await daemon.container_inspect(cid))["State"]["Pid"]
            try:
                loaded = _loaded_filter(pid)
            except OSError:
                loaded = b""
            await daemon.container_remove(cid, force=True)
            return ANNOTATION in (spec.get("annotations") or {}), loaded

        default = [await start() for _ in range(3)]
        admin = [await start(CapAdd=["SYS_ADMIN"]) for _ in range(2)]
        unconfined = await start(SecurityOpt=["seccomp=unconfined"])
    assert [handed for handed, _ in default + admin] == [False, True, True, False, True]
    assert default[0][1] and {program for _, program in default} == {default[0][1]}
    assert admin[0][1] and {program for _, program in admin} == {admin[0][1]} != {default[0][1]}
    assert unconfined == (False, b"")
