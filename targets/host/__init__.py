"""Host side of deployment: export a run to a bundle (torch, brevitas, onnx).

Modules: export (the ``edgempir export`` pipeline), onnx_export (Brevitas QCDQ export,
checks, validation), graph (the one-graph ensemble with the vote), tensorrt_rules
(checker + pass), profiles (TOML target profiles), pack (packed 2/4-bit weights).
May import the device side; the device side never imports this package (import contracts
in pyproject.toml, checked in CI).
"""
