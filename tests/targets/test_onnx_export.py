"""Brevitas QCDQ export: weights as initializers, and integer kernels in ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

BITS = tuple(range(2, 9))  # every bit width the issue names
from edgempir.targets.device.onnxruntime import make_session
from edgempir.targets.host.onnx_export import (
    INTEGER_OPS,
    ExportError,
    check_integer_kernels,
    expected_layers,
    kernel_counts,
    optimized_graph,
)


@pytest.mark.parametrize("bits", BITS)
def test_quantized_member_runs_integer_kernels(small_members, bits):
    model, path = small_members[bits]
    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["input"]  # weights are initializers
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    opt = optimized_graph(path)  # what ONNX Runtime really runs (optimized_model_filepath)
    ops = [n.op_type for n in opt.graph.node]
    assert "Conv" not in ops and "FusedConv" not in ops, f"float Conv left in w{bits}a{bits}: {ops}"
    layers = expected_layers(model)
    assert layers["quantized"] == 3
    assert sum(ops.count(op) for op in INTEGER_OPS) == layers["quantized"]
    check_integer_kernels(kernel_counts(path), layers, INTEGER_OPS, f"w{bits}a{bits}")


# Measured (AMD EPYC AVX2, torch 2.13, onnxruntime 1.32, 3 member seeds x 2 probe sets,
# 1 and 2 ORT threads identical): max |ORT - PyTorch| / max |PyTorch| was <= 4.0e-7 at 2-4
# bits (only the final float dequantize rounds differently: the integer arithmetic is
# exact), <= 1.42e-2 at 5-7 bits (a one-step requantization rounding difference at a few
# activations) with 100% top-1 agreement; at 8 bits 11-19% with 86-98% agreement, which is
# the u8s8 saturation of conftest.u8s8_saturates (unoptimized, float Conv: within 0.12%).
LOGIT_TOLERANCE = {2: 1e-6, 3: 1e-6, 4: 1e-6, 5: 0.03, 6: 0.03, 7: 0.03, 8: 0.03}
MIN_AGREEMENT = 0.995  # export's own floor: with 64 probes, every decision must agree


@pytest.mark.parametrize("bits", BITS)
def test_export_computes_what_pytorch_computes(small_members, probe_inputs, bits,
                                               u8s8_saturates):
    model, path = small_members[bits]
    with torch.no_grad():
        ref = model(torch.from_numpy(probe_inputs)).numpy()
    out = make_session(path).run(None, {"input": probe_inputs})[0]
    error = np.abs(out - ref).max() / np.abs(ref).max()
    agreement = (out.argmax(1) == ref.argmax(1)).mean()
    if bits == 8 and u8s8_saturates and error > LOGIT_TOLERANCE[bits]:
        pytest.xfail(f"ORT's x86 u8s8 kernels without VNNI saturate at 8 bits: logit error "
                     f"{100 * error:.1f}%, top-1 agreement {100 * agreement:.1f}%")
    assert error <= LOGIT_TOLERANCE[bits], f"w{bits}a{bits}: {error:.3g} of the logit scale"
    assert agreement >= MIN_AGREEMENT


def test_float_conv_in_quantized_member_is_refused():
    counts = {"QLinearConv": 2, "Conv": 1, "MatMul": 1}
    with pytest.raises(ExportError, match="1 float Conv"):
        check_integer_kernels(counts, {"quantized": 3}, INTEGER_OPS, "member 0 (w2a4)")
    with pytest.raises(ExportError, match="only 2 of 3"):
        check_integer_kernels({"QLinearConv": 2}, {"quantized": 3}, INTEGER_OPS, "m")
    check_integer_kernels({"Conv": 3}, {"quantized": 0}, INTEGER_OPS, "fp32 member")
