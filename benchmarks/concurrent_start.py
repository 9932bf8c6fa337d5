#!/usr/bin/env python3
"""Engine overhead: concurrent starts on the fake runtime (no real process, mount or netns).

Creates N containers, then starts them all with C in flight (C callers, each starting one
container after another: a task and a limiter per start would cost the harness some 40 µs a
start, a tenth of what is measured), and prints starts/s and the start-call latency
percentiles. Records are persisted (fsync on by default) and info-level
logs are written, as in production; what is measured is the engine's own cost per start.

    python benchmarks/concurrent_start.py --containers 1000 --in-flight 100 --backend trio
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import anyio
from _common import summary_ms

import asyncstart
from asyncstart.logconfig import configure_logging


async def run(containers: int, in_flight: int, fsync: bool, root: str) -> tuple[float, list[float]]:
    # The runs before this one in the process left their closed daemon as cyclic garbage
    # (about 30 objects a container): collected now, not by a full collection that would
    # land in this run's starts. (Not just before the starts: that would spare the creates'
    # objects the collections a daemon that runs on would give them.)
    gc.collect()
    config = asyncstart.DaemonConfig(
        data_root=f"{root}/data",
        exec_root=f"{root}/exec",
        runtime="fake",
        fsync=fsync,
        bridge_subnet="10.213.0.0/20",  # room for 4,094 containers (the fake network's IPAM)
    )
    async with asyncstart.open_daemon(config) as daemon:
        ids = [
            await daemon.container_create(config={"Image": "busybox", "Cmd": ["sleep", "infinity"]})
            for _ in range(containers)
        ]
        latencies: list[float] = []
        pending = iter(ids)

        async def caller() -> None:
            for container_id in pending:  # (shared: each ID is taken by one caller)
                began = time.perf_counter()
                await daemon.container_start(container_id)
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(min(in_flight, containers)):
                tg.start_soon(caller, name="caller")  # (named: anyio would derive a name each)
        elapsed = time.perf_counter() - began
        assert daemon.statistics().running == containers
    return elapsed, latencies


def _count_lines(path: str) -> int:
    with open(path, "rb") as file:
        return sum(1 for _ in file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument(
        "--backend",
        default="both",
        help="asyncio, trio, both, or a sequence run in turn in this process (asyncio,trio,asyncio"
        " shows what a trio daemon leaves behind for a later asyncio program)",
    )
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync of records")
    args = parser.parse_args()
    backends = ["asyncio", "trio"] if args.backend == "both" else args.backend.split(",")
    # One start at a time shows the latency of a start without queueing behind the others.
    runs = [(args.containers, args.in_flight), (max(1, args.containers // 5), 1)]
    with tempfile.TemporaryDirectory(prefix="asyncstart-bench-") as logs:
        log_path = os.path.join(logs, "engine.log")
        with open(log_path, "w") as log:
            configure_logging("info", log)
            for backend in backends:
                for containers, in_flight in runs:
                    with tempfile.TemporaryDirectory(prefix="asyncstart-bench-") as root:
                        lines_before = _count_lines(log_path)
                        elapsed, latencies = anyio.run(
                            run, containers, in_flight, not args.no_fsync, root, backend=backend
                        )
                        log.flush()
                        lines = _count_lines(log_path) - lines_before
                    print(
                        f"concurrent_start backend={backend} containers={containers} "
                        f"in_flight={in_flight} fsync={not args.no_fsync} log_lines={lines}: "
                        f"{containers / elapsed:.0f} starts/s, latency {summary_ms(latencies)}"
                    )


if __name__ == "__main__":
    main()
