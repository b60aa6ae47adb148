"""Device side of deployment: read, verify and run bundles; bench them (no torch).

Runs on a device with Python 3.10+, numpy, click, psutil and ONNX Runtime or TensorRT only.
Modules: bundle (format, verify, read), api (load_bundle for embedding), runtime
(open_model), onnxruntime, tensorrt (engine build + runtime), packing (storage format,
unpacking), profile (profile grammar), bench and its measurements (machine, memory, square,
report). Never imports torch, brevitas, onnx or edgempir.targets.host: import contracts in
pyproject.toml, checked in CI.
"""


def __getattr__(name):  # lazy, so `import edgempir.targets.device` loads no runtime
    if name in ("load_bundle", "DeployedEnsemble"):
        from edgempir.targets.device import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgempir.targets.device' has no attribute {name!r}")
