"""Brevitas QCDQ export: weights as initializers, and integer kernels in ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

BITS = tuple(range(2, 9))  # every bit width the issue names
from edgempir.targets.host.onnx_export import (
    INTEGER_OPS,
    ExportError,
    check_integer_kernels,
    expected_layers,
    kernel_counts,
    optimized_graph,
)
from edgempir.targets.device.onnxruntime import make_session


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


@pytest.mark.parametrize("bits", BITS)
def test_export_computes_what_pytorch_computes(small_members, probe_inputs, bits):
    model, path = small_members[bits]
    with torch.no_grad():
        ref = model(torch.from_numpy(probe_inputs)).numpy()
    out = make_session(path).run(None, {"input": probe_inputs})[0]
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() <= 0.05 * scale
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_float_conv_in_quantized_member_is_refused():
    counts = {"QLinearConv": 2, "Conv": 1, "MatMul": 1}
    with pytest.raises(ExportError, match="1 float Conv"):
        check_integer_kernels(counts, {"quantized": 3}, INTEGER_OPS, "member 0 (w2a4)")
    with pytest.raises(ExportError, match="only 2 of 3"):
        check_integer_kernels({"QLinearConv": 2}, {"quantized": 3}, INTEGER_OPS, "m")
    check_integer_kernels({"Conv": 3}, {"quantized": 0}, INTEGER_OPS, "fp32 member")
