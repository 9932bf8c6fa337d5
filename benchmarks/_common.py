"""Shared by the benchmarks: percentiles, a result line, bare runc's spec."""

from __future__ import annotations

import json
import statistics
from typing import Any


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
