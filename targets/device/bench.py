"""``edgempir bench``: speed, memory, accuracy and black-box robustness of a deployed bundle.

Device side: numpy, psutil and the bundle's runtime (ONNX Runtime or TensorRT) only. No
torch, no onnx package; Python 3.10 syntax. docs/BENCH.md documents what is measured and
every field of the JSON report (``edgempir.targets.device.report.SCHEMA_SPEC`` is the same schema,
checked by :func:`~edgempir.targets.device.report.validate_report`). The machine description lives
in ``machine.py``, the peak-RSS child in ``memory.py``, schema and table in ``report.py``.

Why the measurements are made the way they are:
- latency of the ensemble and of the full-precision member alone are taken in the same
  process, alternating blocks of calls, so clock boosts and thermal drift hit both equally
  and the ensemble's overhead ratio compares like with like;
- peak RSS is a per-process high-water mark, so each model is loaded alone in a fresh child
  process (``python -m edgempir.targets.device.bench memory-worker ...``): measured in this process
  the ensemble's peak would hide the fp32 member's;
- accuracy is measured with the engine's own decision (the vote inside the graph) on the
  exact sets the host evaluated before export, so any difference is drift caused by export
  or by the device's runtime, not by sampling.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgempir import provenance
from edgempir.contract import ACCEPTED
from edgempir.errors import BundleError
from edgempir.targets.device import early_exit as EE
from edgempir.targets.device.machine import busy, machine_info
from edgempir.targets.device.memory import MemoryProbeError, measure_memory, rss_bytes
from edgempir.targets.device.report import SCHEMA, SCHEMA_VERSION, format_report, validate_report
from edgempir.targets.device.report import jsonable as _jsonable
from edgempir.targets.device.report import pct as _pct
from edgempir.targets.device.runtime import check_runtime_present
from edgempir.vote import member_ran

__all__ = ["BenchConfig", "check_runtime_present", "format_report", "run_bench",
           "validate_report"]
DRIFT_THRESHOLD_POINTS = 0.5      # DESIGN.md: host vs device accuracy must agree within this
SOAK_LATENCY_DRIFT_FLAG = 0.10    # p50 of the last soak window vs the first: +-10 %
SOAK_RSS_GROWTH_FLAG = 8 << 20    # bytes of RSS growth over a soak worth a warning
MIN_REPEATS = 5                   # even under the time cap, a percentile needs a few samples
EVAL_SETS = ("clean", "adv-adaptive")


@dataclass
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    warmup: int = 10              # calls per model and batch size before timing
    repeats: int = 200            # timed calls per model and batch size (at most)
    time_cap_s: float = 2.0       # seconds of timed calls per model and batch size (at most)
    threads: int | None = None    # None: the bundle profile's threads
    n: int | None = None          # images per evaluation set; None: the whole set
    square_queries: int = 300
    square_n: int = 100
    square_p_init: float = 0.8    # AutoAttack's setting for L-inf
    duration_s: float = 0.0       # soak length; 0: no soak
    memory: bool = True           # peak RSS in child processes
    seed: int = 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        return d


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
            x = _batch_of(inputs, b)
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


def _batch_of(inputs: np.ndarray, b: int) -> np.ndarray:
    """``b`` real images (repeated when the set is smaller), contiguous float32."""
    idx = np.arange(b) % len(inputs)
    return np.ascontiguousarray(inputs[idx], dtype=np.float32)


def _graph_bytes(bundle, path: Path) -> int | None:
    """A graph's bytes on disk including the packed weight files it loads (weight_storage)."""
    size = _size(path)
    graphs = (bundle.manifest.get("weight_storage") or {}).get("graphs") or {}
    rel = path.relative_to(bundle.path).as_posix()
    for entry in graphs.get(rel, []):
        packed = _size(bundle.path / entry["file"])
        if size is None or packed is None:
            return None
        size += packed
    return size


def disk_bytes(bundle) -> dict:
    """Bytes on disk of the graphs (with their packed weights), and the manifest's weight
    storage figures per member."""
    members = []
    for m in bundle.members:
        f = bundle.member_file(m["index"])
        members.append({"index": m["index"], "spec": m["spec"], "file": str(m["file"]),
                        "onnx_bytes": _graph_bytes(bundle, f),
                        "weight_bytes": m.get("weight_bytes")})
    weights = {}
    for key in ("true_bits", "stored", "float32"):
        vals = [(m.get("weight_bytes") or {}).get(key) for m in bundle.members]
        known = [int(v) for v in vals if v is not None]
        weights[key] = sum(known) if vals and len(known) == len(vals) else None
    return {"ensemble_onnx_bytes": _graph_bytes(bundle, bundle.ensemble_file), "members": members,
            "ensemble_weight_bytes": weights}


def _size(path) -> int | None:
    try:
        return int(Path(path).stat().st_size)
    except OSError:
        return None


# --------------------------------------------------------------------------- accuracy
def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def ensemble_scores(logits: np.ndarray) -> np.ndarray:
    """Log of the mean of the members' softmax: [M, B, C] -> [B, C] (the host's surrogate).
    An early-exit graph's NaN rows (members it did not run) are left out of the mean."""
    p = _softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    ran = member_ran(logits)[..., None]
    p = np.where(ran, p, 0.0).sum(axis=0) / np.maximum(ran.sum(axis=0), 1)
    return np.log(np.maximum(p, 1e-30))


def member_scores(logits: np.ndarray) -> np.ndarray:
    p = _softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    return np.log(np.maximum(p, 1e-30))


def predict_all(model, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    ids, logits = [], []
    for i in range(0, len(x), batch_size):
        a, b = model.run(np.ascontiguousarray(x[i:i + batch_size]))
        ids.append(np.asarray(a))
        logits.append(np.asarray(b))
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0,), np.float32)
    axis = 1 if logits[0].ndim == 3 else 0   # ensemble logits are [M, B, C]
    return np.concatenate(ids), np.concatenate(logits, axis=axis)


def set_description(bundle, name: str) -> str:
    info = bundle.eval_info or {}
    if name == "clean":
        return "clean images of the host's evaluation subset, no attack"
    protocol = info.get("protocol", "adaptive")
    config = info.get("config")
    norm = info.get("norm", "Linf")
    try:
        eps = f"{square_eps(bundle):g}"
    except BundleError:
        eps = "?"
    return (f"adversarial examples from the host eval, protocol {protocol}"
            f"{f' ({config})' if config else ''}, {norm} eps {eps}, replayed on the device "
            "(transfer, no new attack)")


def read_eval_sets(bundle) -> dict[str, dict]:
    """The bundle's evaluation sets, checked (shape, labels, range) before any measuring."""
    from edgempir.calib import read_set

    listed = bundle.manifest.get("calib", {})
    out = {}
    for name in EVAL_SETS:
        if name == "clean" or name in listed:
            out[name] = read_set(bundle.calib_file(name), bundle.input_shape, bundle.num_classes)
    return out


def evaluate_set(model, bundle, name: str, arrays: dict, n: int | None, batch_size: int
                 ) -> dict:
    from edgempir.calib import INPUT_NAME, LABEL_NAME
    from edgempir.vote import member_preds, vote

    x, y = arrays[INPUT_NAME], arrays[LABEL_NAME]
    n_set = len(y)
    if n is not None and n < n_set:
        x, y = x[:n], y[:n]
    ids, logits = predict_all(model, x, batch_size)
    acc = float((ids == y).mean()) if len(y) else None
    host = (bundle.host_accuracy or {}).get(name)
    same_set = len(y) == n_set
    drift = None if host is None or acc is None else 100.0 * (acc - host)
    # a member an early-exit graph skipped on a row has no prediction there: its accuracy
    # is over the rows it ran on (early_exit's member_ran_fraction says how many)
    preds, ran = member_preds(logits), member_ran(logits)
    members = [float((preds[i][ran[i]] == y[ran[i]]).mean()) if ran[i].any() else None
               for i in range(logits.shape[0])] if len(y) else []
    vote_agreement = float((vote(logits, bundle.reference_member) == ids).mean()) \
        if len(y) else None
    return {**rejection_figures(model, bundle, name, x, batch_size, same_set),
        "name": name,
        "description": set_description(bundle, name),
        "n": len(y),
        "n_set": int(n_set),
        "same_set_as_host": bool(same_set),
        "deployed_accuracy": acc,
        "host_accuracy": host,
        "drift_points": drift,
        "drift": bool(same_set and drift is not None and abs(drift) > DRIFT_THRESHOLD_POINTS),
        "member_accuracy": members,
        "vote_agreement": vote_agreement,
    }


def rejection_figures(model, bundle, name: str, x: np.ndarray, batch_size: int,
                      same_set: bool) -> dict:
    """The deployed engine's rejection rate (its ``accepted`` output) next to the host's,
    drift flagged like accuracy's; nothing for bundles without the output or a member."""
    if bundle.reject_policy is None or not hasattr(model, "run_outputs") or not len(x):
        return {"reject_policy": bundle.reject_policy, "deployed_rejection_rate": None,
                "host_rejection_rate": None, "rejection_drift_points": None,
                "rejection_drift": False}
    acc = np.concatenate([np.asarray(model.run_outputs(x[i:i + batch_size])[ACCEPTED])
                          for i in range(0, len(x), batch_size)]).astype(bool)
    deployed = float(1 - acc.mean())
    host = bundle.host_rejection.get(name)
    drift = None if host is None else 100.0 * (deployed - host)
    return {"reject_policy": bundle.reject_policy, "deployed_rejection_rate": deployed,
            "host_rejection_rate": host, "rejection_drift_points": drift,
            "rejection_drift": bool(same_set and drift is not None
                                    and abs(drift) > DRIFT_THRESHOLD_POINTS)}


# --------------------------------------------------------------------------- square
def square_eps(bundle) -> float:
    """The eps of the host's adversarial set (``adv_eps``), else the eval's first eps."""
    info = bundle.eval_info or {}
    eps = info.get("adv_eps")
    if eps is None:
        eps = info.get("eps")
        if isinstance(eps, (list, tuple)):
            eps = eps[0] if eps else None
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 <= eps <= 1:
        raise BundleError(f"{bundle.path}: manifest has no usable eval eps for the Square "
                          f"attack ({eps!r}); re-export the bundle from an evaluated run")
    return float(np.float32(eps))   # the host's eps went through float32; print it as such


def run_square(model, which: str, x: np.ndarray, y: np.ndarray, eps: float, queries: int,
               p_init: float, seed: int, progress: Progress = no_progress,
               label: str = "square") -> dict:
    from edgempir.targets.device.square import square_linf

    score = ensemble_scores if which == "ensemble" else member_scores

    def query(batch: np.ndarray):
        ids, logits = model.run(np.ascontiguousarray(batch))
        return ids, score(logits)

    t0 = time.perf_counter()
    with progress(label, max(queries - 2, 0)) as tick:
        res = square_linf(query, x, y, eps, n_queries=queries, p_init=p_init, seed=seed,
                          on_iteration=lambda i, left: tick(1))
    out = res.summary()
    out["seconds"] = time.perf_counter() - t0
    return out


def runtime_versions(runtime: str) -> dict:
    out = provenance.versions("numpy", "psutil", runtime)
    return {k: v for k, v in out.items() if k not in ("edgempir", "python")}


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


# --------------------------------------------------------------------------- the run
def _member_label(bundle, index: int) -> str:
    spec = bundle.members[index]["spec"]
    return f"member {index} ({spec})"


def run_bench(bundle_path: str | os.PathLike, cfg: BenchConfig,
              progress: Progress | None = None) -> dict:
    """Everything ``edgempir bench`` measures, as the JSON report (see docs/BENCH.md)."""
    from edgempir.calib import INPUT_NAME, LABEL_NAME
    from edgempir.targets.device.bundle import verify_bundle
    from edgempir.targets.device.runtime import open_model
    from edgempir.validate import check_batch_memory

    progress = progress or no_progress
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    warnings: list[dict] = []

    def mark(section: str, t0: float) -> None:
        timings[section] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    bundle = verify_bundle(bundle_path)
    # the largest batch is allocated (and the runtime's activations with it): refuse one
    # that cannot fit before reading the sets
    check_batch_memory(max(cfg.batch_sizes), 4 * math.prod(bundle.input_shape),
                       "--batch-sizes: a batch of")
    check_runtime_present(bundle)
    eval_sets = read_eval_sets(bundle)
    clean = eval_sets["clean"]
    pool = clean[INPUT_NAME]
    if len(pool) == 0:
        raise BundleError(f"{bundle.calib_file('clean')}: the clean set is empty; re-export "
                          "the bundle")
    mark("verify", t0)

    base_index = bundle.fp32_member
    if base_index is None:
        base_index = bundle.reference_member
        warnings.append(_warning("no-fp32-member",
                                 f"the bundle has no fp32 member; the baseline is "
                                 f"{_member_label(bundle, base_index)}, the reference member"))
    base_name = "fp32_member"

    t0 = time.perf_counter()
    ens = open_model(bundle, "ensemble", threads=cfg.threads)
    base = open_model(bundle, base_index, threads=cfg.threads)
    mark("open", t0)

    machine = machine_info()
    if busy(machine):
        warnings.append(_warning("busy-machine",
                                 f"1-minute load average {machine['load_average'][0]} on "
                                 f"{machine['cores_usable'] or machine['cores_logical']} usable "
                                 "cores when bench started: other processes compete for the "
                                 "CPU, latencies are pessimistic and noisy"))
    if machine["emulation"]["emulated"]:
        warnings.append(_warning("emulated", "running under emulation ("
                                 + "; ".join(machine["emulation"]["evidence"])
                                 + "): latency figures are not the device's"))

    # ---- early exit: decisions vs the full vote, slow-path fraction, worst-case rows
    t0 = time.perf_counter()
    early = EE.section(bundle, ens, eval_sets, cfg.n, cfg.threads, max(cfg.batch_sizes))
    mark("early_exit", t0)

    # ---- latency, side by side (clean set; early exit: also adversarial and worst case)
    t0 = time.perf_counter()
    runners = {"ensemble": ens.run, base_name: base.run}
    if early is not None:
        adv = eval_sets.get("adv-adaptive", {}).get(INPUT_NAME)
        runners = EE.latency_runners(ens, base, base_name, pool, adv, early.pop("_worst_pool"))
    rows = compare_latency(runners, pool, tuple(cfg.batch_sizes), cfg.warmup, cfg.repeats,
                           cfg.time_cap_s, progress)
    for r in rows:
        e, f = r["ensemble"], r[base_name]
        r["overhead_p50"] = e["p50_ms"] / f["p50_ms"] if f["p50_ms"] > 0 else None
        r["overhead_mean"] = e["mean_ms"] / f["mean_ms"] if f["mean_ms"] > 0 else None
        EE.overheads(r, base_name)
    if early is not None:
        for s in early["sets"]:
            if not s["decisions_identical"]:
                warnings.append(_warning("early-exit-mismatch",
                                         f"{s['name']}: the early-exit engine decides "
                                         f"differently from the full vote on "
                                         f"{s['full_vote_mismatches']} images"))
    mark("latency", t0)

    # ---- memory, one fresh process per model
    t0 = time.perf_counter()
    memory: dict[str, Any] = {"disk": disk_bytes(bundle), "ensemble": None, base_name: None,
                              "overhead_peak_rss": None, "overhead_model_peak": None}
    if cfg.memory:
        b = max(cfg.batch_sizes)
        try:
            with progress("memory", 2) as tick:
                memory["ensemble"] = measure_memory(bundle.path, "ensemble", cfg.threads, b)
                tick(1)
                memory[base_name] = measure_memory(bundle.path, str(base_index), cfg.threads,
                                                   b)
                tick(1)
        except MemoryProbeError as e:
            memory["ensemble"] = memory[base_name] = None
            warnings.append(_warning("memory-unavailable", f"peak RSS not measured: {e}"))
        ens_mem, base_mem = memory["ensemble"], memory[base_name]
        if ens_mem and base_mem and ens_mem["peak_rss_bytes"] and base_mem["peak_rss_bytes"]:
            memory["overhead_peak_rss"] = ens_mem["peak_rss_bytes"] / base_mem["peak_rss_bytes"]
        if ens_mem and base_mem and ens_mem["model_peak_bytes"] and base_mem["model_peak_bytes"]:
            memory["overhead_model_peak"] = (ens_mem["model_peak_bytes"]
                                             / base_mem["model_peak_bytes"])
    disk = memory["disk"]
    base_disk = next((m["onnx_bytes"] for m in disk["members"] if m["index"] == base_index),
                     None)
    disk["overhead_onnx"] = (disk["ensemble_onnx_bytes"] / base_disk
                             if disk["ensemble_onnx_bytes"] and base_disk else None)
    mark("memory", t0)

    # ---- accuracy of the deployed engine vs the host's
    t0 = time.perf_counter()
    eval_batch = max(cfg.batch_sizes)
    sets = []
    with progress("accuracy", len(eval_sets)) as tick:
        for name, arrays in eval_sets.items():
            sets.append(evaluate_set(ens, bundle, name, arrays, cfg.n, eval_batch))
            tick(1)
    for s in sets:
        if s["drift"]:
            warnings.append(_warning("accuracy-drift",
                                     f"{s['name']}: deployed {_pct(s['deployed_accuracy'])} vs "
                                     f"host {_pct(s['host_accuracy'])} "
                                     f"({s['drift_points']:+.2f} points, more than "
                                     f"{DRIFT_THRESHOLD_POINTS})"))
        if s.get("rejection_drift"):
            warnings.append(_warning("rejection-drift",
                                     f"{s['name']}: deployed rejection rate "
                                     f"{_pct(s['deployed_rejection_rate'])} vs host "
                                     f"{_pct(s['host_rejection_rate'])} "
                                     f"({s['rejection_drift_points']:+.2f} points, more than "
                                     f"{DRIFT_THRESHOLD_POINTS}; policy {s['reject_policy']})"))
        if s["vote_agreement"] is not None and s["vote_agreement"] < 1.0:
            warnings.append(_warning("vote-mismatch",
                                     f"{s['name']}: the engine's class ids differ from the "
                                     "numpy vote on its own member logits for "
                                     f"{100 * (1 - s['vote_agreement']):.2f}% of images"))
        if not s["same_set_as_host"]:
            warnings.append(_warning("subset", f"{s['name']}: measured on {s['n']} of "
                                     f"{s['n_set']} images (--n); not comparable with the "
                                     "host figure, drift not judged"))
    mark("accuracy", t0)

    # ---- Square, black box, on the engine itself
    t0 = time.perf_counter()
    square = None
    if cfg.square_n > 0 and cfg.square_queries > 0:
        eps = square_eps(bundle)
        x, y = clean[INPUT_NAME][:cfg.square_n], clean[LABEL_NAME][:cfg.square_n]
        square = {
            "attack": "square", "norm": "Linf", "eps": eps, "queries": cfg.square_queries,
            "p_init": cfg.square_p_init, "n": len(y), "seed": cfg.seed,
            "loss": "margin on the log of the mean of the members' softmax",
            "success": "the engine's decision (class ids of the vote) differs from the label",
            "description": f"Square Linf eps {eps:g}, {cfg.square_queries} queries, black-box "
                           f"on the deployed engine, {len(y)} clean images",
        }
        square["ensemble"] = run_square(ens, "ensemble", x, y, eps, cfg.square_queries,
                                        cfg.square_p_init, cfg.seed, progress, "square ensemble")
        square[base_name] = run_square(base, "member", x, y, eps, cfg.square_queries,
                                       cfg.square_p_init, cfg.seed, progress,
                                       f"square {base_name}")
    mark("square", t0)

    # ---- soak
    soak_report = None
    if cfg.duration_s and cfg.duration_s > 0:
        t0 = time.perf_counter()
        b = cfg.batch_sizes[0]
        soak_report = soak(ens.run, _batch_of(pool, b), cfg.duration_s, progress=progress)
        if soak_report["latency_drift_flag"]:
            warnings.append(_warning("soak-latency-drift",
                                     f"p50 latency moved {100 * soak_report['latency_drift']:+.1f}"
                                     f"% from the first to the last soak window"))
        if soak_report["rss_growth_flag"]:
            warnings.append(_warning("soak-rss-growth",
                                     f"RSS grew {soak_report['rss_growth_bytes'] / 2**20:.1f} MiB "
                                     "during the soak"))
        mark("soak", t0)

    ens_info = ens.info()
    timings["total"] = round(time.perf_counter() - t_start, 3)
    report = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "edgempir_version": provenance.__version__,
        "bundle": {
            "path": str(Path(bundle.path).resolve()),
            "name": Path(bundle.path).resolve().name,
            "target": bundle.target,
            "runtime": bundle.runtime,
            "verified": True,
            "input_name": bundle.input_name,
            "input_shape": list(bundle.input_shape),
            "num_classes": int(bundle.num_classes),
            "members": [{"index": m["index"], "spec": m["spec"],
                         "weight_bits": m.get("weight_bits"), "act_bits": m.get("act_bits")}
                        for m in bundle.members],
            "reference_member": bundle.reference_member,
            "fp32_member": bundle.fp32_member,
            "baseline_member": base_index,
            "eval": _eval_summary(bundle.eval_info),
        },
        "machine": machine,
        "runtime": {
            "name": bundle.runtime,
            "versions": runtime_versions(bundle.runtime),
            "providers": ens_info.get("providers"),
            "threads": ens_info.get("threads", cfg.threads),
            "info": _jsonable(ens_info),
        },
        "settings": cfg.to_json(),
        "latency": rows,
        "early_exit": early,
        "memory": _jsonable(memory),
        "accuracy": {"drift_threshold_points": DRIFT_THRESHOLD_POINTS,
                     "drift": any(s["drift"] for s in sets), "sets": sets},
        "square": square,
        "soak": soak_report,
        "warnings": warnings,
        "timings_s": timings,
    }
    return report


def _eval_summary(info: dict | None) -> dict:
    info = info or {}
    return {k: _jsonable(info.get(k)) for k in ("protocol", "config", "eps", "adv_eps", "norm")}


def _warning(code: str, message: str) -> dict:
    return {"code": code, "message": message, "doc": f"docs/BENCH.md#{code}"}
