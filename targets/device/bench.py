"""``edgempir bench``: speed, memory, accuracy and black-box robustness of a deployed bundle.

Device side: numpy, psutil and the bundle's runtime (ONNX Runtime or TensorRT) only. No
torch, no onnx package; Python 3.10 syntax. docs/BENCH.md documents what is measured and
every field of the JSON report (``edgempir.targets.device.report.SCHEMA_SPEC`` is the same schema,
checked by :func:`~edgempir.targets.device.report.validate_report`).

:func:`run_bench` is a short driver over one function per measurement: ``measure_early_exit``,
``measure_latency``, ``measure_memory``, ``measure_accuracy``, ``measure_square`` and
``measure_soak``; each returns its section of the report and adds its warnings. The
pieces they use live beside this module: timing (latency, soak) in ``timing.py``, accuracy
and the Square attack's query in ``accuracy.py``, the machine in ``machine.py``, the
peak-RSS child in ``memory.py``, schema and table in ``report.py``.

Why the measurements are made the way they are:
- latency of the ensemble and of the full-precision member alone are taken in the same
  process, alternating blocks of calls, so clock boosts and thermal drift hit both equally
  and the ensemble's overhead ratio compares like with like;
- peak RSS is a per-process high-water mark, so each model is loaded alone in a fresh child
  process (``python -m edgempir.targets.device.memory memory-worker ...``): measured in this
  process the ensemble's peak would hide the fp32 member's;
- accuracy is measured with the engine's own decision (the vote inside the graph) on the
  exact sets the host evaluated before export, so any difference is drift caused by export
  or by the device's runtime, not by sampling.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgempir import provenance
from edgempir.errors import BundleError
from edgempir.targets.device import early_exit as EE
from edgempir.targets.device.accuracy import (
    DRIFT_THRESHOLD_POINTS,
    EVAL_SETS,
    ensemble_scores,
    evaluate_set,
    member_scores,
    predict_all,
    read_eval_sets,
    rejection_figures,
    run_square,
    square_eps,
)
from edgempir.targets.device.machine import busy, machine_info
from edgempir.targets.device.memory import MemoryProbeError
from edgempir.targets.device.memory import measure_memory as peak_rss_child
from edgempir.targets.device.report import SCHEMA, SCHEMA_VERSION, format_report, validate_report
from edgempir.targets.device.report import jsonable as _jsonable
from edgempir.targets.device.report import pct as _pct
from edgempir.targets.device.runtime import check_runtime_present
from edgempir.targets.device.timing import (
    MIN_REPEATS,
    SOAK_LATENCY_DRIFT_FLAG,
    SOAK_RSS_GROWTH_FLAG,
    Progress,
    batch_of,
    compare_latency,
    latency_stats,
    no_progress,
    soak,
    time_calls,
)

__all__ = ["DRIFT_THRESHOLD_POINTS", "EVAL_SETS", "MIN_REPEATS", "SOAK_LATENCY_DRIFT_FLAG",
           "SOAK_RSS_GROWTH_FLAG", "BenchConfig", "Progress", "check_runtime_present",
           "compare_latency", "ensemble_scores", "evaluate_set", "format_report",
           "latency_stats", "member_scores", "no_progress", "predict_all", "read_eval_sets",
           "rejection_figures", "run_bench", "run_square", "soak", "square_eps", "time_calls",
           "validate_report"]
_batch_of = batch_of  # the name tests and benchmarks used before timing.py
BASE_NAME = "fp32_member"   # the baseline's key in the report (the reference member without
                            # an fp32 one: the warning no-fp32-member says so)


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


# --------------------------------------------------------------------------- disk
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


def runtime_versions(runtime: str) -> dict:
    out = provenance.versions("numpy", "psutil", runtime)
    return {k: v for k, v in out.items() if k not in ("edgempir", "python")}


# --------------------------------------------------------------------------- the measurements
@dataclass
class Bench:
    """What every measurement reads: the verified bundle, its sets, the two open engines;
    and what they add to: warnings and timings."""

    bundle: Any
    cfg: BenchConfig
    progress: Progress
    eval_sets: dict
    ens: Any                      # the ensemble engine
    base: Any                     # the baseline: the fp32 member (else the reference member)
    base_index: int
    machine: dict
    warnings: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def clean(self) -> dict:
        return self.eval_sets["clean"]

    def warn(self, warning: dict) -> None:
        self.warnings.append(warning)

    def timed(self, section: str, measure: Callable[[Bench], Any]) -> Any:
        t0 = time.perf_counter()
        out = measure(self)
        self.timings[section] = round(time.perf_counter() - t0, 3)
        return out


def open_bench(bundle_path: str | os.PathLike, cfg: BenchConfig, progress: Progress,
               timings: dict[str, float]) -> Bench:
    """Verify the bundle and read its sets (timed ``verify``), open the ensemble and the
    baseline member (``open``), describe the machine; the warnings about either."""
    from edgempir.calib import INPUT_NAME
    from edgempir.targets.device.bundle import verify_bundle
    from edgempir.targets.device.runtime import open_model
    from edgempir.validate import check_batch_memory

    t0 = time.perf_counter()
    bundle = verify_bundle(bundle_path)
    # the largest batch is allocated (and the runtime's activations with it): refuse one
    # that cannot fit before reading the sets
    check_batch_memory(max(cfg.batch_sizes), 4 * math.prod(bundle.input_shape),
                       "--batch-sizes: a batch of")
    check_runtime_present(bundle)
    eval_sets = read_eval_sets(bundle)
    if len(eval_sets["clean"][INPUT_NAME]) == 0:
        raise BundleError(f"{bundle.calib_file('clean')}: the clean set is empty; re-export "
                          "the bundle")
    timings["verify"] = round(time.perf_counter() - t0, 3)
    warnings = []
    base_index = bundle.fp32_member
    if base_index is None:
        base_index = bundle.reference_member
        warnings.append(_warning("no-fp32-member",
                                 f"the bundle has no fp32 member; the baseline is "
                                 f"{_member_label(bundle, base_index)}, the reference member"))
    t0 = time.perf_counter()
    ens = open_model(bundle, "ensemble", threads=cfg.threads)
    base = open_model(bundle, base_index, threads=cfg.threads)
    timings["open"] = round(time.perf_counter() - t0, 3)
    b = Bench(bundle=bundle, cfg=cfg, progress=progress, eval_sets=eval_sets, ens=ens,
              base=base, base_index=base_index, machine=machine_info(), warnings=warnings,
              timings=timings)
    machine_warnings(b)
    return b


def machine_warnings(b: Bench) -> None:
    machine = b.machine
    if busy(machine):
        b.warn(_warning("busy-machine",
                        f"1-minute load average {machine['load_average'][0]} on "
                        f"{machine['cores_usable'] or machine['cores_logical']} usable "
                        "cores when bench started: other processes compete for the "
                        "CPU, latencies are pessimistic and noisy"))
    if machine["emulation"]["emulated"]:
        b.warn(_warning("emulated", "running under emulation ("
                        + "; ".join(machine["emulation"]["evidence"])
                        + "): latency figures are not the device's"))


def measure_early_exit(b: Bench) -> dict | None:
    """Early exit: decisions vs the full vote, slow-path fraction, worst-case rows."""
    cfg = b.cfg
    return EE.section(b.bundle, b.ens, b.eval_sets, cfg.n, cfg.threads, max(cfg.batch_sizes))


def measure_latency(b: Bench, early: dict | None) -> list[dict]:
    """Latency side by side on the clean set (early exit: also adversarial, worst case)."""
    from edgempir.calib import INPUT_NAME

    cfg, pool = b.cfg, b.clean[INPUT_NAME]
    runners = {"ensemble": b.ens.run, BASE_NAME: b.base.run}
    if early is not None:
        adv = b.eval_sets.get("adv-adaptive", {}).get(INPUT_NAME)
        runners = EE.latency_runners(b.ens, b.base, BASE_NAME, pool, adv,
                                     early.pop("_worst_pool"))
    rows = compare_latency(runners, pool, tuple(cfg.batch_sizes), cfg.warmup, cfg.repeats,
                           cfg.time_cap_s, b.progress)
    for r in rows:
        e, f = r["ensemble"], r[BASE_NAME]
        r["overhead_p50"] = e["p50_ms"] / f["p50_ms"] if f["p50_ms"] > 0 else None
        r["overhead_mean"] = e["mean_ms"] / f["mean_ms"] if f["mean_ms"] > 0 else None
        EE.overheads(r, BASE_NAME)
    for s in (early or {}).get("sets", []):
        if not s["decisions_identical"]:
            b.warn(_warning("early-exit-mismatch",
                            f"{s['name']}: the early-exit engine decides differently from "
                            f"the full vote on {s['full_vote_mismatches']} images"))
    return rows


def measure_memory(b: Bench) -> dict:
    """Peak RSS, one fresh process per model; bytes on disk; their ratios."""
    memory: dict[str, Any] = {"disk": disk_bytes(b.bundle), "ensemble": None, BASE_NAME: None,
                              "overhead_peak_rss": None, "overhead_model_peak": None}
    if b.cfg.memory:
        peak_rss(b, memory)
    disk = memory["disk"]
    base_disk = next((m["onnx_bytes"] for m in disk["members"] if m["index"] == b.base_index),
                     None)
    disk["overhead_onnx"] = (disk["ensemble_onnx_bytes"] / base_disk
                             if disk["ensemble_onnx_bytes"] and base_disk else None)
    return memory


def peak_rss(b: Bench, memory: dict) -> None:
    cfg, batch = b.cfg, max(b.cfg.batch_sizes)
    try:
        with b.progress("memory", 2) as tick:
            memory["ensemble"] = peak_rss_child(b.bundle.path, "ensemble", cfg.threads, batch)
            tick(1)
            memory[BASE_NAME] = peak_rss_child(b.bundle.path, str(b.base_index), cfg.threads,
                                               batch)
            tick(1)
    except MemoryProbeError as e:
        memory["ensemble"] = memory[BASE_NAME] = None
        b.warn(_warning("memory-unavailable", f"peak RSS not measured: {e}"))
    ens_mem, base_mem = memory["ensemble"], memory[BASE_NAME]
    for key, figure in (("overhead_peak_rss", "peak_rss_bytes"),
                        ("overhead_model_peak", "model_peak_bytes")):
        if ens_mem and base_mem and ens_mem[figure] and base_mem[figure]:
            memory[key] = ens_mem[figure] / base_mem[figure]


def measure_accuracy(b: Bench) -> dict:
    """The deployed engine's accuracy (and rejection rate) vs the host's, per set."""
    sets = []
    with b.progress("accuracy", len(b.eval_sets)) as tick:
        for name, arrays in b.eval_sets.items():
            sets.append(evaluate_set(b.ens, b.bundle, name, arrays, b.cfg.n,
                                     max(b.cfg.batch_sizes)))
            tick(1)
    for s in sets:
        accuracy_warnings(b, s)
    return {"drift_threshold_points": DRIFT_THRESHOLD_POINTS,
            "drift": any(s["drift"] for s in sets), "sets": sets}


def accuracy_warnings(b: Bench, s: dict) -> None:
    if s["drift"]:
        b.warn(_warning("accuracy-drift",
                        f"{s['name']}: deployed {_pct(s['deployed_accuracy'])} vs "
                        f"host {_pct(s['host_accuracy'])} "
                        f"({s['drift_points']:+.2f} points, more than "
                        f"{DRIFT_THRESHOLD_POINTS})"))
    if s.get("rejection_drift"):
        b.warn(_warning("rejection-drift",
                        f"{s['name']}: deployed rejection rate "
                        f"{_pct(s['deployed_rejection_rate'])} vs host "
                        f"{_pct(s['host_rejection_rate'])} "
                        f"({s['rejection_drift_points']:+.2f} points, more than "
                        f"{DRIFT_THRESHOLD_POINTS}; policy {s['reject_policy']})"))
    if s["vote_agreement"] is not None and s["vote_agreement"] < 1.0:
        b.warn(_warning("vote-mismatch",
                        f"{s['name']}: the engine's class ids differ from the "
                        "numpy vote on its own member logits for "
                        f"{100 * (1 - s['vote_agreement']):.2f}% of images"))
    if not s["same_set_as_host"]:
        b.warn(_warning("subset", f"{s['name']}: measured on {s['n']} of "
                        f"{s['n_set']} images (--n); not comparable with the "
                        "host figure, drift not judged"))


def measure_square(b: Bench) -> dict | None:
    """Square, black box, on the engine itself and on the baseline member."""
    from edgempir.calib import INPUT_NAME, LABEL_NAME

    cfg = b.cfg
    if cfg.square_n <= 0 or cfg.square_queries <= 0:
        return None
    eps = square_eps(b.bundle)
    x, y = b.clean[INPUT_NAME][:cfg.square_n], b.clean[LABEL_NAME][:cfg.square_n]
    square: dict[str, Any] = {
        "attack": "square", "norm": "Linf", "eps": eps, "queries": cfg.square_queries,
        "p_init": cfg.square_p_init, "n": len(y), "seed": cfg.seed,
        "loss": "margin on the log of the mean of the members' softmax",
        "success": "the engine's decision (class ids of the vote) differs from the label",
        "description": f"Square Linf eps {eps:g}, {cfg.square_queries} queries, black-box "
                       f"on the deployed engine, {len(y)} clean images",
    }
    for key, model, which in (("ensemble", b.ens, "ensemble"), (BASE_NAME, b.base, "member")):
        square[key] = run_square(model, which, x, y, eps, cfg.square_queries,
                                 cfg.square_p_init, cfg.seed, b.progress, f"square {key}")
    return square


def measure_soak(b: Bench) -> dict:
    """The ensemble run continuously for ``duration_s``: latency and RSS over time."""
    from edgempir.calib import INPUT_NAME

    x = batch_of(b.clean[INPUT_NAME], b.cfg.batch_sizes[0])
    report = soak(b.ens.run, x, b.cfg.duration_s, progress=b.progress)
    if report["latency_drift_flag"]:
        b.warn(_warning("soak-latency-drift",
                        f"p50 latency moved {100 * report['latency_drift']:+.1f}"
                        f"% from the first to the last soak window"))
    if report["rss_growth_flag"]:
        b.warn(_warning("soak-rss-growth",
                        f"RSS grew {report['rss_growth_bytes'] / 2**20:.1f} MiB "
                        "during the soak"))
    return report


# --------------------------------------------------------------------------- the run
def run_bench(bundle_path: str | os.PathLike, cfg: BenchConfig,
              progress: Progress | None = None) -> dict:
    """Everything ``edgempir bench`` measures, as the JSON report (see docs/BENCH.md)."""
    t_start = time.perf_counter()
    b = open_bench(bundle_path, cfg, progress or no_progress, {})
    early = b.timed("early_exit", measure_early_exit)
    sections = {
        "latency": b.timed("latency", lambda b: measure_latency(b, early)),
        "early_exit": early,
        "memory": _jsonable(b.timed("memory", measure_memory)),
        "accuracy": b.timed("accuracy", measure_accuracy),
        "square": b.timed("square", measure_square),
        "soak": b.timed("soak", measure_soak) if cfg.duration_s and cfg.duration_s > 0
        else None,
    }
    return assemble_report(b, sections, t_start)


def assemble_report(b: Bench, sections: dict, t_start: float) -> dict:
    """The report in the order of its schema (report.SCHEMA_SPEC)."""
    bundle, ens_info = b.bundle, b.ens.info()
    b.timings["total"] = round(time.perf_counter() - t_start, 3)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "edgempir_version": provenance.__version__,
        "bundle": bundle_summary(bundle, b.base_index),
        "machine": b.machine,
        "runtime": {
            "name": bundle.runtime,
            "versions": runtime_versions(bundle.runtime),
            "providers": ens_info.get("providers"),
            "threads": ens_info.get("threads", b.cfg.threads),
            "info": _jsonable(ens_info),
        },
        "settings": b.cfg.to_json(),
        **sections,
        "warnings": b.warnings,
        "timings_s": b.timings,
    }


def bundle_summary(bundle, base_index: int) -> dict:
    return {
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
    }


def _member_label(bundle, index: int) -> str:
    spec = bundle.members[index]["spec"]
    return f"member {index} ({spec})"


def _eval_summary(info: dict | None) -> dict:
    info = info or {}
    return {k: _jsonable(info.get(k)) for k in ("protocol", "config", "eps", "adv_eps", "norm")}


def _warning(code: str, message: str) -> dict:
    return {"code": code, "message": message, "doc": f"docs/BENCH.md#{code}"}
