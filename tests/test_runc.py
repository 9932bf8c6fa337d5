"""Real containers: runc, overlay mounts, a busybox image built from the static binary.

These need root, runc and a static busybox (``./dev`` installs them on Debian as root; CI is
root). Every test checks that nothing is left behind: mounts, runc state, bundles.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import asyncstart
from asyncstart import errors
from asyncstart.images.busybox import build_busybox_tar
from asyncstart.network.loopback import LoopbackNetwork
from asyncstart.runtime.runc_cli import launcher

from .helpers import (
    lose_record,
    open_clean,
    real_containers,
    skip_unless_markable,
    spread_mark,
    without_journal,
)

pytestmark = real_containers()


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_tar(tmp_path_factory.mktemp("image") / "busybox.tar")


class _Roots:
    def __init__(self, base: Path) -> None:
        # Short paths: overlay mount options and unix socket paths have length limits.
        self.data = base / "d"
        self.exec = base / "x"


@pytest.fixture
def roots(tmp_path: Path) -> _Roots:
    return _Roots(tmp_path)


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4] for line in info if str(path) in line.split()[4]]


def _runc_list(roots: _Roots) -> list[dict[str, object]]:
    """Every container of the state root, as runc and as crun list them (each only its own)."""
    state = roots.exec / "runc"
    if not state.exists():
        return []
    entries: list[dict[str, object]] = []
    for binary in ("runc", "crun"):
        if shutil.which(binary):
            out = subprocess.run(
                [*launcher(binary), binary, "--root", str(state), "list", "--format", "json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            entries += json.loads(out or "null") or []
    return entries


def conmons_of(exec_root: Path) -> list[int]:
    """The conmon processes monitoring a container of this exec root."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"conmon") and any(str(exec_root).encode() in a for a in argv):
                found.append(int(entry.name))
    return found


def assert_nothing_left(roots: _Roots) -> None:
    assert _mounts_under(roots.data) == []
    assert _runc_list(roots) == []
    kept = ("runc", "netns", "conmon-exits", "conmon-attach", "network")
    bundles = [p.name for p in roots.exec.iterdir() if p.name not in kept]
    assert bundles == []
    assert [p.name for p in (roots.exec / "network").glob("*")] in ([], ["ipam.json"])
    if (roots.exec / "network" / "ipam.json").exists():  # no address leased
        leases = json.loads((roots.exec / "network" / "ipam.json").read_text())
        assert {bridge: {} for bridge in leases} == leases
    for monitor in ("conmon-exits", "conmon-attach"):
        files = roots.exec / monitor
        assert not files.exists() or list(files.iterdir()) == [], monitor
    assert conmons_of(roots.exec) == []
    netns = roots.exec / "netns"
    assert not netns.exists() or list(netns.iterdir()) == []
    for kept in ("containers", "overlay"):
        leftovers = list((roots.data / kept).iterdir()) if (roots.data / kept).exists() else []
        assert leftovers == [], f"{kept}: {leftovers}"


@pytest.fixture
async def runc_daemon(roots: _Roots, busybox_tar: Path) -> AsyncIterator[asyncstart.Daemon]:
    config = asyncstart.DaemonConfig(data_root=roots.data, exec_root=roots.exec, runtime="runc")
    async with open_clean(config) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")
        yield daemon


async def _run(daemon: asyncstart.Daemon, *cmd: str, **config: object) -> str:
    cid = await daemon.container_create(config={"Image": "busybox", "Cmd": list(cmd), **config})
    await daemon.container_start(cid)
    return cid


async def _logs(daemon: asyncstart.Daemon, cid: str) -> list[tuple[str, bytes]]:
    return [item async for item in daemon.container_logs(cid)]


async def test_the_runtimes_state_root_spreads_its_containers_directories(
    roots: _Roots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runc and crun make a directory per container there at every start (chattr +T: on
    ext4 without a journal, a churn of starts in one block group made every inode allocated
    there walk past those freed in the last minute)."""
    skip_unless_markable(tmp_path)
    without_journal(monkeypatch)
    config = asyncstart.DaemonConfig(data_root=roots.data, exec_root=roots.exec, runtime="runc")
    async with open_clean(config):
        assert spread_mark(roots.exec / "runc")


def _subreaper() -> int:
    flag = ctypes.c_int(-1)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(37, ctypes.byref(flag), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    return flag.value


async def test_the_process_is_a_subreaper_only_while_a_daemon_is_open(tmp_path: Path) -> None:
    """A runc daemon makes its process the reaper of orphaned descendants (the containers'
    inits); once the last daemon of the process is closed, the process is as it was: what a
    program that embeds the engine leaves behind later is init's again, not its zombies."""
    before = _subreaper()

    def config(n: int) -> asyncstart.DaemonConfig:
        return asyncstart.DaemonConfig(data_root=tmp_path / f"d{n}", exec_root=tmp_path / f"x{n}",
                                       runtime="runc", network="loopback")  # fmt: skip

    async with asyncstart.open_daemon(config(1)):
        assert _subreaper() == 1
        async with asyncstart.open_daemon(config(2)):
            assert _subreaper() == 1
        assert _subreaper() == 1, "another daemon still needs it"
    assert _subreaper() == before
    if before == 0:
        # An orphan made now is re-parented past this process.
        orphan = int(subprocess.run(["sh", "-c", "sleep 5 >/dev/null 2>&1 & echo $!"],
                                    capture_output=True, text=True, check=True).stdout)  # fmt: skip
        try:
            status = Path(f"/proc/{orphan}/status").read_text().splitlines()
            parent = next(line.split()[1] for line in status if line.startswith("PPid"))
            assert int(parent) != os.getpid()
        finally:
            os.kill(orphan, 9)


async def test_what_the_container_sees_is_not_narrowed_by_the_programs_umask(
    tmp_path: Path, busybox_tar: Path
) -> None:
    """A program that embeds the engine with a umask of 077 (a service's ``UMask=0077``) got
    containers whose "/" was 0700 and whose hosts, hostname and resolv.conf were 0600: a
    container user other than root could read none of it. What the engine makes for a
    container has dockerd's modes, whatever the umask: "/" 0755 (the container's layer), the
    network files 0644, a missing bind-mount source and its parents 0755, the mount points the
    runtime makes (busybox has no /mnt), and directories a layer implies without giving them
    0755."""
    image = tmp_path / "implied.tar"
    shutil.copy(busybox_tar, image)
    with tarfile.open(image, "a") as tar:
        member = tarfile.TarInfo("opt/implied/file")  # (no entry for opt/ or opt/implied/)
        member.size, member.mode = 2, 0o644
        tar.addfile(member, io.BytesIO(b"hi"))
    source = tmp_path / "binds" / "new" / "dir"
    config = asyncstart.DaemonConfig(data_root=tmp_path / "d", exec_root=tmp_path / "x",
                                     runtime="runc", network="none")  # fmt: skip
    old = os.umask(0o077)
    try:
        async with open_clean(config) as daemon:
            await daemon.image_import(str(image), repo="implied", tag="latest")
            script = "cat /etc/hosts /etc/hostname /etc/resolv.conf /opt/implied/file >/dev/null"
            cid = await daemon.container_create(
                config={"Image": "implied", "Cmd": ["sh", "-c", f"{script} && sleep 30"],
                        "User": "65534:65534"},
                host_config={"Binds": [f"{source}:/mnt/bound"]},
            )  # fmt: skip
            await daemon.container_start(cid)
            pid = (await daemon.container_inspect(cid))["State"]["Pid"]
            paths = ["/", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/mnt", "/mnt/bound",
                     "/opt", "/opt/implied"]  # fmt: skip
            modes = {p: oct(os.stat(f"/proc/{pid}/root{p}").st_mode & 0o777) for p in paths}
            assert modes == {
                "/": "0o755", "/etc/hosts": "0o644", "/etc/hostname": "0o644",
                "/etc/resolv.conf": "0o644", "/mnt": "0o755", "/mnt/bound": "0o755",
                "/opt": "0o755", "/opt/implied": "0o755",
            }  # fmt: skip
            made = [source.parent.parent, source.parent, source]
            assert [oct(p.stat().st_mode & 0o777) for p in made] == ["0o755"] * 3
            await daemon.container_stop(cid, timeout=0)
            assert (await daemon.container_inspect(cid))["State"]["ExitCode"] == 137, (
                "the container's user read every file (else the script ends at once)"
            )
    finally:
        os.umask(old)


async def test_echo_is_logged_and_exit_codes_arrive(
    runc_daemon: asyncstart.Daemon, roots: _Roots
) -> None:
    cid = await _run(runc_daemon, "sh", "-c", "echo hello; echo oops >&2; exit 3")
    assert await runc_daemon.container_wait(cid) == {"StatusCode": 3}
    assert sorted(await _logs(runc_daemon, cid)) == [("stderr", b"oops\n"), ("stdout", b"hello\n")]
    info = await runc_daemon.container_inspect(cid)
    assert info["State"]["Status"] == "exited" and info["Image"].startswith("sha256:")
    assert info["Config"]["Env"][0].startswith("PATH=")
    await runc_daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_missing_command_is_127_and_leaves_nothing(
    runc_daemon: asyncstart.Daemon, roots: _Roots
) -> None:
    cid = await runc_daemon.container_create(config={"Image": "busybox", "Cmd": ["/nope"]})
    with pytest.raises(errors.InvalidParameter, match="(?i)no such file or directory") as info:
        await runc_daemon.container_start(cid)
    assert info.value.status == 400
    state = (await runc_daemon.container_inspect(cid))["State"]
    assert (state["Status"], state["ExitCode"]) == ("created", 127)
    assert "/nope" in state["Error"]
    assert _mounts_under(roots.data) == [] and _runc_list(roots) == []
    await runc_daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_running_process_is_real_and_stop_kills_it(
    runc_daemon: asyncstart.Daemon, roots: _Roots
) -> None:
    cid = await _run(runc_daemon, "sleep", "1000")
    pid = (await runc_daemon.container_inspect(cid))["State"]["Pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        assert cmdline.read().split(b"\0")[:2] == [b"sleep", b"1000"]
    assert _mounts_under(roots.data), "the rootfs is mounted while it runs"
    await runc_daemon.container_pause(cid)
    assert _runc_list(roots)[0]["status"] == "paused"
    await runc_daemon.container_unpause(cid)
    # busybox sleep as pid 1 ignores TERM: the stop ends in KILL, as with dockerd.
    await runc_daemon.container_stop(cid, timeout=1)
    assert (await runc_daemon.container_inspect(cid))["State"]["ExitCode"] == 137
    assert not os.path.exists(f"/proc/{pid}")
    assert _mounts_under(roots.data) == []
    await runc_daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_fifty_concurrent_starts(runc_daemon: asyncstart.Daemon, roots: _Roots) -> None:
    ids = [
        await runc_daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sh", "-c", f"exit {i}"]}
        )
        for i in range(50)
    ]
    codes: dict[str, int] = {}

    async def run(cid: str) -> None:
        await runc_daemon.container_start(cid)
        codes[cid] = (await runc_daemon.container_wait(cid))["StatusCode"]

    async with anyio.create_task_group() as tg:
        for cid in ids:
            tg.start_soon(run, cid)
    assert [codes[cid] for cid in ids] == list(range(50))
    for cid in ids:
        await runc_daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_stdin_closed_before_start_reaches_cat(
    runc_daemon: asyncstart.Daemon, roots: _Roots
) -> None:
    cid = await runc_daemon.container_create(
        config={"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True, "StdinOnce": True}
    )
    await runc_daemon.container_close_stdin(cid)
    await runc_daemon.container_start(cid)
    with anyio.fail_after(30):  # cat sees EOF and exits: it never hangs
        assert await runc_daemon.container_wait(cid) == {"StatusCode": 0}
    await runc_daemon.container_remove(cid)
    assert_nothing_left(roots)


class _BrokenNetwork(LoopbackNetwork):
    async def setup(
        self, container_id: str, network_mode: str, attachments: object
    ) -> dict[str, object]:
        raise errors.SystemError("netlink: operation not permitted")


async def test_failed_network_phase_unmounts(roots: _Roots, busybox_tar: Path) -> None:
    config = asyncstart.DaemonConfig(data_root=roots.data, exec_root=roots.exec, runtime="runc")
    async with open_clean(config, network=_BrokenNetwork()) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox")
        cid = await daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
        with pytest.raises(errors.SystemError, match="netlink"):
            await daemon.container_start(cid)
        assert _mounts_under(roots.data) == [] and _runc_list(roots) == []
        await daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_image_in_use_cannot_be_removed(runc_daemon: asyncstart.Daemon) -> None:
    cid = await runc_daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
    with pytest.raises(errors.Conflict):
        await runc_daemon.image_remove("busybox")
    await runc_daemon.container_remove(cid)
    assert (await runc_daemon.image_remove("busybox"))[0] == "Untagged: busybox:latest"
    with pytest.raises(errors.NotFound, match="^No such image: busybox$"):
        await runc_daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})


async def test_logs_options(runc_daemon: asyncstart.Daemon) -> None:
    cid = await _run(runc_daemon, "sh", "-c", "for i in 1 2 3 4; do echo line$i; done; echo e >&2")
    await runc_daemon.container_wait(cid)
    logs = await _logs(runc_daemon, cid)
    # Two pipes: the order between stdout and stderr is not defined (nor is it in dockerd).
    assert [d for s, d in logs if s == "stdout"] == [b"line1\n", b"line2\n", b"line3\n", b"line4\n"]
    assert [d for s, d in logs if s == "stderr"] == [b"e\n"]
    # As dockerd, the last lines of the file, then the streams asked for.
    assert [x async for x in runc_daemon.container_logs(cid, tail=2)] == logs[-2:]
    tail = [x async for x in runc_daemon.container_logs(cid, stderr=False, tail=2)]
    assert tail == [x for x in logs[-2:] if x[0] == "stdout"]
    stamped = [d async for _, d in runc_daemon.container_logs(cid, stdout=False, timestamps=True)]
    assert len(stamped) == 1 and stamped[0].endswith(b"Z e\n")
    assert [d async for _, d in runc_daemon.container_logs(cid, since=2**40)] == []
    with pytest.raises(errors.InvalidParameter, match="at least one stream"):
        _ = [d async for _, d in runc_daemon.container_logs(cid, stdout=False, stderr=False)]


async def test_logs_rotate_with_max_size_and_max_file(runc_daemon: asyncstart.Daemon) -> None:
    """Both streams share one writer: the file's size, not each stream's, decides a rotation."""
    script = "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo out$i; echo err$i >&2; done"
    options = {"max-size": "2k", "max-file": "3"}
    cid = await runc_daemon.container_create(
        config={"Image": "busybox", "Cmd": ["sh", "-c", script]},
        host_config={"LogConfig": {"Type": "json-file", "Config": options}},
    )
    await runc_daemon.container_start(cid)
    await runc_daemon.container_wait(cid)
    log = Path((await runc_daemon.container_inspect(cid))["LogPath"])
    names = sorted(p.name for p in log.parent.iterdir() if p.name.startswith(log.name))
    assert names == [log.name, f"{log.name}.1", f"{log.name}.2"]
    assert all((log.parent / name).stat().st_size <= 2000 + 200 for name in names)
    logs = await _logs(runc_daemon, cid)
    assert 30 < len(logs) < 600 and logs[-1][1] in (b"out300\n", b"err300\n")
    # Per stream, the newest lines in order (two pipes: how they interleave is not defined).
    for stream in ("stdout", "stderr"):
        numbers = [int(d[3:]) for s, d in logs if s == stream]
        assert numbers == list(range(301 - len(numbers), 301))
    await runc_daemon.container_remove(cid)
    assert not log.parent.exists()


async def test_follow_streams_until_the_container_exits(runc_daemon: asyncstart.Daemon) -> None:
    cid = await _run(runc_daemon, "sh", "-c", "echo first; sleep 1; echo second")
    seen = []
    with anyio.fail_after(30):
        async for _, data in runc_daemon.container_logs(cid, follow=True):
            seen.append(data)
    assert seen == [b"first\n", b"second\n"]
    assert (await runc_daemon.container_inspect(cid))["State"]["Status"] == "exited"


@pytest.mark.parametrize("eof_before_start", [True, False])
async def test_attached_cat_gets_input_sent_before_and_after_start(
    runc_daemon: asyncstart.Daemon, roots: _Roots, eof_before_start: bool
) -> None:
    cid = await runc_daemon.container_create(
        config={"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True, "StdinOnce": True}
    )
    output: list[bytes] = []
    with anyio.fail_after(30):  # never hangs, whatever the order of EOF and start
        async with runc_daemon.container_attach(cid, stdin=True) as session:

            async def read() -> None:
                async for _, data in session:
                    output.append(data)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await session.send(b"before\n")
                if eof_before_start:
                    await session.send_eof()
                    await runc_daemon.container_start(cid)
                else:
                    await runc_daemon.container_start(cid)
                    await session.send(b"after\n")
                    await session.send_eof()
        assert await runc_daemon.container_wait(cid) == {"StatusCode": 0}
    expected = b"before\n" if eof_before_start else b"before\nafter\n"
    assert b"".join(output) == expected
    await runc_daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_checkpoint_restore_fails_clearly_and_leaves_nothing(
    roots: _Roots, busybox_tar: Path, tmp_path: Path
) -> None:
    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, runtime="runc", experimental=True
    )
    async with open_clean(config) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox")
        cid = await daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
        with pytest.raises(errors.DockerError) as info:
            await daemon.container_start(cid, checkpoint="cp1", checkpoint_dir=str(tmp_path))
        # runc restore needs CRIU and a checkpoint image; the error says what went wrong.
        assert "restore" in str(info.value).lower() or "criu" in str(info.value).lower()
        state = (await daemon.container_inspect(cid))["State"]
        assert state["Status"] == "created" and state["Error"]
        assert _mounts_under(roots.data) == [] and _runc_list(roots) == []
        await daemon.container_remove(cid)
    assert_nothing_left(roots)


@pytest.mark.parametrize("monitor", ["conmon", "none"])
async def test_reopen_reconciles_with_reality(
    roots: _Roots, busybox_tar: Path, monitor: str
) -> None:
    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, runtime="runc", monitor=monitor
    )
    async with asyncstart.open_daemon(config) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox")
        script = 'trap "echo signalled" USR1; echo before; while true; do sleep 0.1; done'
        keeps = await _run(daemon, "sh", "-c", script)
        dies = await _run(daemon, "sleep", "1000")
        orphan = await _run(daemon, "sleep", "1000")
        dying_pid = (await daemon.container_inspect(dies))["State"]["Pid"]
    # The daemon is gone; its containers run on. One process dies meanwhile, and one
    # container's record disappears (a removal that crashed half-way).
    os.kill(dying_pid, 9)
    lose_record(roots.data, orphan)
    async with open_clean(config) as daemon:
        state = (await daemon.container_inspect(keeps))["State"]
        assert state["Status"] == "running"
        state = (await daemon.container_inspect(dies))["State"]
        # conmon saw the SIGKILL; without a monitor, no one did: dockerd's 255.
        assert (state["Status"], state["ExitCode"]) == (
            "exited",
            137 if monitor == "conmon" else 255,
        )
        with pytest.raises(errors.NotFound):
            await daemon.container_inspect(orphan)
        assert [c["id"] for c in _runc_list(roots)] == [keeps]
        assert len(_mounts_under(roots.data)) == 1
        assert not (roots.exec / orphan).exists() and not (roots.exec / dies).exists()
        # The adopted container is fully managed: signals, output, stop.
        async with daemon.container_attach(keeps) as session:
            await daemon.container_kill(keeps, "USR1")
            with anyio.fail_after(20):
                async for _, data in session:
                    if b"signalled" in data:
                        break
        await daemon.container_stop(keeps, timeout=1)
        assert (await daemon.container_inspect(keeps))["State"]["Status"] == "exited"
        for cid in (keeps, dies):
            await daemon.container_remove(cid)
    assert_nothing_left(roots)


def _saved_archive(tmp_path: Path, busybox_tar: Path) -> Path:
    """A ``docker save`` archive: busybox plus a layer that deletes and hides files."""
    import hashlib
    import io
    import tarfile

    def layer(members: dict[str, bytes | None]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                if data is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    archive.addfile(info)
                else:
                    info.size, info.mode = len(data), 0o644
                    archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    base = layer({"data": None, "data/a": b"a", "data/dir": None, "data/dir/x": b"x"})
    top = layer({"data/.wh.a": b"", "data/dir/.wh..wh..opq": b"", "data/dir/y": b"y"})
    layers = [busybox_tar.read_bytes(), base, top]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh", "-c", "ls /data; ls /data/dir"],
                   "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]},
    }).encode()  # fmt: skip
    path = tmp_path / "saved.tar"
    with tarfile.open(path, "w") as archive:
        entries = {"config.json": config}
        entries |= {f"l{i}/layer.tar": data for i, data in enumerate(layers)}
        manifest = [{"Config": "config.json", "RepoTags": ["saved:1"],
                     "Layers": [f"l{i}/layer.tar" for i in range(len(layers))]}]  # fmt: skip
        entries["manifest.json"] = json.dumps(manifest).encode()
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


async def test_load_a_saved_image_with_whiteouts(
    runc_daemon: asyncstart.Daemon, busybox_tar: Path, tmp_path: Path, roots: _Roots
) -> None:
    loaded = await runc_daemon.image_load(str(_saved_archive(tmp_path, busybox_tar)))
    assert loaded == ["Loaded image: saved:1"]
    info = await runc_daemon.image_inspect("saved:1")
    assert len(info["RootFS"]["Layers"]) == 3
    cid = await runc_daemon.container_create(config={"Image": "saved:1"})
    await runc_daemon.container_start(cid)
    assert await runc_daemon.container_wait(cid) == {"StatusCode": 0}
    # /data/a is deleted by the top layer; /data/dir is opaque: only its own y shows.
    assert [d async for _, d in runc_daemon.container_logs(cid)] == [b"dir\n", b"y\n"]
    await runc_daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_load_rejects_a_layer_that_does_not_match_its_config(
    runc_daemon: asyncstart.Daemon, busybox_tar: Path, tmp_path: Path
) -> None:
    import tarfile

    good = _saved_archive(tmp_path, busybox_tar)
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "l2/layer.tar":
                data = data.replace(b"y", b"z", 1)
            member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data))
    layers = runc_daemon.data_root / "image" / "layers"
    before = sorted(layers.iterdir())
    with pytest.raises(errors.InvalidParameter, match="the config says"):
        await runc_daemon.image_load(str(bad))
    assert sorted(layers.iterdir()) == before
    with pytest.raises(errors.NotFound):
        await runc_daemon.image_inspect("saved:1")


async def test_the_spec_reaches_the_process(
    roots: _Roots, busybox_tar: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "note").write_text("from the host\n")
    config = asyncstart.DaemonConfig(
        data_root=roots.data,
        exec_root=roots.exec,
        runtime="runc",
        runtimes={"debugging": ["runc", "--debug"]},
    )
    script = (
        "echo $(hostname) $GREETING $(pwd) $(id -u):$(id -g); cat /data/note; "
        "touch /x 2>/dev/null || echo ro; touch /scratch/y && echo tmpfs-ok; ulimit -n"
    )
    async with open_clean(config) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox")
        cid = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sh", "-c", script], "Hostname": "box",
                    "Env": ["GREETING=hi"], "WorkingDir": "/tmp", "User": "nobody"},
            host_config={"ReadonlyRootfs": True, "Binds": [f"{shared}:/data:ro"],
                         "Tmpfs": {"/scratch": "mode=1777"}, "Runtime": "debugging",
                         "Ulimits": [{"Name": "nofile", "Soft": 512, "Hard": 1024}]},
        )  # fmt: skip
        await daemon.container_start(cid)
        assert await daemon.container_wait(cid) == {"StatusCode": 0}
        out = b"".join([d async for s, d in daemon.container_logs(cid) if s == "stdout"])
        assert out.decode().split("\n") == [
            "box hi /tmp 65534:65534",
            "from the host",
            "ro",
            "tmpfs-ok",
            "512",
            "",
        ]
        # Above the daemon's own hard limit: the start fails with a clear error.
        hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1]
        too_many = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["true"]},
            host_config={"Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": hard + 1}]},
        )
        with pytest.raises(errors.InvalidParameter, match="above the daemon's own hard limit"):
            await daemon.container_start(too_many)
        with pytest.raises(errors.InvalidParameter, match="unknown or invalid runtime name: x"):
            await daemon.container_create(
                config={"Image": "busybox", "Cmd": ["true"]}, host_config={"Runtime": "x"}
            )
        for container in (cid, too_many):
            await daemon.container_remove(container)
    assert_nothing_left(roots)


async def test_user_namespace_remapping(busybox_tar: Path) -> None:
    # The remapped root must be able to reach its root filesystem: every directory above it
    # has to be traversable (pytest's own temporary directories are 0700).
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="asyncstart-userns-"))
    base.chmod(0o711)
    try:
        await _userns_case(_Roots(base), busybox_tar)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _userns_case(roots: _Roots, busybox_tar: Path) -> None:
    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, runtime="runc", userns_remap="100000:100000"
    )
    async with open_clean(config) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox")
        cid = await _run(
            daemon,
            "sh",
            "-c",
            "id -u; touch /made && echo wrote; read line; exit 0",
            OpenStdin=True,
            StdinOnce=True,
        )
        pid = (await daemon.container_inspect(cid))["State"]["Pid"]
        bundle = (roots.exec / cid).stat()
        assert (bundle.st_uid, bundle.st_gid, bundle.st_mode & 0o777) == (100000, 100000, 0o700)
        with open(f"/proc/{pid}/status") as status:
            uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        assert uids[0] == "100000", "container root is the remapped uid on the host"
        await daemon.container_close_stdin(cid)
        with anyio.fail_after(20):
            assert await daemon.container_wait(cid) == {"StatusCode": 0}
        lines = [d async for s, d in daemon.container_logs(cid) if s == "stdout"]
        assert lines[:2] == [b"0\n", b"wrote\n"]
        await daemon.container_remove(cid, force=True)
    assert_nothing_left(roots)


async def test_a_failed_start_at_each_real_phase_leaves_nothing(
    roots: _Roots, busybox_tar: Path, tmp_path: Path
) -> None:
    # A runc that fails to start the container (after the bundle and stdio are made; under
    # conmon, after conmon has created it), saying why in its JSON log as runc does.
    wrapper = tmp_path / "runc-run-fails"
    wrapper.write_text(
        "#!/bin/sh\n"
        "log=; prev=; fail=\n"
        'for a in "$@"; do [ "$prev" = --log ] && log=$a; prev=$a\n'
        '  case "$a" in run|start) fail=1;; esac; done\n'
        'if [ -n "$fail" ]; then\n'
        """  [ -n "$log" ] && echo '{"level":"error","msg":"start refused"}' >> "$log"\n"""
        "  echo start refused >&2; exit 1\n"
        "fi\n"
        'exec runc "$@"\n'
    )
    wrapper.chmod(0o755)
    config = asyncstart.DaemonConfig(
        data_root=roots.data,
        exec_root=roots.exec,
        runtime="runc",
        runtimes={"flaky": [str(wrapper)]},
    )
    async with open_clean(config) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox")
        # runtime start
        cid = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["true"]}, host_config={"Runtime": "flaky"}
        )
        with pytest.raises(errors.SystemError, match="start refused"):
            await daemon.container_start(cid)
        assert _mounts_under(roots.data) == [] and _runc_list(roots) == []
        assert not (roots.exec / cid).exists()
        # spec (a ulimit above the daemon's own)
        hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1]
        spec_fails = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["true"]},
            host_config={"Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": hard + 1}]},
        )
        with pytest.raises(errors.InvalidParameter):
            await daemon.container_start(spec_fails)
        assert _mounts_under(roots.data) == [] and _runc_list(roots) == []
        # mount (the container's layer directory vanished)
        mount_fails = await daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
        shutil.rmtree(roots.data / "overlay" / mount_fails / "work")
        with pytest.raises(errors.SystemError, match="error mounting overlay"):
            await daemon.container_start(mount_fails)
        assert _mounts_under(roots.data) == [] and _runc_list(roots) == []
        for container in (cid, spec_fails, mount_fails):
            await daemon.container_remove(container)
    assert_nothing_left(roots)


@pytest.mark.parametrize("monitor", ["none", "conmon"])
async def test_a_removal_deletes_in_the_runtime_once(
    roots: _Roots, busybox_tar: Path, tmp_path: Path, monitor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime is asked to delete a container once: at its exit (the start's clean-up),
    not again when it is removed; ``rm -f`` of a running one deletes it once too. (Every runc
    the daemon runs is found on PATH: here, one that notes its arguments first.)"""
    if monitor == "conmon" and shutil.which("conmon") is None:
        pytest.skip("needs conmon")
    real = shutil.which("runc")
    assert real is not None
    calls, bin_dir = tmp_path / "calls", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "runc").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    (bin_dir / "runc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, runtime="runc", network="none",
        default_runtime="runc", monitor=monitor,
    )  # fmt: skip

    def deletes() -> int:
        said = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return sum(1 for line in said if " delete " in f" {line} ")

    async with open_clean(config) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox")
        ended = await daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
        await daemon.container_start(ended)
        with anyio.fail_after(10):
            await daemon.container_wait(ended)
            while deletes() == 0:  # (the exit's clean-up runs just after the wait is answered)
                await anyio.sleep(0.05)
        await daemon.container_remove(ended)
        assert deletes() == 0, "removed after its exit: nothing left for the runtime to delete"
        running = await daemon.container_create(config={"Image": "busybox", "Cmd": ["sleep", "60"]})
        await daemon.container_start(running)
        deletes()
        await daemon.container_remove(running, force=True)
        assert deletes() == 1
    assert_nothing_left(roots)


async def test_a_stale_runc_container_with_the_same_id_is_replaced(
    runc_daemon: asyncstart.Daemon, roots: _Roots, tmp_path: Path, busybox_tar: Path
) -> None:
    cid = await runc_daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
    # Leave a runc container with that ID behind, as a crashed daemon would.
    stale = tmp_path / "stale"
    (stale / "rootfs").mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(busybox_tar), "-C", str(stale / "rootfs")], check=True)
    process = {"args": ["sleep", "1000"], "cwd": "/", "user": {"uid": 0, "gid": 0},
               "env": ["PATH=/bin"]}  # fmt: skip
    spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": process,
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}}  # fmt: skip
    (stale / "config.json").write_text(json.dumps(spec))
    subprocess.run(
        ["runc", "--root", str(roots.exec / "runc"), "create", "--bundle", str(stale), cid],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert [c["id"] for c in _runc_list(roots)] == [cid]
    await runc_daemon.container_start(cid)
    assert await runc_daemon.container_wait(cid) == {"StatusCode": 0}
    await runc_daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_memory_and_pids_limits_reach_the_cgroup(runc_daemon: asyncstart.Daemon) -> None:
    cid = await runc_daemon.container_create(
        config={"Image": "busybox", "Cmd": ["sleep", "1000"]},
        host_config={"Memory": 64 * 1024 * 1024, "PidsLimit": 50},
    )
    await runc_daemon.container_start(cid)
    pid = (await runc_daemon.container_inspect(cid))["State"]["Pid"]
    with open(f"/proc/{pid}/cgroup") as cgroups:
        paths = dict(line.strip().split(":", 2)[1:] for line in cgroups)
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # cgroup v2: one unified tree
        group = Path("/sys/fs/cgroup") / paths[""].lstrip("/")
        memory_limit, pids_max = group / "memory.max", group / "pids.max"
        assert cid in paths[""]
    else:
        memory_limit = (
            Path("/sys/fs/cgroup/memory") / paths["memory"].lstrip("/") / "memory.limit_in_bytes"
        )
        pids_max = Path("/sys/fs/cgroup/pids") / paths["pids"].lstrip("/") / "pids.max"
        assert cid in paths["memory"]
    assert int(memory_limit.read_text()) == 64 * 1024 * 1024
    assert pids_max.read_text().strip() == "50"
    await runc_daemon.container_remove(cid, force=True)


async def test_a_tty_container_runs_on_a_terminal(
    runc_daemon: asyncstart.Daemon, roots: _Roots
) -> None:
    cid = await _run(runc_daemon, "sh", "-c", "tty; echo hi", Tty=True)
    assert await runc_daemon.container_wait(cid) == {"StatusCode": 0}
    out = b"".join([d async for s, d in runc_daemon.container_logs(cid) if s == "stdout"])
    assert out.replace(b"\r\n", b"\n") == b"/dev/pts/0\nhi\n"
    # Input through the terminal, ended with ^D.
    cat = await runc_daemon.container_create(
        config={"Image": "busybox", "Cmd": ["cat"], "Tty": True, "OpenStdin": True}
    )
    async with runc_daemon.container_attach(cat, stdin=True) as session:
        await session.send(b"typed\n")
        await session.send_eof()
        await runc_daemon.container_start(cat)
        with anyio.fail_after(20):
            seen = b"".join([data async for _, data in session])
    assert b"typed" in seen
    assert await runc_daemon.container_wait(cat) == {"StatusCode": 0}
    # A partial line: one ^D would only flush it; the input still ends.
    partial = await runc_daemon.container_create(
        config={"Image": "busybox", "Cmd": ["cat"], "Tty": True, "OpenStdin": True}
    )
    await runc_daemon.container_start(partial)
    async with runc_daemon.container_attach(partial, stdin=True) as session:
        await session.send(b"no newline")
        await session.send_eof()
        with anyio.fail_after(20):
            assert await runc_daemon.container_wait(partial) == {"StatusCode": 0}
    for container in (cid, cat, partial):
        await runc_daemon.container_remove(container)
    assert_nothing_left(roots)


def _busybox_variant(busybox_tar: Path, target: Path, etc: tarfile.TarInfo) -> Path:
    """The busybox image with its ``etc`` entry replaced by ``etc``."""
    with tarfile.open(busybox_tar) as source, tarfile.open(target, "w") as out:
        for member in source.getmembers():
            if member.name.rstrip("/") == "etc":
                out.addfile(etc)
                if etc.issym():
                    out.addfile(_dir("etc.d", 0o755))
            else:
                out.addfile(member, source.extractfile(member) if member.isfile() else None)
    return target


def _dir(name: str, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, gid
    return info


async def test_a_start_makes_no_file_in_the_containers_layer_or_directory(
    runc_daemon: asyncstart.Daemon, roots: _Roots, busybox_tar: Path, tmp_path: Path
) -> None:
    """The engine's mount points come from the init layer made at create: the container's own
    layer stays empty, /etc keeps the image's owner and mode (as a copy-up would), and an
    image whose /etc is a link keeps it (its mount points resolved inside the root)."""
    link = tarfile.TarInfo("etc")
    link.type, link.linkname = tarfile.SYMTYPE, "etc.d"
    for name, etc in (("etcdir", _dir("etc", 0o750, 7, 8)), ("etclink", link)):
        variant = _busybox_variant(busybox_tar, tmp_path / f"{name}.tar", etc)
        await runc_daemon.image_import(str(variant), repo=name, tag="1")
    show = "stat -c '%a %u:%g' /etc /etc/hosts; cat /etc/hostname"
    cid = await runc_daemon.container_create(
        config={"Image": "etcdir:1", "Cmd": ["sh", "-c", show], "Hostname": "inited"}
    )
    # The files a start writes in the container's directory are there since its create, and
    # the start rewrites them in place (no new inode).
    directory = roots.data / "containers" / cid
    written = ("hostname", "hosts", "resolv.conf", f"{cid}-json.log")
    made = {name: (directory / name).stat() for name in written}
    assert {name: st.st_size for name, st in made.items()} == dict.fromkeys(written, 0)
    assert (directory / f"{cid}-json.log").stat().st_mode & 0o777 == 0o640
    await runc_daemon.container_start(cid)
    assert await runc_daemon.container_wait(cid) == {"StatusCode": 0}
    assert {name: (directory / name).stat().st_ino for name in written} == {
        name: st.st_ino for name, st in made.items()
    }
    assert (directory / "hostname").read_text() == "inited\n"
    out = b"".join([d async for _, d in runc_daemon.container_logs(cid)]).decode()
    assert out.splitlines() == ["750 7:8", "644 0:0", "inited"]
    # While it runs, the host's mount table names its overlay's directories by descriptor:
    # short options, which every runtime invocation reads (and the kernel escapes) again.
    running = await _run(runc_daemon, "sleep", "1000", Image="etcdir:1")
    merged = str(roots.data / "overlay" / running / "merged")
    with open("/proc/self/mountinfo") as info:
        (line,) = [line for line in info if line.split()[4] == merged]
    options = line.split(" - ")[1].split()[2]
    assert "upperdir=/proc/self/fd/" in options and len(options) < 160, options
    await runc_daemon.container_remove(running, force=True)
    assert list((roots.data / "overlay" / cid / "upper").iterdir()) == []
    assert await runc_daemon.container_changes(cid) == []
    show = "readlink /etc; cat /etc/hostname"
    linked = await _run(runc_daemon, "sh", "-c", show, Image="etclink:1", Hostname="linked")
    assert await runc_daemon.container_wait(linked) == {"StatusCode": 0}
    out = b"".join([d async for _, d in runc_daemon.container_logs(linked)]).decode()
    assert out.splitlines() == ["etc.d", "linked"]
    assert not (roots.data / "overlay" / linked / "init" / "etc").exists()
    for container in (cid, linked):
        await runc_daemon.container_remove(container)
    for image in ("etcdir:1", "etclink:1"):
        await runc_daemon.image_remove(image)
    assert_nothing_left(roots)
