"""Integer convolutions whose output stays float: ``DQ, DQ -> Conv`` into ``ConvInteger``.

ONNX Runtime fuses ``DequantizeLinear -> Conv -> QuantizeLinear`` into QLinearConv, which
needs the output re-quantized. In the EMPIR reference's networks (preset ``paper``) the last
quantized convolution feeds the full-precision classifier unquantized, so Brevitas' QCDQ
graph ends that convolution with no QuantizeLinear and ONNX Runtime runs it as a float Conv
on dequantized tensors. This pass rewrites it exactly:

    y = Conv(DQ(x_q, s_x, zx), DQ(w_q, s_w, zw))
      = (s_x * s_w) * ConvInteger(x_q, w_q, zx, zw)          (scalar scales, no bias)

so the convolution runs on integers (int32 accumulation) and only the scaling is float.
Convolutions followed by a QuantizeLinear (directly or through one Relu) are left to ONNX
Runtime's QLinearConv fusion; per-channel weight scales and biased convolutions are left
alone (none occurs where this pass applies).
"""
from __future__ import annotations

import collections

import numpy as np


def _constant(graph, name: str):
    """The value of an initializer or Constant-node output, else None."""
    from onnx import numpy_helper

    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def _feeds_quantize(name: str, consumers) -> bool:
    for n in consumers.get(name, []):
        if n.op_type == "QuantizeLinear":
            return True
        if n.op_type == "Relu" and any(c.op_type == "QuantizeLinear"
                                       for c in consumers.get(n.output[0], [])):
            return True
    return False


def convert_float_output_convs(proto) -> int:
    """Rewrite, in place, every eligible ``DQ, DQ -> Conv``; returns how many."""
    from onnx import TensorProto, helper

    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    rewritten = 0
    new_nodes = []
    for node in graph.node:
        dq = [producer.get(i) for i in node.input]
        if (node.op_type != "Conv" or len(node.input) != 2
                or any(d is None or d.op_type != "DequantizeLinear" or len(d.input) != 3
                       for d in dq)
                or _feeds_quantize(node.output[0], consumers)):
            new_nodes.append(node)
            continue
        scales = [_constant(graph, d.input[1]) for d in dq]
        if any(s is None or np.asarray(s).size != 1 for s in scales):
            new_nodes.append(node)
            continue
        tag = node.name or node.output[0]
        acc, acc_f, scale = f"{tag}/int32", f"{tag}/int32_as_float", f"{tag}/scale"
        new_nodes += [
            helper.make_node("ConvInteger", [dq[0].input[0], dq[1].input[0], dq[0].input[2],
                                             dq[1].input[2]], [acc], name=f"{tag}/ConvInteger",
                             **{a.name: helper.get_attribute_value(a) for a in node.attribute}),
            helper.make_node("Cast", [acc], [acc_f], to=TensorProto.FLOAT, name=f"{tag}/Cast"),
            helper.make_node("Mul", [dq[0].input[1], dq[1].input[1]], [scale],
                             name=f"{tag}/ScaleProduct"),
            helper.make_node("Mul", [acc_f, scale], [node.output[0]], name=f"{tag}/Rescale"),
        ]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(new_nodes)
        _drop_dead_dequantize(graph)
    return rewritten


def _drop_dead_dequantize(graph) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [n for n in graph.node
            if n.op_type != "DequantizeLinear" or any(o in used for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)
