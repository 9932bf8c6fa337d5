"""The ``asyncstart`` command: the daemon as a process (signals, shutdown, listeners) and the
image helper. The daemon runs on the fake runtime here, on the test's backend."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from asyncstart import Client, errors
from asyncstart.images.busybox import find_static_busybox

pytestmark = pytest.mark.anyio


@pytest.fixture
def short() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="as-", dir="/tmp") as path:
        yield Path(path)


def _daemon_argv(root: Path, backend: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "asyncstart", "daemon", "--backend", backend,
        "--default-runtime", "fake", "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"), "-H", f"unix://{root / 'api.sock'}", *extra,
    ]  # fmt: skip


@asynccontextmanager
async def daemon_process(
    root: Path, backend: str, *extra: str, max_files: int = 0
) -> AsyncIterator[tuple[anyio.abc.Process, list[str]]]:
    """The daemon, once it says ``API listen on``; its stderr lines so far and to come."""
    argv = _daemon_argv(root, backend, *extra)
    if max_files:
        argv = ["sh", "-c", f'ulimit -n {max_files} && exec "$@"', "sh", *argv]
    process = await anyio.open_process(argv, stdin=None)
    assert process.stderr is not None
    lines: list[str] = []
    buffer = b""
    try:
        with anyio.fail_after(20):
            while not any(line.startswith("API listen on") for line in lines):
                chunk = await process.stderr.receive()
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                lines += [line.decode() for line in complete]

        async def drain() -> None:
            nonlocal buffer
            assert process.stderr is not None
            async for data in process.stderr:
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                lines.extend(line.decode() for line in complete)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            yield process, lines
            if process.returncode is None:
                process.terminate()  # drain ends at the daemon's exit
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()


async def test_sigterm_finishes_the_request_in_flight_and_exits_0(
    short: Path, anyio_backend: str
) -> None:
    sock = short / "api.sock"
    async with daemon_process(short, anyio_backend) as (process, lines):
        assert lines[-1] == f"API listen on unix://{sock}"
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        async with Client(f"unix://{sock}") as client:
            await client.container_create(
                "web", {"Image": "busybox", "Cmd": ["sleep", "infinity"], "StopSignal": "WINCH"}
            )
            await client.container_start("web")
            answered: list[str] = []

            async def stop() -> None:
                # The container ignores WINCH: the stop lasts its 1 s timeout, then KILL.
                async with Client(f"unix://{sock}") as other:
                    await other.container_stop("web", timeout=1)
                answered.append("stop")

            began = time.time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop)
                with anyio.fail_after(20):
                    kills = client.events(since=began, filters={"event": ["kill"]})
                    async with contextlib.aclosing(kills):
                        await anext(kills)  # the stop signal went out: the stop is in flight
                    process.send_signal(signal.SIGTERM)
                    assert await process.wait() == 0
        assert answered == ["stop"]
        assert "SIGTERM: shutting down" in lines
        assert not sock.exists()


@pytest.mark.parametrize("abstract", [False, True])
async def test_a_systemd_notify_unit_is_told_ready_and_stopping(
    short: Path, anyio_backend: str, monkeypatch: pytest.MonkeyPatch, abstract: bool
) -> None:
    """dockerd under a ``Type=notify`` unit: ``READY=1`` (sent once the API serves),
    ``STOPPING=1`` at the shutdown, on the unit's ``NOTIFY_SOCKET`` (a path, or ``@``: an
    abstract name); nothing else."""
    name = f"@asyncstart-test-{short.name}" if abstract else str(short / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name[1:] if abstract else name)
        systemd.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        told: list[bytes] = []

        async def heard() -> bytes:
            with anyio.fail_after(20):
                await anyio.wait_readable(systemd)
            return systemd.recv(1024)

        async with daemon_process(short, anyio_backend) as (process, _):
            told.append(await heard())
            async with Client(f"unix://{short / 'api.sock'}") as client:
                assert await client.ping() == "OK"
            process.send_signal(signal.SIGTERM)
            told.append(await heard())
            with anyio.fail_after(20):
                assert await process.wait() == 0
        with pytest.raises(BlockingIOError):
            systemd.recv(1024)
    assert told == [b"READY=1", b"STOPPING=1"]


async def test_shutdown_stop_stops_the_running_containers(short: Path, anyio_backend: str) -> None:
    sock = short / "api.sock"
    async with daemon_process(short, anyio_backend, "--shutdown-stop") as (process, lines):
        async with Client(f"unix://{sock}") as client:
            cid = await client.container_create(
                "web", {"Image": "busybox", "Cmd": ["sleep", "infinity"]}
            )
            await client.container_start("web")
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            assert await process.wait() == 0
    exited = [line for line in lines if "container.exited" in line and cid in line]
    assert len(exited) == 1 and "exit_code=143" in exited[0]


async def test_add_runtime_is_offered_to_containers(short: Path, anyio_backend: str) -> None:
    """dockerd's ``--add-runtime NAME=PATH``: ``info`` lists it, a container may name it."""
    extra = ("--add-runtime", "mine=/usr/local/bin/mine")
    async with daemon_process(short, anyio_backend, *extra) as (process, _):
        async with Client(f"unix://{short / 'api.sock'}") as client:
            info = await client.info()
            assert info["Runtimes"]["mine"] == {"path": "/usr/local/bin/mine"}
            assert info["DefaultRuntime"] == ("crun" if shutil.which("crun") else "runc")
            await client.container_create(
                "web", {"Image": "busybox", "Cmd": ["true"]}, {"Runtime": "mine"}
            )
            with pytest.raises(errors.InvalidParameter, match="unknown or invalid runtime"):
                await client.container_create(
                    "other", {"Image": "busybox", "Cmd": ["true"]}, {"Runtime": "nope"}
                )
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            await process.wait()


def test_add_runtime_wants_name_and_path() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asyncstart", "daemon", "--add-runtime", "nopath"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "expected NAME=PATH" in result.stderr


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_full_file_table_is_waited_out(short: Path, backend: str) -> None:
    # A plain test driving the daemon's process: the daemon's backend is what is under test.
    sock = short / "api.sock"
    argv = ["sh", "-c", 'ulimit -n 64 && exec "$@"', "sh", *_daemon_argv(short, backend)]
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None
        try:
            for line in process.stderr:
                if line.startswith("API listen on"):
                    break
            # More connections than the daemon may have files: accept waits, never dies.
            held = []
            for _ in range(100):
                held.append(socket.socket(socket.AF_UNIX))
                held[-1].connect(str(sock))
            for line in process.stderr:  # the daemon's own report
                if "api.accept_failed" in line:
                    break
            for connection in held:
                connection.close()
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(20)
                probe.connect(str(sock))
                probe.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                assert probe.recv(100).startswith(b"HTTP/1.1 200 OK")
            assert process.poll() is None
        finally:
            process.terminate()
            rest = process.communicate(timeout=30)[1]  # read to the end: its last words too
    assert process.returncode == 0, rest


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_second_daemon_on_the_same_roots_is_refused(short: Path, backend: str) -> None:
    first = subprocess.Popen(_daemon_argv(short, backend), stderr=subprocess.PIPE, text=True)
    assert first.stderr is not None
    try:
        for line in first.stderr:
            if line.startswith("API listen on"):
                break
        other = short / "other.sock"
        argv = [*_daemon_argv(short, backend)[:-1], f"unix://{other}"]
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert second.returncode == 1
    assert "another daemon is running on" in second.stderr
    assert "Traceback" not in second.stderr
    assert not other.exists()
    assert first.returncode == 0


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("tcp://127.0.0.1:2375", "pass --insecure-tcp"),
        ("tcp://0.0.0.0:2375", "only loopback"),
        ("http://x", "invalid host"),
    ],
)
def test_tcp_and_unknown_listeners_are_refused(short: Path, host: str, message: str) -> None:
    extra = ["--insecure-tcp"] if "0.0.0.0" in host else []
    argv = [*_daemon_argv(short, "asyncio")[:-2], *extra, "-H", host]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (short / "data").exists()


@pytest.mark.skipif(find_static_busybox() is None, reason="needs a static busybox")
def test_build_busybox_writes_the_image_tarball(tmp_path: Path) -> None:
    target = tmp_path / "bb.tar"
    result = subprocess.run(
        [sys.executable, "-m", "asyncstart", "image", "build-busybox", "-o", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert str(target) in result.stdout
    with tarfile.open(target) as archive:
        names = set(archive.getnames())
        assert {"bin/busybox", "bin/sh", "bin/cat", "etc/passwd"} <= names
