"""Host side of deployment: export a run to a bundle (torch, brevitas, onnx).

Modules: export (the ``edgempir export`` pipeline, as named stages), passes (the registries
of graph passes and graph rule sets), onnx_export (Brevitas QCDQ export, checks), graph
(the one-graph ensemble with the vote), tensorrt_rules (TensorRT's rules, the checker),
tensorrt_qdq (the pass that meets them), profiles (TOML target profiles), pack (packed
2/4-bit weights), validation (ONNX Runtime against PyTorch), manifest (the bundle's
manifest.json as export writes it).
May import the device side; the device side never imports this package (import contracts
in pyproject.toml, checked in CI).
"""
