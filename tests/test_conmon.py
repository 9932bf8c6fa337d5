"""Containers outlive the engine: each runs under conmon, which keeps its output, stdin and exit
code while no engine runs. The engine here is a real daemon process (``python -m asyncstart
daemon``) that the tests kill (SIGKILL) or stop (SIGTERM) while containers print, read and
exit; a second daemon on the same roots must show what really happened.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncstart
from asyncstart import Client
from asyncstart.network.bridge import DEFAULT_BRIDGE
from asyncstart.runtime import conmon as conmon_module
from asyncstart.runtime.conmon import _RUN_DETACHED
from asyncstart.runtime.reaper import InitProcess

from . import test_runc
from .helpers import daemon_process, real_containers
from .test_runc import _Roots, assert_nothing_left, conmons_of, open_clean

pytestmark = real_containers(("needs conmon", shutil.which("conmon") is None))

busybox_tar = test_runc.busybox_tar
roots = test_runc.roots

#: A numbered line every 10 ms, for ever.
CHATTY = "i=0; while :; do echo $i; i=$((i+1)); usleep 10000; done"


def _ender(code: int) -> str:
    """Ends with ``code`` a little after the engine is gone, saying so just before."""
    return f"sleep 2; echo bye; exit {code}"


NO_NETWORK = {"NetworkMode": "none"}
#: The OCI runtimes conmon runs here: runc creates and starts in one call when it can.
OCI_RUNTIMES = ["runc", *(["crun"] if shutil.which("crun") else [])]
#: Exits 7 on SIGTERM.
TRAPS_TERM = 'trap "exit 7" TERM; while :; do usleep 10000; done'


@asynccontextmanager
async def _engine(roots: _Roots, sock: Path) -> AsyncIterator[anyio.abc.Process]:
    """``asyncstart daemon`` as a process of its own, serving on ``sock``."""
    async with daemon_process(roots.data, roots.exec, sock, "--monitor", "conmon") as process:
        yield process


@asynccontextmanager
async def _library(
    roots: _Roots, busybox_tar: Path, **config: Any
) -> AsyncIterator[asyncstart.Daemon]:
    """The engine embedded in this process, containers under conmon, busybox imported."""
    settings = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, runtime="runc", monitor="conmon", **config
    )
    async with open_clean(settings) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")
        yield daemon


def _reap_orphaned_conmons() -> None:
    """conmons whose engine was killed are re-parented to the nearest subreaper, this test
    process: collect those that have ended (never anyone else's)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            name = (entry / "comm").read_text().strip()
            if fields[0] == "Z" and int(fields[1]) == os.getpid() and name == "conmon":
                os.waitpid(int(entry.name), 0)


def _time(text: str) -> float:
    """An RFC 3339 time with up to nine digits of fraction, in seconds."""
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = float("0." + rest) if rest else 0.0
    return dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC).timestamp() + fraction


async def _lines(client: Client, cid: str, **query: Any) -> list[bytes]:
    return [data async for _, data in client.container_logs(cid, **query)]


async def _create(client: Client, cmd: list[str], **extra: Any) -> str:
    config: dict[str, Any] = {"Image": "busybox", "Cmd": cmd}
    host_config: dict[str, Any] = dict(NO_NETWORK)
    host_config.update(extra.pop("host_config", {}))
    config.update(extra)
    return str(await client.container_create(config=config, host_config=host_config))


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_containers_outlive_the_engine(
    tmp_path: Path, busybox_tar: Path, how: signal.Signals
) -> None:
    roots, sock = _Roots(tmp_path), tmp_path / "s.sock"
    async with _engine(roots, sock) as engine:
        async with Client(f"unix://{sock}") as client:
            await client.image_import(busybox_tar, repo="busybox", tag="latest")
            chatty = [await _create(client, ["sh", "-c", CHATTY]) for _ in range(5)]
            on_failure = {"RestartPolicy": {"Name": "on-failure"}}
            enders = {
                0: await _create(client, ["sh", "-c", _ender(0)], host_config=on_failure),
                3: await _create(client, ["sh", "-c", _ender(3)]),
                42: await _create(client, ["sh", "-c", _ender(42)]),
            }
            always = {"RestartPolicy": {"Name": "always"}}
            restarted = await _create(client, ["sh", "-c", _ender(5)], host_config=always)
            cat = await _create(client, ["cat"], OpenStdin=True)
            trap = await _create(client, ["sh", "-c", TRAPS_TERM])
            for cid in [*chatty, *enders.values(), restarted, cat, trap]:
                await client.container_start(cid)
            await anyio.sleep(0.5)
        engine.send_signal(how)
        with anyio.fail_after(30):
            await engine.wait()
    down_at = time.time()
    await anyio.sleep(4)  # the enders end, the chatty ones print ~400 lines each meanwhile
    _reap_orphaned_conmons()

    async with _engine(roots, sock), Client(f"unix://{sock}") as client:
        for cid in chatty:
            state = (await client.container_inspect(cid))["State"]
            assert state["Running"] is True, state
            numbers = [int(line) for line in await _lines(client, cid)]
            # Every line, the ones printed while no engine ran too: no gap.
            assert numbers == list(range(len(numbers))), cid
            assert len(numbers) > 300
        for code, cid in enders.items():
            found = await client.container_inspect(cid)
            state = found["State"]
            assert (state["Status"], state["ExitCode"]) == ("exited", code)
            # on-failure does not restart a clean exit.
            assert found["RestartCount"] == 0
            # FinishedAt is the real exit: just after its last line, long after the engine went.
            logged = await _lines(client, cid, timestamps=True)
            bye_at = _time(logged[-1].split(b" ", 1)[0].decode())
            assert logged[-1].endswith(b" bye\n")
            assert abs(_time(state["FinishedAt"]) - bye_at) < 1.0
            assert _time(state["FinishedAt"]) > down_at
        # One that ended while no engine ran and is to restart "always" is started again.
        with anyio.fail_after(10):
            while (await client.container_inspect(restarted))["RestartCount"] < 1:
                await anyio.sleep(0.1)
        # stdin of an adopted container works: cat echoes what an attached client sends.
        async with client.container_attach(cat, stdin=True) as session:
            await session.send(b"still here\n")
            received = b""
            with anyio.fail_after(10):
                async for _, data in session:
                    received += data
                    if b"still here\n" in received:
                        break
        # Exits after the restart are true too: not 255.
        await client.container_stop(trap, timeout=10)
        assert (await client.container_inspect(trap))["State"]["ExitCode"] == 7
        for cid in [*chatty, *enders.values(), restarted, cat, trap]:
            await client.container_remove(cid, force=True)
    _reap_orphaned_conmons()
    assert_nothing_left(roots)


async def test_start_stop_cycles_leave_nothing(roots: _Roots, busybox_tar: Path) -> None:
    """100 start/stop cycles on the bridge: no conmon, mount, namespace, veth or runtime state
    stays behind, and at most one conmon runs at any time."""
    async with _library(roots, busybox_tar) as daemon:
        cid = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sh", "-c", 'trap "exit 0" TERM; sleep 100 & wait']}
        )
        for cycle in range(100):
            await daemon.container_start(cid)
            assert len(conmons_of(roots.exec)) == 1, cycle
            await daemon.container_stop(cid, timeout=5)
            assert (await daemon.container_inspect(cid))["State"]["ExitCode"] == 0
        await daemon.container_remove(cid)
        ports = subprocess.run(
            ["ip", "-o", "link", "show", "master", DEFAULT_BRIDGE],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        assert ports == "", f"veths left on {DEFAULT_BRIDGE}: {ports}"
    assert_nothing_left(roots)


async def test_a_terminal_container_under_conmon_resizes(roots: _Roots, busybox_tar: Path) -> None:
    """A TTY's output reaches the log through conmon's console, input reaches the process,
    and a resize reaches the terminal (``stty size`` inside sees it)."""
    async with _library(roots, busybox_tar, network="loopback") as daemon:
        script = "read line; stty size; echo got $line"
        cid = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sh", "-c", script], "Tty": True,
                    "OpenStdin": True, "StdinOnce": True},
        )  # fmt: skip
        await daemon.container_start(cid)
        await daemon.container_resize(cid, 33, 101)
        await anyio.sleep(0.2)  # the resize goes through conmon's FIFO, apart from stdin
        async with daemon.container_attach(cid, stdin=True) as session:
            await session.send(b"hello\n")
            with anyio.fail_after(10):
                await daemon.container_wait(cid)
        text = b"".join([data async for _, data in daemon.container_logs(cid)])
        assert b"33 101" in text and b"got hello" in text, text
        await daemon.container_remove(cid)
    assert_nothing_left(roots)


@pytest.mark.parametrize("oci", OCI_RUNTIMES)
async def test_a_failed_create_under_conmon_leaves_nothing(
    roots: _Roots, busybox_tar: Path, oci: str
) -> None:
    async with _library(roots, busybox_tar, network="loopback", default_runtime=oci) as daemon:
        cid = await daemon.container_create(config={"Image": "busybox", "Cmd": ["/nope"]})
        with pytest.raises(asyncstart.errors.InvalidParameter, match="nope"):
            await daemon.container_start(cid)
        assert (await daemon.container_inspect(cid))["State"]["ExitCode"] == 127
        await daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_a_conmon_that_fails_at_once_says_why_and_leaves_nothing(
    roots: _Roots, busybox_tar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """conmon's own early errors (it writes them before it lets go of its streams, and ends
    without a word on the sync pipe) are the start's error."""
    fake = tmp_path / "conmon"
    fake.write_text("#!/bin/sh\necho 'conmon: no such option --sync' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr("asyncstart.wiring.conmon_binary", lambda: str(fake))
    async with _library(roots, busybox_tar, network="loopback") as daemon:
        cid = await daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
        with pytest.raises(asyncstart.errors.DockerError, match="no such option --sync"):
            await daemon.container_start(cid)
        assert (await daemon.container_inspect(cid))["State"]["Status"] == "created"
        await daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_a_conmon_that_cannot_be_watched_is_killed_and_reaped(
    roots: _Roots, busybox_tar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors for the pidfd: the conmon just started (this process's child, known
    to nothing else) is killed and reaped, not left to create the container."""
    async with _library(roots, busybox_tar, network="loopback") as daemon:
        cid = await daemon.container_create(config={"Image": "busybox", "Cmd": ["sleep", "60"]})

        def no_pidfd(self: InitProcess, pid: int) -> None:
            raise OSError(errno.EMFILE, "Too many open files")

        started: list[int] = []
        original = conmon_module.spawn

        def spawn(*args: Any, **kwargs: Any) -> tuple[int, int]:
            pid, output = original(*args, **kwargs)
            started.append(pid)
            return pid, output

        with monkeypatch.context() as patch:
            patch.setattr(InitProcess, "open", no_pidfd)
            patch.setattr("asyncstart.runtime.conmon.spawn", spawn)
            with pytest.raises(asyncstart.errors.DockerError, match="failed to watch conmon"):
                await daemon.container_start(cid)
        assert conmons_of(roots.exec) == []
        # (Its own conmon, by pid: an earlier test's orphan may end meanwhile, a zombie here.)
        (pid,) = started
        assert not _child(pid), "killed and reaped: neither running nor a zombie"
        await daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_a_daemon_closed_mid_start_reaps_the_conmon_it_made(
    roots: _Roots, busybox_tar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon closes while a start waits between create and start: the start's undo
    deletes the container after the runtime has stopped serving, and its conmon (this
    process's child) is still reaped, with no error out of the close."""
    from asyncstart.runtime.conmon import ConmonRuntime

    created = anyio.Event()
    real_start = ConmonRuntime.start

    async def never_starts(self: ConmonRuntime, container_id: str) -> None:
        created.set()
        await anyio.sleep_forever()

    config = asyncstart.DaemonConfig(
        data_root=roots.data, exec_root=roots.exec, runtime="runc", monitor="conmon",
        network="loopback",
    )  # fmt: skip
    monkeypatch.setattr(ConmonRuntime, "start", never_starts)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as callers, asyncstart.open_daemon(config) as daemon:
            await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")
            cid = await daemon.container_create(
                config={"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True}
            )

            async def start() -> None:
                with pytest.raises(asyncstart.errors.Unavailable):  # (shutting down)
                    await daemon.container_start(cid)

            callers.start_soon(start)
            await created.wait()
            [conmon] = conmons_of(roots.exec)
        while Path(f"/proc/{conmon}").exists():
            await anyio.sleep(0.05)
    monkeypatch.setattr(ConmonRuntime, "start", real_start)
    async with open_clean(config) as daemon:
        state = (await daemon.container_inspect(cid))["State"]
        assert (state["Status"], state["Running"]) == ("created", False)
    assert_nothing_left(roots)


async def test_a_busy_engine_does_not_stall_containers(roots: _Roots, busybox_tar: Path) -> None:
    """Output nobody is attached to is not fetched by the engine, so an engine whose event loop
    is busy (here: blocked for 2 s) never holds a container up; conmon logs it all."""
    async with _library(roots, busybox_tar, network="loopback") as daemon:
        script = "head -c 3960000 /dev/zero | tr '\\0' y | fold -w 99; echo; echo done"
        cid = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sh", "-c", script]}
        )
        await daemon.container_start(cid)
        time.sleep(2)  # noqa: ASYNC251 (the engine's loop blocked: nothing runs meanwhile)
        with anyio.fail_after(30):
            await daemon.container_wait(cid)
        state = (await daemon.container_inspect(cid))["State"]
        assert _time(state["FinishedAt"]) - _time(state["StartedAt"]) < 1.5
        lines = [data async for _, data in daemon.container_logs(cid, tail=1)]
        assert lines == [b"done\n"]
        await daemon.container_remove(cid)
    assert_nothing_left(roots)


async def test_attaching_to_a_running_container_connects_then_lets_go(
    roots: _Roots, busybox_tar: Path
) -> None:
    """A client attached to a running container (no stdin) gets its output; after it leaves,
    another gets it again."""
    async with _library(roots, busybox_tar, network="loopback") as daemon:
        cid = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sh", "-c", CHATTY]}
        )
        await daemon.container_start(cid)
        for _ in range(2):
            async with daemon.container_attach(cid) as session:
                with anyio.fail_after(10):
                    async for stream, data in session:
                        assert stream == "stdout" and data.strip().isdigit()
                        break
        await daemon.container_remove(cid, force=True)
    assert_nothing_left(roots)


@pytest.mark.parametrize("oci", OCI_RUNTIMES)
async def test_a_start_nobody_waits_on_and_one_they_do_under_conmon(
    roots: _Roots, busybox_tar: Path, oci: str
) -> None:
    """Unattached, a container under conmon is reported started, then ended with its code, its
    output logged, even when it ends at once (runc creates and starts it in one call). A client
    attached before the start gets the run's output from its first line."""
    script = "echo out; echo err >&2; exit 3"
    async with _library(roots, busybox_tar, network="loopback", default_runtime=oci) as daemon:
        since = time.time() - 1
        alone = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sh", "-c", script]}
        )
        await daemon.container_start(alone)
        with anyio.fail_after(10):
            assert (await daemon.container_wait(alone))["StatusCode"] == 3
        logged = {stream: data async for stream, data in daemon.container_logs(alone)}
        assert logged == {"stdout": b"out\n", "stderr": b"err\n"}
        state = (await daemon.container_inspect(alone))["State"]
        assert (state["Status"], state["ExitCode"], state["Pid"]) == ("exited", 3, 0)
        assert _time(state["FinishedAt"]) >= _time(state["StartedAt"]) > since
        filters = {"container": [alone], "event": ["start", "die"]}
        async with daemon.events(since=since, until=time.time() + 0.5, filters=filters) as events:
            said = [(e["Action"], e["Actor"]["Attributes"].get("exitCode")) async for e in events]
        assert said == [("start", None), ("die", "3")]

        watched = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sh", "-c", script]}
        )
        got: list[tuple[str, bytes]] = []
        async with daemon.container_attach(watched) as session:
            await daemon.container_start(watched)
            with anyio.fail_after(10):
                got = [item async for item in session]
        assert sorted(got) == [("stderr", b"err\n"), ("stdout", b"out\n")]
        assert (await daemon.container_inspect(watched))["State"]["ExitCode"] == 3
        for cid in (alone, watched):
            await daemon.container_remove(cid)
        assert conmons_of(roots.exec) == []
    assert_nothing_left(roots)


@pytest.mark.parametrize(
    "runtime_args",
    [["--root", "/r"], ["--root", "create", "--log", "create"], []],
    ids=["plain", "an-argument-named-create", "none"],
)
def test_the_line_that_turns_create_into_run_detach(runtime_args: list[str]) -> None:
    """conmon's ``<runtime> <runtime args> create <options> <id>`` becomes
    ``<runtime> <runtime args> run --detach <options> <id>``: only the subcommand changes,
    whatever the other arguments say, and each argument stays one argument."""
    tail = ["--bundle", "/b with space", "--pid-file", "create", "the-id"]
    n = str(len(runtime_args) + 2)  # printf's format is one more argument before create
    argv = ["sh", "-c", _RUN_DETACHED, "printf", n, "%s|", *runtime_args, "create", *tail]
    said = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    # (printf repeats its format for each argument: the first, "%s|", is that format.)
    assert said.split("|")[:-1] == [*runtime_args, "run", "--detach", *tail]
    restore = ["sh", "-c", _RUN_DETACHED, "printf", n, "%s|", *runtime_args, "restore", "x"]
    said = subprocess.run(restore, capture_output=True, text=True, check=True).stdout
    assert said.split("|")[:-1] == [*runtime_args, "restore", "x"]


def _child(pid: int) -> bool:
    """``pid`` is this process's child (alive or a zombie)."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]) == os.getpid()
    return False


def _zombie_child(pid: int) -> bool:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] == "Z" and int(fields[1]) == os.getpid()
    return False


async def test_a_later_daemon_in_the_process_reaps_a_conmon_that_ended_meanwhile(
    roots: _Roots, busybox_tar: Path
) -> None:
    """An embedding program closes its daemon while a container runs; the container ends, and
    its conmon (a child of the program since the daemon made it the subreaper) with it. The
    next daemon of the program reports the true exit and reaps that conmon: no zombie."""
    config = asyncstart.DaemonConfig(data_root=roots.data, exec_root=roots.exec,
                                     runtime="runc", monitor="conmon")  # fmt: skip
    async with asyncstart.open_daemon(config) as daemon:
        await daemon.image_import(str(busybox_tar), repo="busybox", tag="latest")
        cid = await daemon.container_create(
            config={"Image": "busybox", "Cmd": ["sh", "-c", "sleep 1; exit 3"]},
            host_config=NO_NETWORK,
        )
        await daemon.container_start(cid)
        [conmon] = conmons_of(roots.exec)
    with anyio.fail_after(20):
        while not _zombie_child(conmon):
            await anyio.sleep(0.05)
    async with open_clean(config) as daemon:
        state = (await daemon.container_inspect(cid))["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 3)
        assert not Path(f"/proc/{conmon}").exists(), "reaped"
    assert_nothing_left(roots)
