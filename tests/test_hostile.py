"""Hostile input and bad luck (issue 10): each case here failed on an earlier main."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

import anyio
import pytest
import structlog

import asyncstart
from asyncstart import errors
from asyncstart.hostinfo import host_facts
from asyncstart.images.source import ImportLimits
from asyncstart.logconfig import configure_logging
from asyncstart.logs import JsonFileWriter
from asyncstart.runtime import StateInfo
from asyncstart.settings import format_id_list

from .conftest import Engine, OpenEngine
from .helpers import (
    TOPDIR_FL,
    create,
    file_flags,
    set_file_flags,
    skip_unless_markable,
    spread_mark,
    without_journal,
)

pytestmark = pytest.mark.anyio


async def test_force_remove_as_the_process_exits_succeeds(engine: Engine) -> None:
    """``rm -f`` sent as the process exits: the runtime says "not running" to the KILL while
    the exit is still on its way (runc reports it once the output is drained). dockerd takes
    that as success; it was a 500 "could not kill" and the container stayed."""
    daemon, runtime = engine.daemon, engine.runtime
    cid = await create(daemon, "web")
    await daemon.container_start("web")
    process = runtime.processes[cid]
    process.status = "stopped"  # dead; its exit not reported yet
    runtime.exits[cid] = StateInfo("exit", pid=process.pid, exit_code=0, at=time.time())
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.container_remove, "web", True)
        await anyio.wait_all_tasks_blocked()
        runtime.replay_exit(cid)  # the exit arrives
    with pytest.raises(errors.NotFound):
        await daemon.container_inspect("web")


async def test_a_kill_that_races_the_exit_is_answered_by_the_exit(engine: Engine) -> None:
    daemon, runtime = engine.daemon, engine.runtime
    cid = await create(daemon, "web")
    await daemon.container_start("web")
    process = runtime.processes[cid]
    process.status = "stopped"
    runtime.exits[cid] = StateInfo("exit", pid=process.pid, exit_code=0, at=time.time())
    result: list[dict[str, object]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.container_kill, "web", "KILL")
        await anyio.wait_all_tasks_blocked()
        runtime.replay_exit(cid)
        result.append(await daemon.container_wait("web"))
    assert result == [{"StatusCode": 0}]


def _fail() -> None:
    raise ValueError("the cause")


def test_logged_exceptions_carry_their_type_and_traceback() -> None:
    """They were logged as the literal text ``exc_info=True``."""
    out = io.StringIO()
    configure_logging("info", out)
    try:
        log = structlog.get_logger("asyncstart.test")
        try:
            _fail()
        except ValueError:
            log.exception("something.failed", container_id="c")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "exc_info=True" not in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: the cause" in text


async def test_a_record_that_does_not_decode_is_quarantined_and_the_rest_served(
    open_engine: OpenEngine,
) -> None:
    """One truncated record (a full disk, a database edited by hand) made the daemon refuse to
    start. Now it is moved aside, loudly, and every other container is served."""
    async with open_engine() as engine:
        good = await create(engine.daemon, "good")
        bad = await create(engine.daemon, "bad")
        await engine.daemon.container_start("good")
    containers = engine.root / "data" / "containers"
    with sqlite3.connect(engine.root / "data" / "containers.db") as database:
        (whole,) = database.execute("SELECT data FROM records WHERE id = ?", (bad,)).fetchone()
        torn = bytes(whole)[:40]
        database.execute("UPDATE records SET data = ? WHERE id = ?", (torn, bad))
    async with open_engine(runtime=engine.runtime, mounter=engine.mounter) as engine:
        shown = await engine.daemon.container_inspect("good")
        assert shown["Id"] == good and shown["State"]["Running"]
        with pytest.raises(errors.NotFound):
            await engine.daemon.container_inspect("bad")
        # The name is free again; the damaged record is kept for a person to look at.
        await create(engine.daemon, "bad")
    assert not (containers / bad).exists()
    kept = list((engine.root / "data" / "quarantine").iterdir())
    assert [p.name.split(".")[0] for p in kept] == [bad]
    assert (kept[0] / "container.json").read_bytes() == torn
    assert engine.mounter.layers.get(bad) is not None, "its layer is left for a person"


async def test_settings_a_record_holds_and_this_engine_refuses_are_refused_at_each_start(
    open_engine: OpenEngine,
) -> None:
    """A record whose HostConfig this engine refuses (an older daemon's, a database edited by
    hand): dockerd's 400 at start (its verifyContainerSettings), at every start, the container
    left created. An update that puts the settings right lets it start."""
    async with open_engine() as engine:
        cid = await create(engine.daemon, "odd")
    with sqlite3.connect(engine.root / "data" / "containers.db") as database:
        (whole,) = database.execute("SELECT data FROM records WHERE id = ?", (cid,)).fetchone()
        record = json.loads(whole)
        record["host_config"]["RestartPolicy"] = {"Name": "sometimes", "MaximumRetryCount": 0}
        database.execute("UPDATE records SET data = ? WHERE id = ?", (json.dumps(record), cid))
    async with open_engine(runtime=engine.runtime, mounter=engine.mounter) as engine:
        for _ in range(2):
            with pytest.raises(errors.InvalidParameter, match="unknown policy 'sometimes'"):
                await engine.daemon.container_start("odd")
            shown = await engine.daemon.container_inspect("odd")
            assert shown["State"]["Status"] == "created"
        assert cid not in engine.runtime.processes
        await engine.daemon.container_update("odd", {"RestartPolicy": {"Name": "no"}})
        await engine.daemon.container_start("odd")
        assert (await engine.daemon.container_inspect("odd"))["State"]["Running"]


@pytest.mark.parametrize(
    ("config", "host_config", "message"),
    [
        ({}, {"Memory": 1}, "Minimum memory limit allowed is 6MB"),
        (
            {},
            {"Memory": 2**70},
            f"json: cannot unmarshal number {2**70} into Go struct field HostConfig.Memory "
            "of type int64",
        ),
        (
            {},
            {"CpuShares": 2**63},
            f"json: cannot unmarshal number {2**63} into Go struct field HostConfig.CpuShares "
            "of type int64",
        ),
        ({}, {"ShmSize": -1}, "SHM size can not be less than 0"),
        (
            {"User": str(2**70)},
            {},
            f"invalid user '{2**70}': {2**70} is not a valid uid or gid (0 to 4294967294)",
        ),
        (
            {},
            {"Memory": 8 * 2**20, "MemorySwap": 7 * 2**20},
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            {},
            {"MemorySwap": 8 * 2**20},
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ),
        (
            {},
            {"MemorySwappiness": 101},
            "Invalid value: 101, valid memory swappiness range is 0-100",
        ),
        ({}, {"MemoryReservation": 1}, "Minimum memory reservation allowed is 6MB"),
        (
            {},
            {"NanoCpus": 10**9, "CpuPeriod": 100000},
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ),
        (
            {},
            {"CpuPeriod": 10},
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ),
        ({}, {"CpuQuota": 10}, "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
        ({}, {"CpusetCpus": "0-x"}, "Invalid value 0-x for cpuset cpus: invalid format: 0-x"),
        (
            {},
            {"CpusetCpus": "4095"},
            "Requested CPUs are not available - requested 4095, available: "
            + format_id_list(host_facts().cpuset_cpus),
        ),
        ({}, {"IpcMode": "bogus"}, "invalid IPC mode: bogus"),
        ({}, {"PidMode": "bogus"}, "invalid PID mode: bogus"),
        ({}, {"UTSMode": "bogus"}, "invalid UTS mode: bogus"),
        ({}, {"CgroupnsMode": "bogus"}, "invalid cgroup namespace mode: bogus"),
        ({"Hostname": "h"}, {"UTSMode": "host"}, "conflicting options: hostname and the UTS mode"),
        ({"Hostname": "h" * 65}, {}, f'hostname "{"h" * 65}" is too long (maximum 64 bytes)'),
        ({}, {"Isolation": "hyperv"}, "invalid isolation (hyperv): linux only supports 'default'"),
        (
            {},
            {"IOMaximumIOps": 5},
            "invalid option: QoS maximum IOPs configuration is not supported on linux",
        ),
        (
            {},
            {"StorageOpt": {"size": "1G"}},
            "--storage-opt is supported only for overlay over xfs with 'pquota' mount option",
        ),
        (
            {},
            {"Annotations": {"": "x"}},
            "invalid Annotations: the empty string is not permitted as an annotation key",
        ),
        (
            {"WorkingDir": "relative/dir"},
            {},
            "the working directory 'relative/dir' is invalid, it needs to be an absolute path",
        ),
    ],
)
async def test_values_dockerd_refuses_are_refused_at_create(
    engine: Engine, config: dict[str, object], host_config: dict[str, object], message: str
) -> None:
    """They were accepted, and failed at start with runc's text and a 500."""
    daemon = engine.daemon
    body = {"Image": "busybox", "Cmd": ["true"], **config}
    with pytest.raises(errors.InvalidParameter) as refused:
        await daemon.container_create("web", body, host_config)
    assert refused.value.message == message
    assert await daemon.containers_list(all=True) == []
    assert engine.mounter.layers == {}, "nothing is left behind"
    assert not (engine.root / "data" / "containers").exists() or not any(
        (engine.root / "data" / "containers").iterdir()
    )


async def test_what_a_killed_import_left_is_swept_at_start(open_engine: OpenEngine) -> None:
    """A daemon killed mid-import left ``.upload-*`` directories (with the whole upload)
    forever."""
    async with open_engine() as engine:
        root = engine.root / "data" / "image"
    leftovers = [root / ".upload-x1", root / ".load-x2", root / "layers" / ".import-x3"]
    for leftover in leftovers:
        leftover.mkdir(parents=True)
        (leftover / "upload.tar").write_bytes(b"x" * 1024)
    keep = root / "layers" / ("a" * 64)
    keep.mkdir()
    async with open_engine():
        assert [p.exists() for p in leftovers] == [False, False, False]
        assert keep.exists()


async def test_a_gzip_import_holds_no_deleted_file_open(engine: Engine, tmp_path: Path) -> None:
    """Each gzip import kept an fd to its decompressed temporary file, pinning its size on
    disk until the daemon restarted."""
    layer = tmp_path / "rootfs.tar"
    with tarfile.open(layer, "w") as archive:
        data = b"y" * 200_000
        member = tarfile.TarInfo("bin/blob")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    packed = tmp_path / "rootfs.tar.gz"
    packed.write_bytes(gzip.compress(layer.read_bytes()))
    await engine.daemon.image_import(str(packed), repo="gz", tag="1")
    await engine.daemon.image_import(str(packed), repo="gz", tag="2")
    held = [
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if _readable_link(f"/proc/self/fd/{fd}")
    ]
    assert not [path for path in held if path.endswith("(deleted)") and ".tar" in path]


def _readable_link(path: str) -> bool:
    try:
        os.readlink(path)
    except OSError:
        return False
    return True


_CLOSED = {"": 0o710, "containers": 0o710, "overlay": 0o710, "image": 0o700, "network": 0o700}


def _modes(data_root: Path) -> dict[str, int]:
    return {name: (data_root / name).stat().st_mode & 0o777 for name in _CLOSED}


async def test_the_roots_are_closed_to_other_users_and_closed_again_on_reopen(
    open_engine: OpenEngine,
) -> None:
    """Everything was 0755: with a container's setuid binary in its upper directory, any local
    user was root. dockerd keeps its data root 0710 and what is below it closed."""
    async with open_engine() as engine:
        pass
    data_root, exec_root = engine.root / "data", engine.root / "exec"
    assert _modes(data_root) == _CLOSED
    assert exec_root.stat().st_mode & 0o777 == 0o700
    for name in _CLOSED:  # as an older version left them
        (data_root / name).chmod(0o755)
    exec_root.chmod(0o755)
    async with open_engine():
        assert _modes(data_root) == _CLOSED
        assert exec_root.stat().st_mode & 0o777 == 0o700


def _spread(root: Path) -> set[str]:
    """Which of the roots and the data root's directories are marked (``chattr +T``)."""
    names = ["exec", "data", *(f"data/{name}" for name in _CLOSED if name)]
    return {name for name in names if spread_mark(root / name)}


async def test_the_directories_of_containers_spread_them_over_the_file_system(
    open_engine: OpenEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ext4 keeps a directory's subdirectories in its own block group unless it is marked as
    a top of hierarchies. Without a journal, each inode a start allocated there walked past
    every inode freed there in the last minute: under a churn of starts and removals the
    overlay mount cost 1.7 ms instead of 0.15."""
    skip_unless_markable(tmp_path)
    without_journal(monkeypatch)
    async with open_engine() as engine:
        cid = await create(engine.daemon, "web")
        await engine.daemon.volume_create({})  # (the volumes' directory is made with the first)
    spread = {"exec", "data/containers", "data/overlay"}  # one directory per container each
    assert _spread(engine.root) == spread
    assert spread_mark(engine.root / "data" / "volumes")
    # Not inherited: what is in a container's directory stays together.
    assert not spread_mark(engine.root / "data" / "containers" / cid)
    for name in spread:  # as an older version left them
        set_file_flags(engine.root / name, (file_flags(engine.root / name) or 0) & ~TOPDIR_FL)
    assert _spread(engine.root) == set()
    async with open_engine():
        assert _spread(engine.root) == spread


def test_a_containers_log_is_not_for_other_users(tmp_path: Path) -> None:
    writer = JsonFileWriter(tmp_path / "c-json.log")
    writer.write("stdout", b"secret\n")
    writer.close()
    assert (tmp_path / "c-json.log").stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_another_user_reaches_nothing_under_the_roots() -> None:
    # Roots under a directory every user may cross (a test's tmp_path is closed already).
    base = Path(tempfile.mkdtemp(prefix="asyncstart-perm-"))
    try:
        base.chmod(0o755)
        config = asyncstart.DaemonConfig(
            data_root=base / "data", exec_root=base / "exec", runtime="fake", fsync=False
        )
        async with asyncstart.open_daemon(config) as daemon:
            await create(daemon, "web")
        data_root = base / "data"
        targets = [str(data_root), *(str(data_root / name) for name in _CLOSED if name)]
        targets.append(str(base / "exec"))
        probe = 'for p; do ls "$p" >/dev/null 2>&1 && echo "reached $p"; done; true'
        result = await anyio.run_process(
            ["/bin/sh", "-c", probe, "sh", *targets], user=65534, group=65534, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"", "another user reached: " + result.stdout.decode()
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_a_lone_surrogate_is_refused_before_anything_is_made(engine: Engine) -> None:
    """It was a 500 at the record's save, and the container's layer was left behind."""
    with pytest.raises(errors.InvalidParameter, match="invalid JSON"):
        await engine.daemon.container_create(
            "web", {"Image": "busybox", "Cmd": ["true"], "Labels": {"a": "\ud800"}}
        )
    assert engine.mounter.layers == {}
    assert await engine.daemon.containers_list(all=True) == []


@pytest.mark.parametrize(
    "manifest",
    [
        [1],
        [{"Config": 7, "Layers": []}],
        [{"Config": "c.json", "Layers": "l.tar"}],
        [{"Config": "c.json", "Layers": [], "RepoTags": "x:1"}],
        [{"Config": "c.json", "Layers": [], "RepoTags": ["Upper:1"]}],
    ],
)
async def test_a_load_manifest_of_the_wrong_shape_is_a_400(
    engine: Engine, tmp_path: Path, manifest: object
) -> None:
    """Wrong types in manifest.json were a 500."""
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (
            ("manifest.json", json.dumps(manifest).encode()),
            ("c.json", b'{"rootfs": {"diff_ids": []}}'),
        ):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    with pytest.raises(errors.InvalidParameter):
        await engine.daemon.image_load(str(archive))
    assert await engine.daemon.images_list() == []


@pytest.mark.parametrize("repo", ["a..b", "Upper", "a\nb", "nul\x00", "ok:bad tag"])
async def test_an_import_under_a_name_dockerd_refuses_is_a_400(
    engine: Engine, tmp_path: Path, repo: str
) -> None:
    layer = tmp_path / "rootfs.tar"
    with tarfile.open(layer, "w") as tar:
        tar.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    with pytest.raises(errors.InvalidParameter, match="invalid reference format"):
        await engine.daemon.image_import(str(layer), repo=repo)
    assert await engine.daemon.images_list() == []


async def test_a_tail_that_is_no_number_means_all_as_with_dockerd(engine: Engine) -> None:
    """dockerd reads ``tail`` with Go's Atoi and takes what it refuses as all: a number too
    long to convert is no failure half-way through the read, nor a 400."""
    cid = await create(engine.daemon, "web")
    await engine.daemon.container_start("web")
    for line in (b"one\n", b"two\n"):
        engine.runtime.output(cid, "stdout", line)
    for tail in ("9" * 5000, "9" * 20, "ten", "-1", "+٣"):
        lines = [data async for _, data in engine.daemon.container_logs("web", tail=tail)]
        assert lines == [b"one\n", b"two\n"], tail
    assert [d async for _, d in engine.daemon.container_logs("web", tail="+1")] == [b"two\n"]


async def test_an_import_beyond_the_limits_is_a_400_and_leaves_nothing(
    open_engine: OpenEngine, tmp_path: Path
) -> None:
    """Imports had no bound on what they unpacked: a 4 MB gzip bomb filled the disk."""
    limits = ImportLimits(max_bytes=1 << 20, max_entries=50)
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as out:  # a few KB that decompress to 4 MiB
        for _ in range(4):
            out.write(b"\0" * (1 << 20))
    many = tmp_path / "many.tar"
    with tarfile.open(many, "w") as tar:
        for n in range(60):
            tar.addfile(tarfile.TarInfo(f"f{n}"), io.BytesIO(b""))
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tar:
        member = tarfile.TarInfo("blob")
        member.size = 2 << 20
        tar.addfile(member, io.BytesIO(b"z" * member.size))
    async with open_engine(import_limits=limits) as engine:
        daemon = engine.daemon
        for archive, what in (
            (bomb, "decompresses to more than 1048576 bytes"),
            (many, "more than 50 entries"),
            (big, "more than 1048576 bytes"),
        ):
            with pytest.raises(errors.InvalidParameter, match="archive too large") as refused:
                await daemon.image_import(str(archive), repo="x")
            assert what in refused.value.message
            with pytest.raises(errors.InvalidParameter, match="archive too large"):
                await daemon.image_load(str(archive))
        assert await daemon.images_list() == []
    image_root = engine.root / "data" / "image"
    assert [p.name for p in (image_root / "layers").iterdir()] == []
    assert [p.name for p in image_root.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("config", "host_config", "message"),
    [
        ({}, {"CapAdd": ["FOO"]}, 'unknown capability: "CAP_FOO"'),
        ({}, {"CapDrop": ["cap_nope"]}, 'unknown capability: "CAP_NOPE"'),
        ({}, {"LogConfig": {"Type": "syslog"}}, "json-file driver only"),
        ({"StopSignal": "SIGFOO"}, {}, "Invalid signal: SIGFOO"),
        ({"MacAddress": "02:42:ac:11:00:02"}, {}, "Config.MacAddress"),
        ({}, {"Privileged": True}, "HostConfig.Privileged"),
        ({}, {"PidMode": "container:web2"}, "HostConfig.PidMode"),
        ({}, {"IpcMode": "container:web2"}, "HostConfig.IpcMode"),
        ({}, {"Devices": [{"PathOnHost": "/dev/fuse"}]}, "HostConfig.Devices"),
        ({}, {"DeviceCgroupRules": ["c 1:3 mr"]}, "HostConfig.DeviceCgroupRules"),
        ({}, {"DeviceRequests": [{"Count": -1}]}, "HostConfig.DeviceRequests"),
        ({}, {"Init": True}, "HostConfig.Init"),
        ({}, {"Links": ["db:db"], "NetworkMode": "host"}, "host type networking can't be used"),
        ({}, {"Cgroup": "container:web2"}, "HostConfig.Cgroup"),
        ({}, {"CpuRealtimeRuntime": 950}, "HostConfig.CpuRealtimeRuntime"),
        ({}, {"CpuCount": 2}, "HostConfig.CpuCount"),
        ({}, {"BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 1}]}, "BlkioDeviceReadBps"),
        ({"Healthcheck": {"Test": ["CMD", "true"]}}, {}, "Config.Healthcheck"),
        ({"NetworkDisabled": True}, {}, "Config.NetworkDisabled"),
    ],
)
async def test_a_setting_not_applied_is_refused_not_ignored(
    engine: Engine, config: dict[str, object], host_config: dict[str, object], message: str
) -> None:
    """These were accepted and never applied: the caller got another container than asked."""
    body = {"Image": "busybox", "Cmd": ["true"], **config}
    with pytest.raises(errors.InvalidParameter) as refused:
        await engine.daemon.container_create("web", body, host_config)
    assert message in refused.value.message
    assert engine.mounter.layers == {}


async def test_what_clients_send_by_default_is_accepted(engine: Engine) -> None:
    neutral = {
        "Privileged": False,
        "PidMode": "",
        "IpcMode": "private",
        "UTSMode": "",
        "CgroupnsMode": "",
        "Devices": [],
        "Init": None,
        "Links": None,
        "CapAdd": ["net_admin", "CAP_SYS_TIME"],
        "CapDrop": ["ALL"],
        "LogConfig": {"Type": "json-file", "Config": {}},
    }
    body = {"Image": "busybox", "Cmd": ["true"], "MacAddress": "", "StopSignal": "SIGUSR1"}
    await engine.daemon.container_create("web", body, neutral)
    await engine.daemon.container_start("web")


@pytest.mark.parametrize(
    ("security_opt", "message"),
    [
        (["label"], 'invalid --security-opt 1: "label"'),
        (["nonsense"], 'invalid --security-opt 1: "nonsense"'),
        (["seccomp"], 'invalid --security-opt 1: "seccomp"'),
        (["sekcomp=unconfined"], 'invalid --security-opt 2: "sekcomp=unconfined"'),
        (["no-new-privileges=yes"], 'invalid --security-opt 2: "no-new-privileges=yes"'),
        (["writable-cgroups=dang"], 'invalid --security-opt 2: "writable-cgroups=dang"'),
        (["seccomp=/path/on/the/client.json"], "Decoding seccomp profile failed: "),
        (["seccomp={\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": "
          "[\"mkdir\"], \"action\": \"SCMP_ACT_NOPE\"}]}"],
         "Decoding seccomp profile failed: unknown seccomp action 'SCMP_ACT_NOPE'"),
        (["seccomp={\"defaultAction\": \"SCMP_ACT_ERRNO\", \"architectures\": "
          "[\"SCMP_ARCH_X86_64\"], \"archMap\": []}", "seccomp={\"syscalls\": 1}"],
         "Decoding seccomp profile failed: Expected `array | null`, got `int`"),
        (["writable-cgroups"], "HostConfig.SecurityOpt"),
    ],
)  # fmt: skip
async def test_a_bad_security_opt_is_refused_at_create(
    engine: Engine, security_opt: list[str], message: str
) -> None:
    """SecurityOpt was checked against a fixed list: a seccomp profile or an AppArmor name was
    refused as not applied, ``no-new-privileges=true`` accepted and not applied. Now it is
    dockerd's grammar and a profile is decoded at create: a bad one is a 400 before anything
    is made, not a failed start."""
    body = {"Image": "busybox", "Cmd": ["true"]}
    with pytest.raises(errors.InvalidParameter) as refused:
        await engine.daemon.container_create("web", body, {"SecurityOpt": security_opt})
    assert message in refused.value.message
    assert await engine.daemon.containers_list(all=True) == []
    assert engine.mounter.layers == {}


@pytest.mark.parametrize(
    ("log_opts", "message"),
    [
        ({"max-size": "lots"}, "invalid size: 'lots'"),
        ({"max-size": "10q"}, "invalid suffix: 'q'"),
        ({"max-size": "1e400"}, "value out of range"),
        ({"max-file": "0"}, "max-file cannot be less than 1"),
        ({"max-file": "1" * 40}, "value out of range"),
        ({"rotate-all": "1"}, "unknown log opt 'rotate-all' for json-file log driver"),
        ({"compress": "true", "max-size": "1m", "max-file": "3"}, "LogConfig.Config.compress"),
    ],
)
async def test_a_bad_log_opt_is_a_400_at_create(
    engine: Engine, log_opts: dict[str, str], message: str
) -> None:
    """LogConfig's options were accepted and ignored: a log meant to stay under 30 MB grew
    without bound. dockerd refuses a bad value when the logger starts; here at create."""
    body = {"Image": "busybox", "Cmd": ["true"]}
    host = {"LogConfig": {"Type": "json-file", "Config": log_opts}}
    with pytest.raises(errors.InvalidParameter) as refused:
        await engine.daemon.container_create("web", body, host)
    assert message in refused.value.message
    assert await engine.daemon.containers_list(all=True) == []
    assert engine.mounter.layers == {}


async def test_a_huge_max_file_costs_only_the_files_there_are(engine: Engine) -> None:
    """dockerd renames every name up to max-file at each rotation: 2**63 of them here."""
    opts = {"max-size": "1", "max-file": str(2**63 - 1)}
    cid = await create(engine.daemon, "web", LogConfig={"Type": "json-file", "Config": opts})
    await engine.daemon.container_start("web")
    with anyio.fail_after(10):
        for n in range(50):  # a rotation per line
            engine.runtime.output(cid, "stdout", f"{n}\n".encode())
        got = [d async for _, d in engine.daemon.container_logs("web")]
    assert got == [f"{n}\n".encode() for n in range(50)]


async def test_a_huge_tail_of_a_huge_log_streams_and_leaves_the_loop_free(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log was read whole and parsed on the event loop: ``--tail`` of 97 MiB stalled the
    daemon (``_ping`` included) for seconds. A tail longer than the log is all of it, read in
    chunks in worker threads."""
    from asyncstart.logs import reader

    cid = await create(engine.daemon, "web")
    log = Path((await engine.daemon.container_inspect("web"))["LogPath"])
    at = "2024-01-01T00:00:00Z"
    entry = json.dumps({"log": "y" * 100 + "\n", "stream": "stdout", "time": at})
    count = 20 * 1024 * 1024 // (len(entry) + 1)
    log.write_bytes((entry + "\n").encode() * count)
    sizes: list[int] = []
    real = reader._read_at

    def counting(fd: int, size: int, offset: int) -> bytes:
        sizes.append(size)
        return real(fd, size, offset)

    monkeypatch.setattr(reader, "_read_at", counting)
    ticks, seen = 0, 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.001)
            ticks += 1

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            async for _ in engine.daemon.container_logs(cid, tail="9" * 19):
                seen += 1
            tg.cancel_scope.cancel()
    assert seen == count
    assert ticks > 0 and max(sizes) <= 256 * 1024
