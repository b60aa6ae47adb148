"""Timing for ``edgempir bench`` (device side, numpy only): latency percentiles, calls
timed side by side, and the soak.

Latency of the ensemble and of the baseline member are taken in the same process,
alternating blocks of calls, so clock boosts and thermal drift hit both equally and the
ensemble's overhead ratio compares like with like.
"""
from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import numpy as np

from edgempir.targets.device.memory import rss_bytes

MIN_REPEATS = 5                   # even under the time cap, a percentile needs a few samples
SOAK_LATENCY_DRIFT_FLAG = 0.10    # p50 of the last soak window vs the first: +-10 %
SOAK_RSS_GROWTH_FLAG = 8 << 20    # bytes of RSS growth over a soak worth a warning


# --------------------------------------------------------------------------- progress
Progress = Callable[[str, int], ContextManager[Callable[[int], None]]]


@contextlib.contextmanager
def no_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    def ignore(n: int = 1) -> None:
        return None

    yield ignore


# --------------------------------------------------------------------------- latency
def latency_stats(seconds: np.ndarray | list[float], batch_size: int) -> dict:
    """Percentiles in milliseconds and single-stream throughput in images per second."""
    s = np.asarray(seconds, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no latency samples")
    ms = s * 1e3
    mean = float(ms.mean())
    return {
        "batch_size": int(batch_size),
        "repeats": int(s.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "mean_ms": mean,
        "throughput_img_s": float(batch_size / (mean / 1e3)) if mean > 0 else None,
    }


def time_calls(fn: Callable[[], Any], repeats: int, time_cap_s: float | None = None
               ) -> list[float]:
    """Wall time of ``repeats`` calls of ``fn`` (fewer if ``time_cap_s`` runs out first)."""
    out: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) * 1e-9)
        if time_cap_s is not None and len(out) >= MIN_REPEATS and \
                time.perf_counter() - start > time_cap_s:
            break
    return out


def compare_latency(runners: dict[str, Callable[[np.ndarray], Any]], inputs: np.ndarray,
                    batch_sizes: tuple[int, ...], warmup: int, repeats: int, time_cap_s: float,
                    progress: Progress = no_progress, block: int = 10) -> list[dict]:
    """Latency of each runner at each batch size, runners alternating in blocks of calls.

    Returns one row per batch size: ``{"batch_size", <runner name>: stats, ...}``.
    """
    rows = []
    total = len(batch_sizes) * len(runners)
    with progress("latency", total) as tick:
        for b in batch_sizes:
            x = batch_of(inputs, b)
            samples: dict[str, list[float]] = {name: [] for name in runners}
            for run in runners.values():
                for _ in range(warmup):
                    run(x)
            deadline = time.perf_counter() + time_cap_s * len(runners)
            while True:
                for name, run in runners.items():
                    left = repeats - len(samples[name])
                    if left > 0:
                        samples[name] += time_calls(functools.partial(run, x), min(block, left))
                done = all(len(v) >= repeats for v in samples.values())
                timed_out = time.perf_counter() > deadline and \
                    all(len(v) >= MIN_REPEATS for v in samples.values())
                if done or timed_out:
                    break
            row: dict[str, Any] = {"batch_size": int(b)}
            for name in runners:
                row[name] = latency_stats(samples[name], b)
                tick(1)
            rows.append(row)
    return rows


def batch_of(inputs: np.ndarray, b: int) -> np.ndarray:
    """``b`` real images (repeated when the set is smaller), contiguous float32."""
    idx = np.arange(b) % len(inputs)
    return np.ascontiguousarray(inputs[idx], dtype=np.float32)


# --------------------------------------------------------------------------- soak
def soak(run: Callable[[np.ndarray], Any], x: np.ndarray, duration_s: float,
         window_s: float | None = None, progress: Progress = no_progress) -> dict:
    """Run continuously for ``duration_s``; latency percentiles and RSS per time window."""
    window_s = window_s or max(1.0, duration_s / 12.0)
    n_windows = max(1, round(duration_s / window_s))
    windows = []
    start = time.perf_counter()
    with progress("soak", n_windows) as tick:
        for w in range(n_windows):
            end = start + (w + 1) * window_s
            samples = []
            while True:
                t0 = time.perf_counter_ns()
                run(x)
                samples.append((time.perf_counter_ns() - t0) * 1e-9)
                if time.perf_counter() >= end:
                    break
            stats = latency_stats(samples, len(x))
            windows.append({"t_s": round(time.perf_counter() - start, 3),
                            "calls": stats["repeats"], "p50_ms": stats["p50_ms"],
                            "p99_ms": stats["p99_ms"], "max_ms": stats["max_ms"],
                            "rss_bytes": rss_bytes()})
            tick(1)
    first, last = windows[0], windows[-1]
    t = np.array([w["t_s"] for w in windows])
    rss = np.array([w["rss_bytes"] for w in windows], dtype=np.float64)
    slope = float(np.polyfit(t, rss, 1)[0] * 60.0) if len(windows) >= 3 else None
    drift = last["p50_ms"] / first["p50_ms"] - 1.0 if first["p50_ms"] > 0 else None
    growth = int(last["rss_bytes"] - first["rss_bytes"])
    return {
        "duration_s": round(time.perf_counter() - start, 3),
        "batch_size": len(x),
        "window_s": window_s,
        "windows": windows,
        "latency_drift": drift,
        "latency_drift_flag": bool(drift is not None and abs(drift) > SOAK_LATENCY_DRIFT_FLAG),
        "rss_growth_bytes": growth,
        "rss_growth_bytes_per_min": slope,
        "rss_growth_flag": bool(growth > SOAK_RSS_GROWTH_FLAG),
    }
