"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

import asyncstart
from asyncstart import Daemon, errors
from asyncstart.images.busybox import missing_for_real_containers


def real_containers(*extra: tuple[str, bool]) -> list[pytest.MarkDecorator]:
    """``pytestmark`` of a module of real-container tests: root, runc and a static busybox (and
    any ``(reason, missing)`` given). Skipped where something is missing — but an error in CI,
    which is root and installs them: a skip there would hide that nothing real was tested."""
    missing = missing_for_real_containers() + [reason for reason, absent in extra if absent]
    if missing and os.environ.get("CI") == "true":
        raise RuntimeError(f"real-container tests cannot run in CI: {', '.join(missing)}")
    return [
        pytest.mark.anyio,
        pytest.mark.root,
        pytest.mark.skipif(bool(missing), reason=", ".join(missing)),
    ]


async def create(daemon: Daemon, name: str | None = None, *cmd: str, **host: Any) -> str:
    config: dict[str, Any] = {"Image": "busybox", "Cmd": list(cmd or ("sleep", "infinity"))}
    return await daemon.container_create(name=name, config=config, host_config=host)


async def next_action(
    events: MemoryObjectReceiveStream[dict[str, Any]], action: str
) -> dict[str, Any]:
    """The next event with this action (skipping others); waits on the stream, never sleeps."""
    async for event in events:
        if event["Action"] == action:
            return event
    raise AssertionError(f"event stream ended before {action!r}")


def actions(events: MemoryObjectReceiveStream[dict[str, Any]]) -> list[str]:
    """The container events already delivered, without waiting."""
    seen = []
    while True:
        try:
            event = events.receive_nowait()
            if event["Type"] == "container":
                seen.append(event["Action"])
        except anyio.WouldBlock:
            return seen


@asynccontextmanager
async def open_clean(
    config: asyncstart.DaemonConfig, **drivers: Any
) -> AsyncIterator[asyncstart.Daemon]:
    """A daemon that force-removes every container it has when the block ends, even when a
    test fails half-way: the machine stays clean."""
    async with asyncstart.open_daemon(config, **drivers) as daemon:
        try:
            yield daemon
        finally:
            with anyio.CancelScope(shield=True):
                for row in await daemon.containers_list(all=True):
                    with contextlib.suppress(errors.DockerError):
                        await daemon.container_remove(row["Id"], force=True)


def remove_bridge(name: str) -> None:
    """Remove a test's own bridge and its network's rules in asyncstart's firewall table (both
    stay with a network otherwise, as docker0 and its rules do)."""
    import json
    import subprocess

    subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
    for chain in ("forward", "postrouting"):
        listed = subprocess.run(
            ["nft", "-j", "-a", "list", "chain", "ip", "asyncstart", chain],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if listed.returncode != 0:
            continue
        for item in json.loads(listed.stdout)["nftables"]:
            rule = item.get("rule", {})
            if rule.get("comment") == f"asyncstart:{name}":
                subprocess.run(
                    ["nft", "delete", "rule", "ip", "asyncstart", chain, "handle",
                     str(rule["handle"])],
                    check=False, capture_output=True,
                )  # fmt: skip
    subprocess.run(
        ["nft", "delete", "element", "ip", "asyncstart", "bridges", f'{{ "{name}" }}'],
        check=False, capture_output=True,
    )  # fmt: skip


def user_bridges() -> set[str]:
    """The bridges of user-defined networks on the host (``as-<id>``)."""
    import os

    return {name for name in os.listdir("/sys/class/net") if name.startswith("as-")}


@asynccontextmanager
async def daemon_process(
    data_root: Any, exec_root: Any, sock: Any, *flags: str, prefix: tuple[str, ...] = ()
) -> AsyncIterator[anyio.abc.Process]:
    """``asyncstart daemon`` as a process of its own (run through ``prefix``, e.g. nsenter),
    serving on ``sock`` once it says so; stopped with SIGTERM when the block ends."""
    import signal
    import subprocess
    import sys

    argv = [
        *prefix, sys.executable, "-m", "asyncstart", "daemon",
        "--data-root", str(data_root), "--exec-root", str(exec_root), "-H", f"unix://{sock}",
        *flags,
    ]  # fmt: skip
    process = await anyio.open_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        assert process.stderr is not None
        seen = b""
        with anyio.fail_after(30):
            while b"API listen on" not in seen:
                seen += await process.stderr.receive()
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await process.wait()


def lose_record(data_root: Any, container_id: str) -> None:
    """A container's record disappears while the daemon is down (a removal that crashed half
    way): its row in the records database and its directory."""
    import shutil
    import sqlite3

    root = Path(data_root)
    with contextlib.closing(sqlite3.connect(root / "containers.db")) as database, database:
        database.execute("DELETE FROM records WHERE id = ?", (container_id,))
    shutil.rmtree(root / "containers" / container_id)


def tar_of(*members: tuple[str, bytes]) -> bytes:
    """An uncompressed tar of regular files: (name, content) each."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


#: ``FS_IOC_GETFLAGS``, ``FS_IOC_SETFLAGS``; ``chattr +T``, ``chattr +d``.
_GETFLAGS, _SETFLAGS = 0x80086601, 0x40086602
TOPDIR_FL, NODUMP_FL = 0x00020000, 0x00000040


def file_flags(path: Path) -> int | None:
    """A directory's ext2/3/4 flags (``lsattr -d``); None where its file system has none."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buffer = bytearray(4)
        fcntl.ioctl(fd, _GETFLAGS, buffer)
    except OSError:
        return None
    finally:
        os.close(fd)
    return int.from_bytes(buffer, "little")


def set_file_flags(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, _SETFLAGS, flags.to_bytes(4, "little"))
    finally:
        os.close(fd)


def spread_mark(path: Path) -> bool:
    """Whether a directory is marked as a top of hierarchies (``chattr +T``)."""
    return bool((file_flags(path) or 0) & TOPDIR_FL)


def skip_unless_markable(directory: Path) -> None:
    """Skip unless a directory made in ``directory`` takes the TOPDIR mark (ext2/3/4: the
    ioctl itself tried on a probe). Whether the engine marks it also depends on the journal
    (``fsdirs.walks_recently_freed``): tests of who marks what pretend there is none."""
    probe = directory / "spread-probe"
    probe.mkdir(parents=True)
    try:
        flags = file_flags(probe)
        if flags is None:
            pytest.skip("this file system keeps no inode flags")
        try:
            set_file_flags(probe, flags | TOPDIR_FL)
        except OSError:
            pytest.skip("this file system takes no TOPDIR mark")
    finally:
        probe.rmdir()


def without_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's directories are marked as on an ext4 without a journal, whatever this
    host's (the test directory's file system must take the mark: :func:`skip_unless_markable`)."""
    from asyncstart import fsdirs

    monkeypatch.setattr(fsdirs, "walks_recently_freed", lambda fd: True)
