"""Deployment targets: export to bundles (host) and run bundles (device).

Import-light on purpose: ``bench`` and ``build`` run on devices with numpy and a runtime
only, so nothing here imports torch, brevitas or onnx; those live in the host-only
modules (onnx_export, graph, tensorrt_rules, export) and are imported when used.

Modules, by side:
  device: bundle (format, verify, read), runtime (open_model), onnxruntime, tensorrt
          (engine build + runtime)
  host:   profile (TOML target profiles), onnx_export (Brevitas QCDQ export, checks,
          validation), graph (ensemble graph with the vote), tensorrt_rules (checker + pass),
          export (the ``edgempir export`` pipeline)
"""
