#!/usr/bin/env python3
"""Real starts: asyncstart on runc beside bare runc (``run --detach``, and ``create`` +
``start``), same run.

Sequential start latency (start call until the process runs) of a busybox ``sleep`` container,
p50/p90, for asyncstart and for bare runc on a prepared bundle (same rootfs, same spec); then the
throughput of 50 concurrent asyncstart starts. Needs root, runc and a static busybox.

    sudo .venv/bin/python benchmarks/runc_start.py --runs 30 --backend asyncio
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _common import bare_spec, host_as_found, summary_ms

import asyncstart
from asyncstart.images.busybox import build_busybox_tar
from asyncstart.logconfig import configure_logging


def bare_runc(root: Path, spec: dict[str, Any], runs: int, *, two_step: bool) -> list[float]:
    """Time ``runc run --detach`` (``two_step``: ``runc create`` + ``runc start``) of a
    prepared bundle, then clean it up."""
    state = root / "bare-state"
    samples = []
    for i in range(runs):
        bundle = root / f"bare-{two_step}-{i}"
        bundle.mkdir(mode=0o700)
        (bundle / "config.json").write_text(json.dumps(spec))
        name = f"bare-{os.getpid()}-{i}"
        runc = ["runc", "--root", str(state)]
        first = ["create"] if two_step else ["run", "--detach"]
        began = time.perf_counter()
        subprocess.run([*runc, *first, "--bundle", str(bundle), name], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
        if two_step:
            subprocess.run([*runc, "start", name], check=True)
        samples.append(time.perf_counter() - began)
        subprocess.run([*runc, "delete", "--force", name], check=True)
    return samples


async def engine(
    root: Path,
    tar: Path,
    runs: int,
    concurrent: int,
    network: str,
    oci: str,
    monitor: str,
    user_network: bool,
) -> tuple[list[float], float, dict[str, Any], dict[str, list[float]]]:
    config = asyncstart.DaemonConfig(
        data_root=root / "d",
        exec_root=root / "x",
        runtime="runc",
        network=network,
        default_runtime=oci,
        monitor=monitor,
    )
    async with asyncstart.open_daemon(config) as daemon:
        await daemon.image_import(str(tar), repo="busybox")
        host: dict[str, Any] = {}
        if user_network:  # (its bridge and rules made here, not in the first start)
            network_id = await daemon.network_create({"Name": f"bench-{os.getpid()}"})
            host = {"NetworkMode": network_id}
        samples = []
        phases: dict[str, list[float]] = {}
        spec: dict[str, Any] = {}
        for _ in range(runs):
            cid = await daemon.container_create(
                config={"Image": "busybox", "Cmd": ["sleep", "1000"]}, host_config=host
            )
            began = time.perf_counter()
            await daemon.container_start(cid)
            samples.append(time.perf_counter() - began)
            for phase, seconds in daemon.container_start_phases(cid).items():
                phases.setdefault(phase, []).append(seconds)
            if not spec:
                spec = json.loads((root / "x" / cid / "config.json").read_text())
            await daemon.container_remove(cid, force=True)
        ids = [
            await daemon.container_create(
                config={"Image": "busybox", "Cmd": ["sleep", "1000"]}, host_config=host
            )
            for _ in range(concurrent)
        ]
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for cid in ids:
                tg.start_soon(daemon.container_start, cid)
        elapsed = time.perf_counter() - began
        for cid in ids:
            await daemon.container_remove(cid, force=True)
        if user_network:
            await daemon.network_remove(host["NetworkMode"])
    return samples, elapsed, spec, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--network", choices=["bridge", "loopback"], default="bridge")
    parser.add_argument("--oci", choices=["runc", "crun"], default="runc",
                        help="the OCI runtime asyncstart starts with")  # fmt: skip
    parser.add_argument("--monitor", choices=["", "conmon", "none"], default="",
                        help="each container's monitor (default: conmon if installed)")  # fmt: skip
    parser.add_argument("--user-network", action="store_true",
                        help="start on a user-defined network (embedded DNS), not the default "
                        "bridge")  # fmt: skip
    args = parser.parse_args()
    configure_logging("warning")
    with host_as_found(), tempfile.TemporaryDirectory(prefix="asyncstart-runc-bench-") as tmp:
        root = Path(tmp)
        tar = build_busybox_tar(root / "busybox.tar")
        samples, elapsed, spec, phases = anyio.run(
            engine,
            root,
            tar,
            args.runs,
            args.concurrent,
            args.network,
            args.oci,
            args.monitor,
            args.user_network,
            backend=args.backend,
        )
        rootfs = root / "rootfs"
        rootfs.mkdir()
        subprocess.run(["tar", "-xf", str(tar), "-C", str(rootfs)], check=True)
        # The same spec, on the same rootfs: fresh namespaces, the spec's own cgroups path.
        prepared = bare_spec(spec, str(rootfs), ["sleep", "1000"])
        bare = bare_runc(root, prepared, args.runs, two_step=False)
        two_step = bare_runc(root, prepared, args.runs, two_step=True)
    p50 = sorted(samples)[len(samples) // 2]
    bare_p50 = sorted(bare)[len(bare) // 2]
    print(
        f"runc_start backend={args.backend} network={args.network} oci={args.oci} "
        f"monitor={args.monitor or 'default'} "
        f"on={'user-network' if args.user_network else 'default-bridge'} "
        f"asyncstart sequential: {summary_ms(samples)}"
    )
    for phase, seconds in phases.items():
        print(f"runc_start {phase + ' phase:':<30}{summary_ms(seconds)}")
    print(f"runc_start bare runc run --detach:        {summary_ms(bare)}")
    print(f"runc_start bare runc create + start:      {summary_ms(two_step)}")
    two_step_p50 = sorted(two_step)[len(two_step) // 2]
    print(
        f"runc_start asyncstart p50 / bare p50 = {p50 / bare_p50:.2f}x (run --detach), "
        f"{p50 / two_step_p50:.2f}x (create + start)"
    )
    print(
        f"runc_start {args.concurrent} concurrent starts: {elapsed:.2f}s, "
        f"{args.concurrent / elapsed:.1f} starts/s"
    )


if __name__ == "__main__":
    main()
