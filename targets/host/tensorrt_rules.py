"""Host side: TensorRT's ONNX rules for Q/DQ graphs and their checker.

TensorRT 10/11 (onnx-tensorrt operator notes) take QuantizeLinear only with zero point 0
and a signed (INT8) output, DequantizeLinear only on INT8/FP8/INT4 (no UINT8, no INT32
bias), Clip only on float tensors, no 2-bit types, INT4 for weights only, and constant
scales. The early-exit vote (vote = "early-exit") adds NonZero, Gather on its indices and
ScatterND, which TensorRT 10/11 take (data-dependent shapes inside the engine; the outputs
keep static shapes); the checker requires ScatterND without a reduction. Brevitas' QCDQ
export breaks several of these: unsigned activations (uint8, zero
point 0), an integer Clip between QuantizeLinear and DequantizeLinear for k < 8 bits, and
an integer Clip on constant weights.

The pass that rewrites a member graph to meet them is :mod:`~edgempir.targets.host.tensorrt_qdq`
(registered by name in passes.py, as this checker is).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgempir.targets.host.onnx_export import ExportError
from edgempir.targets.host.tensorrt_qdq import PASS, PassReport, tensorrt_qdq_pass

__all__ = ["PASS", "RULES", "PassReport", "Violation", "check_rules", "enforce_rules",
           "tensorrt_qdq_pass"]
RULES = "tensorrt"


def _value_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for coll in (inferred.graph.input, inferred.graph.value_info, inferred.graph.output):
        for v in coll:
            types[v.name] = v.type.tensor_type.elem_type
    for t in inferred.graph.initializer:
        types[t.name] = t.data_type
    return types


# ------------------------------------------------------------------ the rules
@dataclass
class Violation:
    node: str
    op: str
    rule: str

    def __str__(self) -> str:
        return f"{self.op} node {self.node!r}: {self.rule}"


def check_rules(model) -> list[Violation]:
    """Every place where ``model`` breaks TensorRT's ONNX Q/DQ rules (empty list: none)."""
    from onnx import TensorProto

    types = _value_types(model)
    inits = {t.name for t in model.graph.initializer}
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq_ok = {TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4}
    narrow = {TensorProto.INT4, TensorProto.UINT4}
    out: list[Violation] = []
    for n in model.graph.node:
        name = n.name or n.output[0]
        if n.op_type == "QuantizeLinear":
            if len(n.input) < 3 or not n.input[2]:
                out.append(Violation(name, n.op_type, "no zero point: the output would be "
                                     "UINT8; TensorRT needs an INT8 zero point of 0"))
                continue
            zp = n.input[2]
            if zp not in inits:
                out.append(Violation(name, n.op_type, "zero point is not a constant"))
            elif types.get(zp) != TensorProto.INT8:
                t = TensorProto.DataType.Name(types.get(zp, 0))
                out.append(Violation(name, n.op_type, f"output type {t}: TensorRT quantizes "
                                     "activations to signed INT8 only"))
            elif np.any(arrays[zp] != 0):
                out.append(Violation(name, n.op_type, "zero point is not 0"))
            if n.input[1] not in inits:
                out.append(Violation(name, n.op_type, "scale is not a constant"))
        elif n.op_type == "DequantizeLinear":
            t_in = types.get(n.input[0])
            if t_in not in dq_ok:
                t = TensorProto.DataType.Name(t_in or 0)
                what = "an INT32 bias dequantize" if t_in == TensorProto.INT32 else f"input {t}"
                out.append(Violation(name, n.op_type, f"{what}: TensorRT dequantizes INT8, FP8 "
                                     "or INT4 only"))
            elif t_in in narrow and n.input[0] not in inits:
                out.append(Violation(name, n.op_type, "INT4 activations: TensorRT takes INT4 "
                                     "for weights only"))
            if len(n.input) > 2 and n.input[2]:
                zp = n.input[2]
                if zp not in inits or np.any(arrays[zp] != 0):
                    out.append(Violation(name, n.op_type, "zero point is not a constant 0"))
            if n.input[1] not in inits:
                out.append(Violation(name, n.op_type, "scale is not a constant"))
        elif n.op_type == "ScatterND":
            # the early-exit vote's scatter (targets/host/graph.py); TensorRT's ScatterND
            # layer is the plain (reduction none) form
            reduction = next((a.s.decode() for a in n.attribute if a.name == "reduction"),
                             "none")
            if reduction != "none":
                out.append(Violation(name, n.op_type, f"reduction {reduction!r}: the "
                                     "early-exit graph scatters with reduction none only"))
        elif n.op_type == "Clip":
            t_in = types.get(n.input[0])
            if t_in not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
                t = TensorProto.DataType.Name(t_in or 0)
                out.append(Violation(name, n.op_type, f"Clip on a {t} tensor: TensorRT clips "
                                     "float tensors only"))
    return out


def enforce_rules(model, what: str) -> None:
    """Raise a one-line ExportError naming the first offending node."""
    bad = check_rules(model)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ExportError(f"{what} breaks TensorRT's ONNX rules: {bad[0]}{more}; "
                          "the jetson export refuses it")
