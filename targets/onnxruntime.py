"""ONNX Runtime side of the ``arm`` and ``x86`` targets (device side: numpy + onnxruntime).

The session follows the target profile's ``[onnxruntime]`` table: execution providers,
thread counts and graph optimisation level. :func:`write_optimized_graph` saves the graph
ONNX Runtime actually runs (after its QDQ fusions), which is how tests and ``export``
check that the low-bit convolutions became integer kernels (QLinearConv, ...).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgempir.errors import BundleError

OPT_LEVELS = ("disable", "basic", "extended", "all")


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BundleError("onnxruntime is not installed here; install it with "
                          "'pip install onnxruntime' (or 'pip install edgempir[device]')") from None
    return onnxruntime


def session_options(ort_profile: dict | None = None, threads: int | None = None,
                    optimized_model_filepath: str | os.PathLike | None = None):
    ort = _ort()
    prof = ort_profile or {}
    so = ort.SessionOptions()
    level = prof.get("graph_optimization_level", "all")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    intra = threads if threads is not None else prof.get("intra_op_threads", 0)
    if intra:
        so.intra_op_num_threads = int(intra)
    inter = prof.get("inter_op_threads", 0)
    if inter:
        so.inter_op_num_threads = int(inter)
    # warnings (e.g. "optimized model is hardware specific") go to the log, not the user's tty
    so.log_severity_level = 3
    if optimized_model_filepath is not None:
        so.optimized_model_filepath = str(optimized_model_filepath)
    return so


def make_session(model_path: str | os.PathLike, ort_profile: dict | None = None,
                 threads: int | None = None, providers: list | None = None,
                 optimized_model_filepath: str | os.PathLike | None = None):
    ort = _ort()
    prof = ort_profile or {}
    wanted = list(providers or prof.get("providers") or ["CPUExecutionProvider"])
    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        raise BundleError(f"ONNX Runtime here lacks execution provider(s) {', '.join(missing)} "
                          f"(available: {', '.join(available)}); install an onnxruntime build "
                          "with them or pass --providers")
    so = session_options(prof, threads, optimized_model_filepath)
    try:
        return ort.InferenceSession(str(model_path), so, providers=wanted)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad graphs
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BundleError(f"ONNX Runtime cannot load {model_path} ({first}); re-export the "
                          "bundle") from None


def write_optimized_graph(model_path: str | os.PathLike, out_path: str | os.PathLike,
                          ort_profile: dict | None = None, threads: int | None = 1) -> Path:
    """Save the graph ONNX Runtime runs after its optimisations (for inspection only)."""
    make_session(model_path, ort_profile, threads=threads, optimized_model_filepath=out_path)
    return Path(out_path)


class OrtModel:
    """One ONNX Runtime session over an ensemble or member file of a bundle."""

    def __init__(self, model_path: Path, kind: str, ort_profile: dict | None = None,
                 threads: int | None = None, providers: list | None = None,
                 input_name: str = "input"):
        self.path = Path(model_path)
        self.kind = kind  # "ensemble" or "member"
        self.input_name = input_name
        self.threads = threads
        self.session = make_session(self.path, ort_profile, threads, providers)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = self.session.run(None, {self.input_name: x})
        named = dict(zip(self.output_names, outs))
        if self.kind == "ensemble":
            return (np.asarray(named["class_ids"], dtype=np.int64),
                    np.asarray(named["member_logits"], dtype=np.float32))
        logits = np.asarray(outs[0], dtype=np.float32)
        return logits.argmax(axis=1).astype(np.int64), logits

    def info(self) -> dict:
        ort = _ort()
        so = self.session.get_session_options()
        return {"runtime": "onnxruntime", "version": ort.__version__,
                "providers": self.session.get_providers(),
                "threads": so.intra_op_num_threads or self.threads or 0,
                "device": ort.get_device(), "model": self.path.name}

    def memory_info(self) -> dict | None:
        return None  # ONNX Runtime's CPU provider does not report its own allocations
