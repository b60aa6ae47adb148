"""Device side of deployment: read, verify and run bundles; bench them (no torch).

Runs on a device with Python 3.10+, numpy, click, psutil and ONNX Runtime or TensorRT only.
Modules: bundle (format, verify, read; its field checks in manifest_checks, the ONNX byte
walk in onnx_check), api (load_bundle for embedding), runtime (the runtime registry,
open_model), onnxruntime, tensorrt (engine build + runtime), packing (storage format,
unpacking), profile (profile grammar), bench (the driver and one function per
measurement) and what it uses (timing, accuracy, machine, memory, square, report).
Never imports torch, brevitas, onnx or edgempir.targets.host: import contracts in
pyproject.toml, checked in CI.
"""


def __getattr__(name):  # lazy, so `import edgempir.targets.device` loads no runtime
    if name in ("load_bundle", "DeployedEnsemble"):
        from edgempir.targets.device import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgempir.targets.device' has no attribute {name!r}")
