"""A daemon leaves the process's asyncio as it found it: each case in a fresh interpreter, since
the event-loop policy and asyncio's loop getters are process-wide."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

_PRELUDE = """
import asyncio, json, sys, threading
import anyio, asyncstart

async def daemon(root, n=0):
    config = asyncstart.DaemonConfig(data_root=f"{root}/d{n}", exec_root=f"{root}/x{n}",
                                     runtime="fake")
    async with asyncstart.open_daemon(config) as d:
        cid = await d.container_create(f"c{n}", {"Image": "busybox", "Cmd": ["sleep", "infinity"]})
        await d.container_start(cid)
        return (await d.container_inspect(cid))["State"]["Status"]

async def loop_name():
    return type(asyncio.get_running_loop()).__name__

def asyncio_state():
    return {
        "loop": asyncio.run(loop_name()),
        "policy": type(asyncio.get_event_loop_policy()).__name__,
        "get_running_loop": asyncio.get_running_loop is ORIGINAL[0],
        "new_event_loop": asyncio.new_event_loop is ORIGINAL[1],
        "current_task": asyncio.current_task is ORIGINAL[2],
        "trio_asyncio_loaded": "trio_asyncio" in sys.modules,
    }

ORIGINAL = (asyncio.get_running_loop, asyncio.new_event_loop, asyncio.current_task)
BEFORE = asyncio_state()
"""

_STANDARD = {
    "loop": "_UnixSelectorEventLoop",
    "policy": "_UnixDefaultEventLoopPolicy",
    "get_running_loop": True,
    "new_event_loop": True,
    "current_task": True,
    "trio_asyncio_loaded": False,
}


def _run(tmp_path: Path, body: str) -> dict[str, Any]:
    script = _PRELUDE + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return out


def test_after_a_trio_daemon_asyncio_run_gets_the_standard_loop_again(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        status = anyio.run(daemon, sys.argv[1], backend="trio")
        print(json.dumps({"status": status, "before": BEFORE, "after": asyncio_state()}))
        """,
    )
    assert out["status"] == "running"
    assert out["before"] == out["after"] == _STANDARD


def test_a_daemon_under_asyncio_installs_nothing_of_trios(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        status = anyio.run(daemon, sys.argv[1], backend="asyncio")
        print(json.dumps({"status": status, "after": asyncio_state()}))
        """,
    )
    assert out["status"] == "running"
    assert out["after"] == _STANDARD


def test_trio_daemons_in_turn_and_side_by_side_each_get_a_working_loop(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        import trio
        first = anyio.run(daemon, sys.argv[1], 1, backend="trio")
        middle = asyncio_state()

        async def two(root):
            statuses = []
            async def one(n):
                statuses.append(await daemon(root, n))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, 2)
                nursery.start_soon(one, 3)
            return statuses

        # two daemons in one trio run, and one more in another thread at the same time
        threaded = []
        worker = threading.Thread(target=lambda: threaded.append(
            anyio.run(daemon, sys.argv[1], 4, backend="trio")))
        worker.start()
        both = trio.run(two, sys.argv[1])
        worker.join()
        print(json.dumps({"statuses": [first, *both, *threaded], "middle": middle,
                          "after": asyncio_state()}))
        """,
    )
    assert out["statuses"] == ["running"] * 4
    assert out["middle"] == out["after"] == _STANDARD


def test_a_program_that_imported_trio_asyncio_keeps_it(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        import trio_asyncio
        installed = asyncio_state()
        status = anyio.run(daemon, sys.argv[1], backend="trio")
        after = asyncio_state()
        print(json.dumps({"status": status, "installed": installed, "after": after,
                          "same_module": sys.modules["trio_asyncio"] is trio_asyncio}))
        """,
    )
    assert out["status"] == "running"
    assert out["after"] == out["installed"]
    assert out["after"]["loop"] == "SyncTrioEventLoop"
    assert out["same_module"]


def test_a_program_importing_trio_asyncio_after_a_daemon_gets_it_whole(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        first = anyio.run(daemon, sys.argv[1], 1, backend="trio")
        import trio_asyncio
        installed = asyncio_state()
        second = anyio.run(daemon, sys.argv[1], 2, backend="trio")
        print(json.dumps({"statuses": [first, second], "installed": installed,
                          "after": asyncio_state()}))
        """,
    )
    assert out["statuses"] == ["running", "running"]
    assert out["installed"]["loop"] == "SyncTrioEventLoop"
    assert out["after"] == out["installed"]


def test_importing_asyncstart_loads_no_netlink_trio_or_trio_asyncio() -> None:
    # An embedder that never starts a bridge-networked container pays for none of them, and
    # an asyncio program does not load trio (httpcore, imported, would load it).
    result = subprocess.run(
        [sys.executable, "-c", "import sys, asyncstart; print(sorted(m for m in "
         "('pyroute2', 'trio', 'trio_asyncio', 'httpcore') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "[]"
