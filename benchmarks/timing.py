"""Interleaved timing: candidates run in turn (A B A B ...), so slow drift of a shared machine hits all alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def run_blocking(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn``, waiting for every array it returns."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Times every candidate ``repeats`` times in rounds (one call of each per round), after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in candidates.values():
            run_blocking(fn)
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(run_blocking(fn))
    return times


def summary(values: list[float]) -> dict[str, float]:
    """Median and spread (min, max, and the interquartile range when there are 4 values or more)."""
    values = sorted(values)
    out = {"median": statistics.median(values), "min": values[0], "max": values[-1], "n": len(values)}
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        out["iqr"] = q[2] - q[0]
    return out


def ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Per-round ratios ``numerator[i] / denominator[i]`` (same round, adjacent in time), summarised."""
    return summary([a / b for a, b in zip(numerator, denominator, strict=True)])


def fmt(stats: dict[str, float], digits: int = 3) -> str:
    """``median [min, max]`` for a table cell."""
    return f"{stats['median']:.{digits}f} [{stats['min']:.{digits}f}, {stats['max']:.{digits}f}]"
