"""Peak memory of one model, measured in a fresh child process (device side).

RSS is a per-process high-water mark, so each model is loaded alone in a child
(``python -m edgempir.targets.device.memory memory-worker ...``): measured in one process the
ensemble's peak would hide the fp32 member's. numpy and psutil only; Python 3.10 syntax.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgempir.targets.device.machine import read_text as _read
from edgempir.targets.device.report import jsonable as _jsonable


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
    from edgempir.targets.device.bundle import verify_bundle
    from edgempir.targets.device.runtime import open_model

    bundle = verify_bundle(bundle_path)
    model_which: str | int = which if which == "ensemble" else int(which)
    # import the runtime library first: its tens of MiB are the same for any model and
    # would otherwise be counted as the model's
    import importlib

    with contextlib.suppress(ImportError):
        importlib.import_module(bundle.runtime)
    import edgempir.targets.device.onnxruntime  # noqa: F401
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
    cmd = [sys.executable, "-m", "edgempir.targets.device.memory", "memory-worker", str(bundle_path),
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


def _main(argv: list[str]) -> int:
    if len(argv) >= 6 and argv[0] == "memory-worker":
        _, bundle_path, which, threads, batch, runs = argv[:6]
        try:
            out = memory_worker(bundle_path, which, int(threads) or None, int(batch), int(runs))
        except Exception as e:  # noqa: BLE001 - the parent turns this into one line
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(json.dumps(_jsonable(out)))
        return 0
    print("usage: python -m edgempir.targets.device.memory memory-worker BUNDLE WHICH THREADS BATCH RUNS",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
