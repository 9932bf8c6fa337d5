"""The ``asyncstart`` command: ``asyncstart demo`` starts containers and shows where time goes."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from . import DaemonConfig, open_daemon
from .images.busybox import build_busybox_tar, find_static_busybox
from .logs import configure_logging

PHASES = ("mounting", "networking", "spec-ready", "running")


def _choose_runtime(requested: str) -> str:
    if requested != "auto":
        return requested
    if os.geteuid() == 0 and shutil.which("runc") and find_static_busybox():
        return "runc"
    print("not root, or no runc/static busybox: running on the fake runtime", file=sys.stderr)
    return "fake"


async def _demo(args: argparse.Namespace) -> int:
    runtime = _choose_runtime(args.runtime)
    with tempfile.TemporaryDirectory(prefix="asyncstart-demo-") as root:
        config = DaemonConfig(
            data_root=args.data_root or f"{root}/data",
            exec_root=args.exec_root or f"{root}/exec",
            runtime=runtime,
        )
        async with open_daemon(config) as daemon:
            if runtime == "runc":
                tar = build_busybox_tar(Path(root) / "busybox.tar")
                await daemon.image_import(str(tar), repo="busybox", tag="latest")
            ids = [
                await daemon.container_create(
                    config={"Image": "busybox", "Cmd": ["sleep", "infinity"]}
                )
                for _ in range(args.containers)
            ]
            totals: list[float] = []
            done = 0

            async def start(container_id: str) -> None:
                nonlocal done
                began = time.perf_counter()
                await daemon.container_start(container_id)
                totals.append(time.perf_counter() - began)
                done += 1
                width = 40
                filled = width * done // len(ids)
                if filled != width * (done - 1) // len(ids) or done == len(ids):
                    bar = "#" * filled + "." * (width - filled)
                    print(f"\rstarting [{bar}] {done}/{len(ids)}", end="", file=sys.stderr)

            began = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for container_id in ids:
                    tg.start_soon(start, container_id)
            elapsed = time.perf_counter() - began
            print(file=sys.stderr)
            phases: dict[str, list[float]] = {p: [] for p in PHASES}
            for container_id in ids:
                for phase, seconds in daemon.container_start_phases(container_id).items():
                    phases[phase].append(seconds)
            rows: list[tuple[str, Any, Any]] = [
                (phase, statistics.median(v) * 1000, max(v) * 1000)
                for phase, v in phases.items()
                if v
            ]
            rows.append(("start call", statistics.median(totals) * 1000, max(totals) * 1000))
            print(f"{'phase':<12} {'p50 ms':>9} {'max ms':>9}")
            for name, p50, worst in rows:
                print(f"{name:<12} {p50:>9.3f} {worst:>9.3f}")
            stats = daemon.statistics()
            print(
                f"{stats.running} of {len(ids)} containers running on the {config.runtime} "
                f"runtime; {len(ids) / elapsed:.0f} starts/s"
            )
            for container_id in ids:
                await daemon.container_remove(container_id, force=True)
            return 0 if stats.running == len(ids) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asyncstart", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start containers concurrently, show per-phase latency")
    demo.add_argument("-n", "--containers", type=int, default=100)
    demo.add_argument("--runtime", default="auto", choices=["auto", "runc", "fake"])
    demo.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    demo.add_argument("--data-root")
    demo.add_argument("--exec-root")
    demo.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    result: int = anyio.run(_demo, args, backend=args.backend)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
