#!/usr/bin/env python3
"""Engine cost per start on the fake runtime, in instructions (needs valgrind).

Starts per second on a small shared machine swing by a fifth from one run to the next; the
instructions the engine executes per start do not (a tenth of a percent). This runs the same
workload as ``concurrent_start.py`` (containers created, then started with C in flight, info
logs to a file, records saved) twice under ``valgrind --tool=callgrind``: once with the starts,
once without, and prints the difference per start, every thread of the process counted (not
the record writer, a child process: SQLite's work, not the engine's). Records are not fsynced:
a commit's timing would change how saves are batched, and so the count. Slow (about a minute
a backend); for comparing two versions of the engine, not for a figure in seconds.

    python benchmarks/start_instructions.py --containers 300 --backend both
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import anyio

import asyncstart
from asyncstart.logconfig import configure_logging


async def _child(containers: int, in_flight: int, start: bool, root: str) -> None:
    config = asyncstart.DaemonConfig(
        data_root=f"{root}/data",
        exec_root=f"{root}/exec",
        runtime="fake",
        fsync=False,
        bridge_subnet="10.213.0.0/20",  # (room for 4,094 containers)
    )
    async with asyncstart.open_daemon(config) as daemon:
        ids = [
            await daemon.container_create(config={"Image": "busybox", "Cmd": ["sleep", "infinity"]})
            for _ in range(containers)
        ]
        if start:
            pending = iter(ids)

            async def caller() -> None:
                for container_id in pending:  # (shared: each ID is taken by one caller)
                    await daemon.container_start(container_id)

            async with anyio.create_task_group() as tg:
                for _ in range(min(in_flight, containers)):
                    tg.start_soon(caller, name="caller")
        # Out at once: closing a daemon with its containers running is not what is measured.
        os._exit(0)


def _instructions(backend: str, containers: int, in_flight: int, start: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="asyncstart-bench-") as scratch:
        out = os.path.join(scratch, "callgrind.out")
        argv = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, __file__, "--child", "--backend", backend,
            "--containers", str(containers), "--in-flight", str(in_flight),
            "--root", scratch, *(["--start"] if start else []),
        ]  # fmt: skip
        # (The same hash seed both times: dicts of strings then grow and probe alike.)
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(argv, check=True, env=env, capture_output=True)
        with open(out) as file:
            for line in file:
                if match := re.match(r"(?:summary|totals): (\d+)", line):
                    return int(match.group(1))
    raise RuntimeError("callgrind wrote no total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--backend", default="both", help="asyncio, trio or both")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with open(os.path.join(args.root, "engine.log"), "w") as log:
            configure_logging("info", log)
            anyio.run(
                _child, args.containers, args.in_flight, args.start, args.root,
                backend=args.backend,
            )  # fmt: skip
        return
    if shutil.which("valgrind") is None:
        sys.exit("start_instructions: valgrind is not installed (apt-get install valgrind)")
    for backend in ["asyncio", "trio"] if args.backend == "both" else [args.backend]:
        with_starts = _instructions(backend, args.containers, args.in_flight, start=True)
        without = _instructions(backend, args.containers, args.in_flight, start=False)
        print(
            f"start_instructions backend={backend} containers={args.containers} "
            f"in_flight={args.in_flight}: {(with_starts - without) / args.containers:,.0f} "
            f"instructions per start"
        )


if __name__ == "__main__":
    main()
