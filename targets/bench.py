"""``edgempir bench``: speed, memory, accuracy and black-box robustness of a deployed bundle.

Device side: numpy, psutil and the bundle's runtime (ONNX Runtime or TensorRT) only. No
torch, no onnx package; Python 3.10 syntax. docs/BENCH.md documents what is measured and
every field of the JSON report (``SCHEMA`` below is the same schema, checked by
:func:`validate_report`).

Why the measurements are made the way they are:
- latency of the ensemble and of the full-precision member alone are taken in the same
  process, alternating blocks of calls, so clock boosts and thermal drift hit both equally
  and the ensemble's overhead ratio compares like with like;
- peak RSS is a per-process high-water mark, so each model is loaded alone in a fresh child
  process (``python -m edgempir.targets.bench memory-worker ...``): measured in this process
  the ensemble's peak would hide the fp32 member's;
- accuracy is measured with the engine's own decision (the vote inside the graph) on the
  exact sets the host evaluated before export, so any difference is drift caused by export
  or by the device's runtime, not by sampling.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ContextManager

import numpy as np

from edgempir.errors import BundleError

SCHEMA = "edgempir.bench"
SCHEMA_VERSION = 1
DRIFT_THRESHOLD_POINTS = 0.5      # DESIGN.md: host vs device accuracy must agree within this
SOAK_LATENCY_DRIFT_FLAG = 0.10    # p50 of the last soak window vs the first: +-10 %
SOAK_RSS_GROWTH_FLAG = 8 << 20    # bytes of RSS growth over a soak worth a warning
MIN_REPEATS = 5                   # even under the time cap, a percentile needs a few samples
EVAL_SETS = ("clean", "adv-adaptive")
EMULATION_ENV = "EDGEMPIR_EMULATED"
BUSY_LOAD_PER_CORE = 0.5          # 1-minute load per usable core above which timings suffer


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
    yield lambda n=1: None


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
                        samples[name] += time_calls(lambda r=run, xb=x: r(xb), min(block, left))
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


# --------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int | None:
    """This process's RSS high-water mark, or None where the OS keeps none.

    Linux: VmHWM of /proc/self/status, which belongs to this process's own address space.
    Not ru_maxrss: Linux carries the parent's RSS at fork time into a child's ru_maxrss
    across exec, so a child started by a big parent would report the parent's size.
    """
    status = _read("/proc/self/status")
    if status:
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return getattr(psutil.Process().memory_info(), "peak_wset", None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def reset_peak_rss() -> bool:
    """Restart the high-water mark from the current RSS (Linux 4.0+); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_worker(bundle_path: str, which: str, threads: int | None, batch_size: int,
                  runs: int, seed: int = 0) -> dict:
    """Run in a fresh process: load one model, run it, report RSS figures."""
    from edgempir.targets.bundle import verify_bundle
    from edgempir.targets.runtime import open_model

    bundle = verify_bundle(bundle_path)
    model_which: str | int = which if which == "ensemble" else int(which)
    # import the runtime library first: its tens of MiB are the same for any model and
    # would otherwise be counted as the model's
    import importlib

    with contextlib.suppress(ImportError):
        importlib.import_module(bundle.runtime)
    import edgempir.targets.onnxruntime  # noqa: F401
    peak_before = peak_rss_bytes()
    # the peak from here on is the model's: imports and bundle hashing are not counted
    peak_reset = reset_peak_rss()
    baseline = rss_bytes()
    model = open_model(bundle, model_which, threads=threads)
    loaded = rss_bytes()
    x = np.random.default_rng(seed).random((batch_size, *bundle.input_shape), dtype=np.float32)
    for _ in range(runs):
        model.run(x)
    peak = peak_rss_bytes()
    runtime_memory = model.memory_info()
    return {
        "which": which,
        "batch_size": batch_size,
        "runs": runs,
        "baseline_rss_bytes": baseline,
        "loaded_rss_bytes": loaded,
        "final_rss_bytes": rss_bytes(),
        "peak_rss_bytes": peak,
        "peak_rss_before_load_bytes": peak_before,
        "peak_reset": peak_reset,
        "model_peak_bytes": None if peak is None else max(peak - baseline, 0),
        "runtime": runtime_memory,
    }


def measure_memory(bundle_path: Path, which: str, threads: int | None, batch_size: int,
                   runs: int = 20, timeout_s: float = 300) -> dict:
    """Peak RSS of a fresh child process that loads and runs only ``which``."""
    cmd = [sys.executable, "-m", "edgempir.targets.bench", "memory-worker", str(bundle_path),
           which, str(threads or 0), str(batch_size), str(runs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MemoryProbeError(f"cannot run a child process for {which} ({e})") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise MemoryProbeError(f"the child process for {which} failed ({tail})")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise MemoryProbeError(f"the child process for {which} printed no report") from None


class MemoryProbeError(Exception):
    """The peak-RSS child could not run (e.g. no exec under some emulators): a warning."""


def disk_bytes(bundle) -> dict:
    """Bytes on disk of the graphs, and the manifest's weight storage figures per member."""
    members = []
    for m in bundle.members:
        f = bundle.member_file(m["index"])
        members.append({"index": m["index"], "spec": m["spec"], "file": str(m["file"]),
                        "onnx_bytes": _size(f), "weight_bytes": m.get("weight_bytes")})
    weights = {}
    for key in ("true_bits", "stored", "float32"):
        vals = [(m.get("weight_bytes") or {}).get(key) for m in bundle.members]
        weights[key] = int(sum(vals)) if vals and all(v is not None for v in vals) else None
    return {"ensemble_onnx_bytes": _size(bundle.ensemble_file), "members": members,
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
    """Log of the mean of the members' softmax: [M, B, C] -> [B, C] (the host's surrogate)."""
    p = _softmax(np.asarray(logits, dtype=np.float64), axis=-1).mean(axis=0)
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

    from edgempir.vote import vote

    x, y = arrays[INPUT_NAME], arrays[LABEL_NAME]
    n_set = len(y)
    if n is not None and n < n_set:
        x, y = x[:n], y[:n]
    ids, logits = predict_all(model, x, batch_size)
    acc = float((ids == y).mean()) if len(y) else None
    host = (bundle.host_accuracy or {}).get(name)
    same_set = len(y) == n_set
    drift = None if host is None or acc is None else 100.0 * (acc - host)
    members = [float((logits[i].argmax(axis=1) == y).mean()) if len(y) else None
               for i in range(logits.shape[0])] if len(y) else []
    vote_agreement = float((vote(logits, bundle.reference_member) == ids).mean()) \
        if len(y) else None
    return {
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
    from edgempir.targets.square import square_linf

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


# --------------------------------------------------------------------------- machine
_ARM_PARTS = {  # /proc/cpuinfo "CPU part" of ARM Ltd. cores (implementer 0x41)
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4f": "Neoverse-V2",
    "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20).decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _cpuinfo_fields(text: str | None) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip().lower(), v.strip())
    return fields


def cpu_model(cpuinfo: str | None = None) -> str | None:
    fields = _cpuinfo_fields(cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo"))
    for key in ("model name", "cpu model", "model", "hardware"):
        if fields.get(key):
            return fields[key]
    part = fields.get("cpu part")
    if part:
        name = _ARM_PARTS.get(part.lower()) if fields.get("cpu implementer") == "0x41" else None
        return name or f"ARM implementer {fields.get('cpu implementer')} part {part}"
    return platform.processor() or None


def detect_emulation(machine: str | None = None, cpuinfo: str | None = None,
                     env: dict | None = None, binfmt_dir: str = "/proc/sys/fs/binfmt_misc"
                     ) -> dict:
    """Is this process running under an instruction-set emulator (e.g. qemu-user)?

    Evidence, strongest first: the ``EDGEMPIR_EMULATED`` variable the emulation runner sets;
    a /proc/cpuinfo describing another architecture than the interpreter's (qemu-user shows
    the host's cpuinfo for aarch64 guests); a registered, enabled qemu binfmt handler for
    this very architecture (a native machine has no reason to emulate itself).
    """
    env = os.environ if env is None else env
    machine = (machine or platform.machine()).lower()
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    fields = _cpuinfo_fields(text)
    evidence = []
    emulator = env.get(EMULATION_ENV) or None
    if emulator:
        evidence.append(f"{EMULATION_ENV}={emulator}")
    is_arm = machine.startswith(("aarch64", "arm"))
    is_x86 = machine in ("x86_64", "amd64", "i386", "i686")
    if is_arm and ("vendor_id" in fields or "sse2" in fields.get("flags", "").split()):
        evidence.append(f"/proc/cpuinfo describes an x86 CPU ({fields.get('model name')}) but "
                        f"the interpreter is {machine}")
    if is_x86 and "cpu implementer" in fields:
        evidence.append(f"/proc/cpuinfo describes an ARM CPU but the interpreter is {machine}")
    qemu_name = {"aarch64": "qemu-aarch64", "arm64": "qemu-aarch64"}.get(machine,
                                                                         f"qemu-{machine}")
    binfmt = _read(os.path.join(binfmt_dir, qemu_name))
    if binfmt and binfmt.splitlines()[0].strip() == "enabled":
        evidence.append(f"{binfmt_dir}/{qemu_name} is registered and enabled")
    return {"emulated": bool(evidence), "emulator": emulator, "evidence": evidence}


def gpu_names() -> list[str]:
    names = []
    base = Path("/proc/driver/nvidia/gpus")
    with contextlib.suppress(OSError):
        for d in sorted(base.iterdir()):
            info = _cpuinfo_fields(_read(str(d / "information")))
            if info.get("model"):
                names.append(info["model"])
    model = _read("/proc/device-tree/model")
    if not names and model and "jetson" in model.lower():
        names.append(model)
    return names


def machine_info() -> dict:
    import psutil

    cpuinfo = _read("/proc/cpuinfo")
    flags = _cpuinfo_fields(cpuinfo).get("flags", "").split()
    affinity = None
    with contextlib.suppress(AttributeError, OSError):
        affinity = len(os.sched_getaffinity(0))
    load = None
    with contextlib.suppress(AttributeError, OSError):
        load = [round(v, 2) for v in os.getloadavg()]
    return {
        "arch": platform.machine(),
        "cpu_model": cpu_model(cpuinfo),
        "board": _read("/proc/device-tree/model"),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": affinity,
        "memory_total_bytes": int(psutil.virtual_memory().total),
        "gpus": gpu_names(),
        "os": platform.platform(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "virtualized": "hypervisor" in flags,
        "load_average": load,
        "emulation": detect_emulation(cpuinfo=cpuinfo),
    }


def busy(machine: dict) -> bool:
    """Other processes were competing for the CPU when bench started (1-minute load)."""
    load, cores = machine.get("load_average"), machine.get("cores_usable") or \
        machine.get("cores_logical") or 1
    return bool(load) and load[0] > BUSY_LOAD_PER_CORE * cores


def runtime_versions(runtime: str) -> dict:
    versions = {"numpy": np.__version__}
    with contextlib.suppress(Exception):
        import psutil

        versions["psutil"] = psutil.__version__
    if runtime == "onnxruntime":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    elif runtime == "tensorrt":
        import tensorrt

        versions["tensorrt"] = tensorrt.__version__
    return versions


def check_runtime_present(bundle) -> None:
    """A bundle for a runtime this machine lacks: one line that says what to do."""
    import importlib.util

    if bundle.runtime == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        raise BundleError(f"{bundle.path} is a TensorRT bundle (target {bundle.target}) but "
                          "TensorRT is not installed here; run it on the Jetson (JetPack's "
                          "python3-libnvinfer) or export for --target arm or x86")
    if bundle.runtime == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        raise BundleError(f"{bundle.path} needs ONNX Runtime, which is not installed here; "
                          "pip install 'edgempir[device]'")
    if bundle.runtime not in ("onnxruntime", "tensorrt"):
        raise BundleError(f"{bundle.path}: unknown runtime {bundle.runtime!r}; re-export the "
                          "bundle with this version of edgempir")


# --------------------------------------------------------------------------- soak
def soak(run: Callable[[np.ndarray], Any], x: np.ndarray, duration_s: float,
         window_s: float | None = None, progress: Progress = no_progress) -> dict:
    """Run continuously for ``duration_s``; latency percentiles and RSS per time window."""
    window_s = window_s or max(1.0, duration_s / 12.0)
    n_windows = max(1, int(round(duration_s / window_s)))
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
    from edgempir.targets.bundle import verify_bundle
    from edgempir.targets.runtime import open_model

    progress = progress or no_progress
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    warnings: list[dict] = []

    def mark(section: str, t0: float) -> None:
        timings[section] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    bundle = verify_bundle(bundle_path)
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

    # ---- latency, side by side
    t0 = time.perf_counter()
    rows = compare_latency({"ensemble": ens.run, base_name: base.run}, pool,
                           tuple(cfg.batch_sizes), cfg.warmup, cfg.repeats, cfg.time_cap_s,
                           progress)
    for r in rows:
        e, f = r["ensemble"], r[base_name]
        r["overhead_p50"] = e["p50_ms"] / f["p50_ms"] if f["p50_ms"] > 0 else None
        r["overhead_mean"] = e["mean_ms"] / f["mean_ms"] if f["mean_ms"] > 0 else None
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
        e, f = memory["ensemble"], memory[base_name]
        if e and f and e["peak_rss_bytes"] and f["peak_rss_bytes"]:
            memory["overhead_peak_rss"] = e["peak_rss_bytes"] / f["peak_rss_bytes"]
        if e and f and e["model_peak_bytes"] and f["model_peak_bytes"]:
            memory["overhead_model_peak"] = e["model_peak_bytes"] / f["model_peak_bytes"]
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
        "edgempir_version": edgempir_version(),
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
        "memory": _jsonable(memory),
        "accuracy": {"drift_threshold_points": DRIFT_THRESHOLD_POINTS,
                     "drift": any(s["drift"] for s in sets), "sets": sets},
        "square": square,
        "soak": soak_report,
        "warnings": warnings,
        "timings_s": timings,
    }
    return report


def edgempir_version() -> str:
    import edgempir

    version = getattr(edgempir, "__version__", None)
    if version is None:  # a namespace package shadows edgempir (a tests/edgempir/ on sys.path)
        from importlib.metadata import PackageNotFoundError, version as dist_version

        try:
            version = dist_version("edgempir")
        except PackageNotFoundError:
            version = "unknown"
    return version


def _eval_summary(info: dict | None) -> dict:
    info = info or {}
    return {k: _jsonable(info.get(k)) for k in ("protocol", "config", "eps", "adv_eps", "norm")}


def _warning(code: str, message: str) -> dict:
    return {"code": code, "message": message, "doc": f"docs/BENCH.md#{code}"}


def _jsonable(obj: Any) -> Any:
    """Make runtime info JSON-safe: numpy scalars, tuples, paths, non-finite floats."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# --------------------------------------------------------------------------- schema
# The JSON report's shape: a key maps to a type (or tuple of types), a nested schema dict,
# or a one-element list holding the schema of each list item. ``None`` in a tuple allows
# null. docs/BENCH.md describes every key; a test keeps the two in step.
_NUM = (int, float)
_LAT = {"batch_size": int, "repeats": int, "p50_ms": _NUM, "p90_ms": _NUM, "p99_ms": _NUM,
        "max_ms": _NUM, "mean_ms": _NUM, "throughput_img_s": (int, float, None)}
_MEM = {"which": str, "batch_size": int, "runs": int, "baseline_rss_bytes": int,
        "loaded_rss_bytes": int, "final_rss_bytes": int, "peak_rss_bytes": (int, None),
        "peak_rss_before_load_bytes": (int, None), "peak_reset": bool,
        "model_peak_bytes": (int, None),
        "runtime": (dict, None)}
_SQ = {"n": int, "clean_accuracy": _NUM, "robust_accuracy": _NUM, "success_rate": _NUM,
       "queries_mean_success": (int, float, None), "queries_median_success": (int, float, None),
       "queries_total": int, "iterations": int, "max_perturbation": _NUM, "seconds": _NUM}
SCHEMA_SPEC: dict = {
    "schema": str, "schema_version": int, "created": str, "edgempir_version": str,
    "bundle": {"path": str, "name": str, "target": str, "runtime": str, "verified": bool,
               "input_name": str, "input_shape": [int], "num_classes": int,
               "members": [{"index": int, "spec": str, "weight_bits": (int, None),
                            "act_bits": (int, None)}],
               "reference_member": int, "fp32_member": (int, None), "baseline_member": int,
               "eval": {"protocol": (str, None), "config": (str, None),
                        "eps": (int, float, list, None), "adv_eps": (int, float, None),
                        "norm": (str, None)}},
    "machine": {"arch": str, "cpu_model": (str, None), "board": (str, None),
                "cores_logical": (int, None), "cores_physical": (int, None),
                "cores_usable": (int, None), "memory_total_bytes": int, "gpus": [str],
                "os": str, "hostname": str, "python": str, "virtualized": bool,
                "load_average": ([_NUM], None),
                "emulation": {"emulated": bool, "emulator": (str, None), "evidence": [str]}},
    "runtime": {"name": str, "versions": dict, "providers": (list, None),
                "threads": (int, None), "info": dict},
    "settings": {"batch_sizes": [int], "warmup": int, "repeats": int, "time_cap_s": _NUM,
                 "threads": (int, None), "n": (int, None), "square_queries": int,
                 "square_n": int, "square_p_init": _NUM, "duration_s": _NUM, "memory": bool,
                 "seed": int},
    "latency": [{"batch_size": int, "ensemble": _LAT, "fp32_member": _LAT,
                 "overhead_p50": (int, float, None), "overhead_mean": (int, float, None)}],
    "memory": {"disk": {"ensemble_onnx_bytes": (int, None),
                        "members": [{"index": int, "spec": str, "file": str,
                                     "onnx_bytes": (int, None), "weight_bytes": (dict, None)}],
                        "ensemble_weight_bytes": {"true_bits": (int, None),
                                                  "stored": (int, None),
                                                  "float32": (int, None)},
                        "overhead_onnx": (int, float, None)},
               "ensemble": (_MEM, None), "fp32_member": (_MEM, None),
               "overhead_peak_rss": (int, float, None), "overhead_model_peak": (int, float, None)},
    "accuracy": {"drift_threshold_points": _NUM, "drift": bool,
                 "sets": [{"name": str, "description": str, "n": int, "n_set": int,
                           "same_set_as_host": bool, "deployed_accuracy": (int, float, None),
                           "host_accuracy": (int, float, None),
                           "drift_points": (int, float, None), "drift": bool,
                           "member_accuracy": [(int, float, None)],
                           "vote_agreement": (int, float, None)}]},
    "square": ({"attack": str, "norm": str, "eps": _NUM, "queries": int, "p_init": _NUM,
                "n": int, "seed": int, "loss": str, "success": str, "description": str,
                "ensemble": _SQ, "fp32_member": _SQ}, None),
    "soak": ({"duration_s": _NUM, "batch_size": int, "window_s": _NUM,
              "windows": [{"t_s": _NUM, "calls": int, "p50_ms": _NUM, "p99_ms": _NUM,
                           "max_ms": _NUM, "rss_bytes": int}],
              "latency_drift": (int, float, None), "latency_drift_flag": bool,
              "rss_growth_bytes": int, "rss_growth_bytes_per_min": (int, float, None),
              "rss_growth_flag": bool}, None),
    "warnings": [{"code": str, "message": str, "doc": str}],
    "timings_s": dict,
}


def validate_report(report: Any, spec: Any = None, where: str = "report") -> list[str]:
    """Problems of ``report`` against :data:`SCHEMA_SPEC` (empty list: valid).

    Every key of the schema is required (nullable ones may be null); unknown keys are
    errors too, so the docs cannot fall behind the code silently.
    """
    spec = SCHEMA_SPEC if spec is None else spec
    if where == "report" and isinstance(report, dict) and (
            report.get("schema") != SCHEMA or report.get("schema_version") != SCHEMA_VERSION):
        return [f"report: schema is {report.get('schema')!r} version "
                f"{report.get('schema_version')!r}, expected {SCHEMA!r} {SCHEMA_VERSION}"]
    return _check(report, spec, where)


def _check(value: Any, spec: Any, where: str) -> list[str]:
    if isinstance(spec, tuple) and any(isinstance(s, (dict, list)) for s in spec):
        if value is None and None in spec:
            return []
        inner = [s for s in spec if s is not None]
        errs = [_check(value, s, where) for s in inner]
        return [] if any(not e for e in errs) else errs[0]
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        errs = [f"{where}.{k}: missing" for k in spec if k not in value]
        errs += [f"{where}.{k}: not in the schema" for k in value if k not in spec]
        for k, s in spec.items():
            if k in value:
                errs += _check(value[k], s, f"{where}.{k}")
        return errs
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [e for i, v in enumerate(value) for e in _check(v, spec[0], f"{where}[{i}]")]
    types = spec if isinstance(spec, tuple) else (spec,)
    if value is None:
        return [] if None in types else [f"{where}: null not allowed"]
    py = tuple(t for t in types if t is not None)
    if isinstance(value, bool) and bool not in py:
        return [f"{where}: expected {'/'.join(t.__name__ for t in py)}, got bool"]
    if not isinstance(value, py):
        return [f"{where}: expected {'/'.join(t.__name__ for t in py)}, got "
                f"{type(value).__name__}"]
    return []


def schema_keys(spec: Any = None, prefix: str = "") -> list[str]:
    """Dotted paths of every key in the schema (``latency[].ensemble.p50_ms``)."""
    spec = SCHEMA_SPEC if spec is None else spec
    out = []
    if isinstance(spec, tuple):
        for s in spec:
            if isinstance(s, (dict, list)):
                out += schema_keys(s, prefix)
        return out
    if isinstance(spec, list):
        return schema_keys(spec[0], prefix + "[]")
    if isinstance(spec, dict):
        for k, s in spec.items():
            path = f"{prefix}.{k}" if prefix else k
            out.append(path)
            out += schema_keys(s, path)
    return out


# --------------------------------------------------------------------------- table
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f} MiB"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def format_report(r: dict) -> str:
    from edgempir.report import format_table

    b, m, rt = r["bundle"], r["machine"], r["runtime"]
    specs = "+".join(x["spec"] for x in b["members"])
    base = f"member {b['baseline_member']} ({b['members'][b['baseline_member']]['spec']})"
    emu = m["emulation"]
    out = [f"edgempir bench: {b['name']} (target {b['target']}, {specs}, vote), sha256 verified",
           f"machine: {m['arch']}, {m['cpu_model'] or 'unknown CPU'}, {m['cores_logical']} "
           f"logical cores ({m['cores_usable']} usable), "
           f"{m['memory_total_bytes'] / 2**30:.1f} GiB"
           + (f", GPU {', '.join(m['gpus'])}" if m["gpus"] else "")
           + (", virtual machine" if m["virtualized"] else "")
           + (f", load {m['load_average'][0]}" if m["load_average"] else ""),
           f"runtime: {rt['name']} {rt['versions'].get(rt['name'], '?')} ("
           + ", ".join(f"{k} {v}" for k, v in rt["versions"].items() if k != rt["name"])
           + f"), providers {', '.join(rt['providers'] or ['-'])}, threads "
           + (f"{rt['threads']}" if rt["threads"] else "runtime default (one per physical core)")
           + f", python {m['python']}"]
    if emu["emulated"]:
        out.append("EMULATED: " + "; ".join(emu["evidence"])
                   + " -- latency figures are the emulator's, not the device's")
    out.append("")

    rows = []
    for row in r["latency"]:
        for name, label in (("ensemble", f"ensemble ({specs})"), ("fp32_member", base)):
            s = row[name]
            rows.append([s["batch_size"], label, f"{s['p50_ms']:.3f}", f"{s['p90_ms']:.3f}",
                         f"{s['p99_ms']:.3f}", f"{s['max_ms']:.3f}",
                         f"{s['throughput_img_s']:.0f}" if s["throughput_img_s"] else "-",
                         _ratio(row["overhead_p50"]) if name == "ensemble" else "1.00x",
                         s["repeats"]])
    out.append(format_table(["batch", "model", "p50 ms", "p90 ms", "p99 ms", "max ms", "img/s",
                             "p50 vs fp32", "calls"], rows,
                            title="Latency after warm-up, single stream (ensemble and baseline "
                                  "alternating)"))
    out.append("")

    mem = r["memory"]
    d = mem["disk"]
    rows = []
    for name, label in (("ensemble", "ensemble"), ("fp32_member", base)):
        mm = mem[name]
        onnx = d["ensemble_onnx_bytes"] if name == "ensemble" else next(
            (x["onnx_bytes"] for x in d["members"] if x["index"] == b["baseline_member"]), None)
        rt_mem = (mm or {}).get("runtime") or {}
        rows.append([label, _mib((mm or {}).get("peak_rss_bytes")),
                     _mib((mm or {}).get("model_peak_bytes")), _mib(onnx),
                     ", ".join(f"{k} {v}" for k, v in rt_mem.items()) or "-"])
    w = d["ensemble_weight_bytes"]
    title = ("Memory (peak RSS of a fresh process running only that model at batch "
             f"{(mem['ensemble'] or {}).get('batch_size', '-')}; 'model' = peak minus the RSS "
             "after imports)")
    out.append(format_table(["model", "peak RSS", "model peak", "onnx on disk", "runtime"],
                            rows, title=title))
    out.append(f"ensemble vs baseline: peak RSS {_ratio(mem['overhead_peak_rss'])}, model peak "
               f"{_ratio(mem['overhead_model_peak'])}, onnx bytes {_ratio(d['overhead_onnx'])}; "
               f"weights of all members: {_mib(w['true_bits'])} at true bit widths, "
               f"{_mib(w['stored'])} as stored, {_mib(w['float32'])} as float32")
    out.append("")

    acc = r["accuracy"]
    rows = []
    for s in acc["sets"]:
        flag = "DRIFT" if s["drift"] else ("subset" if not s["same_set_as_host"] else "ok")
        rows.append([s["name"], s["n"], _pct(s["deployed_accuracy"]), _pct(s["host_accuracy"]),
                     "-" if s["drift_points"] is None else f"{s['drift_points']:+.2f}", flag,
                     " ".join(_pct(a) for a in s["member_accuracy"])])
    out.append(format_table(["set", "n", "deployed", "host (PyTorch)", "drift pts", "",
                             "members (deployed)"], rows,
                            title="Accuracy of the deployed engine (the vote in the graph) vs "
                                  f"the host's before export (drift flagged beyond "
                                  f"{acc['drift_threshold_points']} points)"))
    for s in acc["sets"]:
        out.append(f"  {s['name']}: {s['description']}")
    out.append("")

    sq = r["square"]
    if sq:
        rows = []
        for name, label in (("ensemble", f"ensemble ({specs}, vote)"), ("fp32_member", base)):
            s = sq[name]
            rows.append([label, _pct(s["clean_accuracy"]), _pct(s["robust_accuracy"]),
                         "-" if s["queries_median_success"] is None
                         else f"{s['queries_median_success']:.0f}", f"{s['seconds']:.1f} s"])
        out.append(format_table(["model", "clean", "under attack", "median queries to break",
                                 "time"], rows, title=f"Black-box robustness: {sq['description']}"))
        out.append("")

    sk = r["soak"]
    if sk:
        out.append(f"Soak: {sk['duration_s']:.0f} s at batch {sk['batch_size']}, "
                   f"{len(sk['windows'])} windows: p50 {sk['windows'][0]['p50_ms']:.3f} -> "
                   f"{sk['windows'][-1]['p50_ms']:.3f} ms (drift "
                   f"{100 * (sk['latency_drift'] or 0):+.1f}%"
                   f"{', FLAGGED' if sk['latency_drift_flag'] else ''}), RSS "
                   f"{_mib(sk['windows'][0]['rss_bytes'])} -> "
                   f"{_mib(sk['windows'][-1]['rss_bytes'])} (growth "
                   f"{sk['rss_growth_bytes'] / 2**20:+.1f} MiB"
                   f"{', FLAGGED' if sk['rss_growth_flag'] else ''})")
        out.append("")
    for wmsg in r["warnings"]:
        out.append(f"warning [{wmsg['code']}]: {wmsg['message']} (see {wmsg['doc']})")
    out.append(f"bench took {r['timings_s']['total']:.1f} s")
    return "\n".join(out)


# --------------------------------------------------------------------------- worker
def _main(argv: list[str]) -> int:
    if len(argv) >= 6 and argv[0] == "memory-worker":
        _, bundle_path, which, threads, batch, runs = argv[:6]
        try:
            out = memory_worker(bundle_path, which, int(threads) or None, int(batch), int(runs))
        except Exception as e:  # the parent turns this into one line
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(json.dumps(_jsonable(out)))
        return 0
    print("usage: python -m edgempir.targets.bench memory-worker BUNDLE WHICH THREADS BATCH RUNS",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
