"""TensorRT side of the ``jetson`` target: engine build, engine cache, runtime (device side).

Runs on the Jetson itself (Python 3.10, numpy + TensorRT's Python bindings from JetPack):
no torch, no onnx package. The host-side rule checker and rules pass live in
``edgempir.targets.host.tensorrt_rules``.

- Engines are built on the device that runs them, from the bundle's ONNX files, with
  explicit quantization taken from the graph's Q/DQ nodes (the rules pass made them
  TensorRT-legal). The network is strongly typed on both TensorRT 10 (flag) and 11
  (always): the Q/DQ nodes decide what runs in int8 and everything else stays fp32.
  TF32 is switched off where the flag exists so the float parts compute what was
  validated on the host.
- One optimisation profile covers batch sizes min..max from the profile's [tensorrt]
  table (the ONNX batch dimension is dynamic).
- Cache: ``<cache>/<bundle's manifest sha256[:16]>/<file stem>-<key>.plan`` where the key
  hashes TensorRT version, GPU name, the ONNX file's sha256 and the build settings; the
  timing cache is one file per TensorRT version and GPU; ``engines.json`` records what was
  built. An engine is reused only while all of that matches. The cache is never inside the
  bundle: an engine plan is opaque native code for TensorRT, so one that arrived with a
  bundle must not be loaded (SECURITY.md), and fleets mount bundles read-only. ``<cache>``
  is ``EDGEMPIR_ENGINE_CACHE`` or ``~/.cache/edgempir/engines``.
- Memory: TensorRT's Python API allocates nothing for I/O, so device buffers come from the
  CUDA runtime library that every JetPack ships (libcudart), through ctypes: no pycuda or
  cuda-python needed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgempir.contract import CLASS_IDS, MEMBER_LOGITS
from edgempir.errors import BundleError, EdgempirError
from edgempir.fsutil import atomic_write_bytes, atomic_write_json, sha256_file
from edgempir.validate import read_json

ENGINES_INDEX = "engines.json"


# ------------------------------------------------------------------ availability
def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return trt


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def require_tensorrt(bundle=None):
    trt = import_tensorrt()
    if trt is None:
        where = f"bundle {bundle.path} targets TensorRT" if bundle is not None else \
            "this command needs TensorRT"
        raise BundleError(f"{where}, which is not installed here; run it on the Jetson (JetPack "
                          "6 or 7 provides TensorRT's Python bindings: apt install "
                          "python3-libnvinfer) or export for --target arm/x86")
    major = tensorrt_major(trt)
    if major < 10:
        raise BundleError(f"TensorRT {trt.__version__} is too old: edgempir builds engines with "
                          "the TensorRT 10/11 API (JetPack 6 or 7); upgrade JetPack")
    return trt


# ------------------------------------------------------------------ CUDA runtime (ctypes)
class Cuda:
    """The few CUDA runtime calls we need, through ctypes on libcudart."""

    H2D, D2H = 1, 2

    def __init__(self):
        self.lib = self._load()
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p

    @staticmethod
    def _load():
        names = [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.13",
                 "libcudart.so.12", "/usr/local/cuda/lib64/libcudart.so"]
        for name in [n for n in names if n]:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
        raise BundleError("the CUDA runtime library (libcudart) was not found; install JetPack's "
                          "CUDA runtime or add /usr/local/cuda/lib64 to LD_LIBRARY_PATH")

    def check(self, status: int, what: str) -> None:
        if status != 0:
            msg = self.lib.cudaGetErrorString(status).decode(errors="replace")
            raise BundleError(f"CUDA {what} failed: {msg} (error {status})")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))),
                   "cudaMalloc")
        return int(ptr.value or 0)

    def free(self, ptr: int) -> None:
        if ptr:
            self.lib.cudaFree(ctypes.c_void_p(ptr))

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def destroy_stream(self, s: int) -> None:
        if s:
            self.lib.cudaStreamDestroy(ctypes.c_void_p(s))

    def memcpy(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self.check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src),
                                            ctypes.c_size_t(nbytes), ctypes.c_int(kind),
                                            ctypes.c_void_p(stream)), "cudaMemcpyAsync")

    def sync(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)),
                   "cudaStreamSynchronize")

    def mem_info(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.check(self.lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)),
                   "cudaMemGetInfo")
        return int(free.value), int(total.value)

    def device_name(self) -> str:
        dev = ctypes.c_int()
        self.check(self.lib.cudaGetDevice(ctypes.byref(dev)), "cudaGetDevice")
        # cudaDeviceProp starts with char name[256]; a generous buffer holds any version's struct
        buf = ctypes.create_string_buffer(16384)
        fn = getattr(self.lib, "cudaGetDeviceProperties_v2", None) or \
            self.lib.cudaGetDeviceProperties
        self.check(fn(buf, dev), "cudaGetDeviceProperties")
        return buf.raw[:256].split(b"\x00", 1)[0].decode(errors="replace").strip()


_CUDA = None


def cuda() -> Cuda:
    global _CUDA
    if _CUDA is None:
        _CUDA = Cuda()
    return _CUDA


# ------------------------------------------------------------------ engine cache
def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "gpu"


def build_settings(profile: dict, input_shape) -> dict:
    t = dict(profile.get("tensorrt", {}))
    return {"min_batch": int(t.get("min_batch", 1)), "opt_batch": int(t.get("opt_batch", 1)),
            "max_batch": int(t.get("max_batch", 64)),
            "workspace_mib": int(t.get("workspace_mib", 1024)),
            "builder_optimization_level": int(t.get("builder_optimization_level", 3)),
            "tf32": bool(t.get("tf32", False)), "input_shape": list(input_shape)}


def engine_key(trt_version: str, gpu: str, onnx_sha: str, settings: dict) -> str:
    blob = json.dumps({"trt": trt_version, "gpu": gpu, "onnx": onnx_sha, "settings": settings},
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def timing_cache_path(engines: Path, trt_version: str, gpu: str) -> Path:
    return engines / f"timing-trt{trt_version}-{_slug(gpu)}.cache"


ENGINE_CACHE_ENV = "EDGEMPIR_ENGINE_CACHE"


def engine_cache_dir(bundle, env: dict | None = None) -> Path:
    """This bundle's engine cache folder (outside the bundle, keyed by its manifest)."""
    environ: Mapping[str, str] = os.environ if env is None else env
    root = environ.get(ENGINE_CACHE_ENV) or str(Path.home() / ".cache" / "edgempir" / "engines")
    # the manifest's hash pins the bundle's exact files, so two bundles never share engines
    return Path(root) / sha256_file(bundle.path / "manifest.json")[:16]


def _read_index(engines: Path) -> dict:
    try:
        data = read_json(engines / ENGINES_INDEX)
        return data if isinstance(data, dict) and isinstance(data.get("engines"), dict) else \
            {"engines": {}}
    except (OSError, EdgempirError):
        return {"engines": {}}


def build_engine(bundle, onnx_path: Path, *, force: bool = False, echo=None) -> Path:
    """Build (or reuse) the engine for one ONNX file of the bundle; returns the plan's path."""
    trt = require_tensorrt(bundle)
    echo = echo or (lambda s: None)
    gpu = cuda().device_name()
    settings = build_settings(bundle.profile, bundle.input_shape)
    onnx_sha = sha256_file(onnx_path)
    key = engine_key(trt.__version__, gpu, onnx_sha, settings)
    engines = engine_cache_dir(bundle)
    try:
        engines.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BundleError(f"cannot create the engine cache {engines} ({e.strerror}); set "
                          f"{ENGINE_CACHE_ENV} to a writable folder") from None
    plan = engines / f"{onnx_path.stem}-{key}.plan"
    index = _read_index(engines)
    entry = index["engines"].get(plan.name)
    if not force and plan.is_file() and entry and entry.get("sha256") == sha256_file(plan):
        echo(f"reusing {plan.name} (TensorRT {trt.__version__}, {gpu})")
        return plan

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if tensorrt_major(trt) >= 11:
        network = builder.create_network(0)  # always strongly typed in TensorRT 11
    else:
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: "
                          f"{errors.splitlines()[0] if errors else 'unknown error'}; re-export "
                          "the bundle with --target jetson")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings["workspace_mib"] << 20)
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = settings["builder_optimization_level"]
    if not settings["tf32"] and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    c, h, w = bundle.input_shape
    prof = builder.create_optimization_profile()
    prof.set_shape(bundle.input_name, (settings["min_batch"], c, h, w),
                   (settings["opt_batch"], c, h, w), (settings["max_batch"], c, h, w))
    config.add_optimization_profile(prof)
    tc_path = timing_cache_path(engines, trt.__version__, gpu)
    cache = config.create_timing_cache(tc_path.read_bytes() if tc_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BundleError(f"TensorRT {trt.__version__} failed to build an engine for "
                          f"{onnx_path.name} on {gpu}; rerun with TensorRT's verbose log "
                          "(EDGEMPIR_TRT_VERBOSE=1) to see why")
    atomic_write_bytes(plan, bytes(serialized))
    atomic_write_bytes(tc_path, bytes(config.get_timing_cache().serialize()))
    index = _read_index(engines)
    index["engines"][plan.name] = {
        "onnx": onnx_path.relative_to(bundle.path).as_posix(), "onnx_sha256": onnx_sha,
        "tensorrt": trt.__version__, "gpu": gpu, "settings": settings,
        "sha256": sha256_file(plan), "build_seconds": round(time.perf_counter() - t0, 3),
        "timing_cache": tc_path.name}
    atomic_write_json(engines / ENGINES_INDEX, index)
    echo(f"built {plan.name} in {time.perf_counter() - t0:.1f} s (TensorRT {trt.__version__}, "
         f"{gpu})")
    return plan


def build_all(bundle, *, force: bool = False, echo=None) -> list[Path]:
    """Build the ensemble engine and one engine per member."""
    files = [bundle.ensemble_file] + [bundle.member_file(i) for i in range(len(bundle.members))]
    return [build_engine(bundle, f, force=force, echo=echo) for f in files]


# ------------------------------------------------------------------ runtime
class TrtModel:
    """Runs one engine: ``run(x) -> (class_ids int64 [B], logits)`` like the ORT model."""

    def __init__(self, plan: Path, kind: str, input_name: str, max_batch: int):
        trt = require_tensorrt()
        self.trt = trt
        self.kind = kind
        self.plan = plan
        self.input_name = input_name
        self.max_batch = max_batch
        self.cuda = cuda()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BundleError(f"TensorRT {trt.__version__} cannot load {plan.name} (built by "
                              "another TensorRT or GPU?); rebuild it with 'edgempir build --force'")
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in self.names
                        if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)

    @classmethod
    def open(cls, bundle, onnx_path: Path, kind: str) -> TrtModel:
        plan = build_engine(bundle, onnx_path)  # reuses the cached engine when it matches
        settings = build_settings(bundle.profile, bundle.input_shape)
        return cls(plan, kind, bundle.input_name, settings["max_batch"])

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            self.cuda.free(ptr)
            ptr = self.cuda.malloc(nbytes)
            self.buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        host = self.run_outputs(x)
        if self.kind == "ensemble":
            return (host[CLASS_IDS].astype(np.int64),
                    host[MEMBER_LOGITS].astype(np.float32))
        logits = host[self.outputs[0]].astype(np.float32)
        return logits.argmax(axis=1).astype(np.int64), logits

    def run_outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the engine by name (the ensemble's ``accepted`` included)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[0] > self.max_batch:  # the engine's profile ends at max_batch: split
            parts = [self.run_outputs(x[s:s + self.max_batch])
                     for s in range(0, len(x), self.max_batch)]
            return {name: np.concatenate([p[name] for p in parts],
                                         axis=1 if name == MEMBER_LOGITS else 0)
                    for name in parts[0]}
        trt, ctx = self.trt, self.context
        ctx.set_input_shape(self.input_name, tuple(x.shape))
        ptr = self._buffer(self.input_name, x.nbytes)
        ctx.set_tensor_address(self.input_name, ptr)
        self.cuda.memcpy(ptr, x.ctypes.data, x.nbytes, Cuda.H2D, self.stream)
        host = {}
        for name in self.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            out = np.empty(shape, dtype=dtype)
            optr = self._buffer(name, max(out.nbytes, 1))
            ctx.set_tensor_address(name, optr)
            host[name] = (out, optr)
        if not ctx.execute_async_v3(self.stream):
            raise BundleError(f"TensorRT failed to run {self.plan.name}")
        for out, optr in host.values():
            self.cuda.memcpy(out.ctypes.data, optr, out.nbytes, Cuda.D2H, self.stream)
        self.cuda.sync(self.stream)
        return {name: out for name, (out, _) in host.items()}

    def info(self) -> dict:
        return {"runtime": "tensorrt", "version": self.trt.__version__,
                "providers": ["TensorRT"], "threads": None, "device": self.cuda.device_name(),
                "model": self.plan.name}

    def memory_info(self) -> dict | None:
        engine = self.engine
        size = getattr(engine, "device_memory_size_v2", None)
        if size is None:
            size = getattr(engine, "device_memory_size", None)
        free, total = self.cuda.mem_info()
        return {"engine_device_memory_bytes": int(size) if size is not None else None,
                "io_buffer_bytes": sum(b for _, b in self.buffers.values()),
                "gpu_free_bytes": free, "gpu_total_bytes": total,
                "plan_bytes": os.path.getsize(self.plan)}

    def __del__(self):
        try:
            for ptr, _ in self.buffers.values():
                self.cuda.free(ptr)
            self.cuda.destroy_stream(self.stream)
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown: CUDA may be gone
            pass
