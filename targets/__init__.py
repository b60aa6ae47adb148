"""Deployment targets, in two sub-packages whose names say where their code runs.

- :mod:`edgempir.targets.host`: export a run to a bundle (torch, brevitas, onnx).
- :mod:`edgempir.targets.device`: read, verify, run and bench a bundle (numpy and ONNX
  Runtime or TensorRT only, Python 3.10+).
- ``profiles/*.toml``: the built-in target profiles (data).

The host side may import the device side, never the reverse: the import contracts in
pyproject.toml say so and CI checks them (``lint-imports``).
"""
