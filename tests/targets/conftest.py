"""Fixtures for the targets tests: bundles exported from the shared ``evaluated_run``
(tests/conftest.py), and small members of every bit width."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shared import exported_once

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def arm_bundle(evaluated_run, tmp_path_factory) -> Path:
    return exported_once(tmp_path_factory, evaluated_run, "arm")


@pytest.fixture(scope="session")
def jetson_bundle(evaluated_run, tmp_path_factory) -> Path:
    return exported_once(tmp_path_factory, evaluated_run, "jetson")


BITS = tuple(range(2, 9))


def small_member(bits: int, seed: int = 0):
    """An untrained w{bits}a{bits} paper MNIST member with its activation scales initialised."""
    import torch

    from edgempir.members import MemberSpec
    from edgempir.models import build_model

    torch.manual_seed(seed + bits)
    model = build_model("mnist", MemberSpec(bits, bits), (1, 28, 28), 10)
    model.train()
    with torch.no_grad():  # two batches give the activation quantizers a runtime scale
        for _ in range(2):
            model(torch.rand(8, 1, 28, 28))
    return model.eval()


@pytest.fixture(scope="session")
def small_members(tmp_path_factory) -> dict:
    """bits -> (PyTorch model, exported ONNX path) for every bit width 2..8."""
    from edgempir.targets.host.onnx_export import export_member

    root = tmp_path_factory.mktemp("members")
    out = {}
    for bits in BITS:
        model = small_member(bits)
        path = root / f"w{bits}a{bits}.onnx"
        export_member(model, path, (1, 28, 28))
        out[bits] = (model, path)
    return out


@pytest.fixture(scope="session")
def u8s8_saturates() -> bool:
    """ONNX Runtime's x86 integer kernels without VNNI multiply u8 x s8 pairs into int16
    with saturation (VPMADDUBSW; ORT's quantization docs): 8-bit weights and activations
    overflow it (measured: 11-21% logit error, 86-98% top-1 agreement on AMD EPYC AVX2);
    7 bits and below stay within int16."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return "vnni" not in Path("/proc/cpuinfo").read_text()
    except OSError:
        return True


@pytest.fixture(scope="session")
def probe_inputs() -> np.ndarray:
    """Inputs for comparing runtimes: half on the 8-bit grid (camera images), half off it."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28)).astype(np.float32)
    x[:32] = np.round(x[:32] * 255) / 255
    return x
