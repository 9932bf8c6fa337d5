"""Shared by the benchmarks: percentiles, a result line, bare runc's spec, and the host left
as it was found."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
from collections.abc import Iterator
from typing import Any

import anyio

from asyncstart.network.bridge import DEFAULT_BRIDGE
from asyncstart.network.firewall import TABLE, Firewall


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def summary_ms(samples: list[float]) -> str:
    return (
        f"p50={percentile(samples, 50) * 1000:.3f}ms "
        f"p90={percentile(samples, 90) * 1000:.3f}ms "
        f"p99={percentile(samples, 99) * 1000:.3f}ms "
        f"mean={statistics.fmean(samples) * 1000:.3f}ms"
    )


def bare_spec(
    spec: dict[str, Any], rootfs: str, args: list[str], cgroups_path: str | None = None
) -> dict[str, Any]:
    """asyncstart's OCI spec for bare runc: the same process (running ``args``), on ``rootfs``
    read-only, no bind mounts (they point at per-container files), fresh namespaces (no paths:
    bare runc has no network to set up); ``cgroups_path`` if given, else the spec's own."""
    bare: dict[str, Any] = json.loads(json.dumps(spec))
    bare["root"] = {"path": rootfs, "readonly": True}
    bare["process"]["args"] = list(args)
    bare["mounts"] = [m for m in bare["mounts"] if m["type"] != "bind"]
    bare["linux"]["namespaces"] = [{"type": n["type"]} for n in bare["linux"]["namespaces"]]
    if cgroups_path is not None:
        bare["linux"]["cgroupsPath"] = cgroups_path
    return bare


def _firewall_table() -> bool:
    listed = subprocess.run(["nft", "list", "table", "ip", TABLE], capture_output=True,
                            check=False)  # fmt: skip
    return listed.returncode == 0


@contextlib.contextmanager
def host_as_found(own_bridge: tuple[str, str] | None = None) -> Iterator[None]:
    """A daemon leaves its default bridge and asyncstart's firewall table behind, as dockerd
    leaves docker0 and its rules; a benchmark does not. At the end: ``own_bridge`` (name,
    subnet: one the benchmark chose for itself) and its rules go; the default bridge and the
    table go if they were not there before (never one that was: a host's daemon may use it)."""
    if os.geteuid() != 0:
        yield
        return
    nft = shutil.which("nft") is not None
    had_default = os.path.exists(f"/sys/class/net/{DEFAULT_BRIDGE}")
    had_table = nft and _firewall_table()
    try:
        yield
    finally:
        bridges = [own_bridge[0]] if own_bridge else []
        if not had_default:
            bridges.append(DEFAULT_BRIDGE)
        for name in bridges:
            if os.path.exists(f"/sys/class/net/{name}"):
                subprocess.run(["ip", "link", "del", name], check=False)
        if nft and own_bridge and had_table:
            anyio.run(Firewall(*own_bridge).remove)  # (the table stays: it was there)
        if nft and not had_table and _firewall_table():
            subprocess.run(["nft", "delete", "table", "ip", TABLE], check=False)
