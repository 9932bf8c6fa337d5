"""Shared by the benchmarks: percentiles and a result line."""

from __future__ import annotations

import statistics


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
