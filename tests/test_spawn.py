"""Helper processes run to their end by pidfd: output, status, cancellation, no zombie."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from asyncstart.runtime.spawn import read_output, run_process, spawn

pytestmark = pytest.mark.anyio


def _children() -> set[int]:
    """This process's children, zombies included."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == os.getpid():
                found.add(int(entry))
    return found


async def test_output_and_status_and_a_large_output() -> None:
    before = _children()
    script = "import sys; sys.stdout.write('x' * 300000); sys.stderr.write('err'); sys.exit(3)"
    result = await run_process([sys.executable, "-c", script])
    assert (result.returncode, len(result.stdout), result.stderr) == (3, 300000, b"err")
    killed = await run_process([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
    assert killed.returncode == -9
    assert _children() == before, "every child reaped"


async def test_a_child_left_behind_with_the_streams_does_not_hold_the_run() -> None:
    with anyio.fail_after(10):
        result = await run_process(["sh", "-c", "sleep 60 & echo $!; echo done >&2"])
    orphan = int(result.stdout)
    os.kill(orphan, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # re-parented here if this is a subreaper
        os.waitpid(orphan, 0)  # noqa: ASYNC222 (killed: it ends at once)
    assert (result.returncode, result.stderr) == (0, b"done\n")


async def test_no_descriptor_is_left_open_whatever_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    before = len(os.listdir("/proc/self/fd"))
    await run_process(["sh", "-c", "echo out; echo err >&2"])
    with anyio.move_on_after(0.3):
        await run_process(["sleep", "30"])
    with pytest.raises(FileNotFoundError):
        await run_process(["/nonexistent/runc"])
    real = os.memfd_create
    made: list[int] = []

    def second_fails(name: str, flags: int = 0) -> int:
        if made:
            raise OSError(errno.EMFILE, "Too many open files")
        made.append(real(name, flags))
        return made[-1]

    monkeypatch.setattr(os, "memfd_create", second_fails)
    with pytest.raises(OSError, match="Too many open files"):
        await run_process(["true"])
    assert len(os.listdir("/proc/self/fd")) == before


async def test_given_descriptors_are_the_childs_streams(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with target.open("wb") as file:
        result = await run_process(["sh", "-c", "echo to-file; echo err >&2"], stdout=file.fileno())
    assert target.read_bytes() == b"to-file\n"
    assert (result.stdout, result.stderr) == (b"", b"err\n")


async def test_a_cancelled_run_kills_and_reaps_the_process() -> None:
    before = _children()
    with anyio.move_on_after(0.3):
        await run_process(["sleep", "30"])
    assert _children() == before


async def test_a_missing_program_is_an_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        await run_process(["/nonexistent/runc", "state", "x"])


def test_a_spawned_child_is_reaped_by_its_owner_alone() -> None:
    """A child left running (conmon) is its owner's to reap by pidfd: neither the collection
    of the Popen that started it nor a later Popen's polling of those it keeps reaps it."""
    read, write = os.pipe2(os.O_CLOEXEC)
    kept, stray = os.pipe()  # inheritable, as a program's own may be: not for the child
    os.set_inheritable(stray, True)
    script = (
        'echo said; [ -e /proc/self/fd/"$1" ] && echo leaked >&2; '
        'echo up > /proc/self/fd/"$0"; exit 7'
    )
    try:
        pid, output = spawn(["sh", "-c", script, str(write), str(stray)], pass_fds=(write,))
        pidfd = os.pidfd_open(pid)
    finally:
        for fd in (write, kept, stray):
            os.close(fd)
    try:
        assert os.read(read, 10) == b"up\n", "the descriptor passed"
        assert select.select([pidfd], [], [], 10)[0], "it ended"
        gc.collect()
        subprocess.run(["true"], check=True)  # (a Popen polls the children it keeps)
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        assert result is not None and result.si_status == 7
    finally:
        os.close(pidfd)
        os.close(read)
    assert read_output(output) == b"said\n", "its output, and no stray descriptor"
