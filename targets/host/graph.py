"""Host side graph work with the onnx package: one ONNX graph for the whole ensemble.

``merge_ensemble(members, reference)`` puts every member's graph side by side on the one
shared input and appends the paper's vote in ONNX ops, so one ONNX Runtime session or one
TensorRT engine runs the deployed decision:

    input [B, C, H, W] --> member 0 --> logits_0 [B, K] --+
                      \\-> member 1 --> logits_1 [B, K] --+--> member_logits [M, B, K] (float32)
                       \\-> ...                           |
                                                          +--> vote --> class_ids [B] (int64)

The vote (same rule as edgempir.vote): each member's argmax; a class with a strict majority
of votes (> M/2) wins, otherwise the reference member's argmax. Expressed with ArgMax,
Equal against a class-index constant, Cast, ReduceSum, ReduceMax, Greater, Gather and
Where: ops that ONNX Runtime and TensorRT both take (no OneHot, no loops).

Every name inside member i (nodes, values, initializers) gets the prefix ``m{i}/`` so the
branches cannot collide; the shared input keeps its name.

``add_accepted(model, policy)`` then appends the reject policy's ``accepted`` output (bool
[B]; docs/BUNDLE.md), computed from ``member_logits`` and ``class_ids`` only.
"""
from __future__ import annotations

import numpy as np

from edgempir.contract import ACCEPTED, CLASS_IDS, INPUT_NAME, MEMBER_LOGITS



def _prefix_graph(graph, prefix: str, keep: set[str]):
    """Rename every value, node and initializer of ``graph`` in place (except ``keep``)."""

    def ren(name: str) -> str:
        return name if (not name or name in keep) else prefix + name

    for n in graph.node:
        n.name = prefix + (n.name or n.op_type)
        n.input[:] = [ren(x) for x in n.input]
        n.output[:] = [ren(x) for x in n.output]
    for t in graph.initializer:
        t.name = ren(t.name)
    for coll in (graph.input, graph.output, graph.value_info):
        for v in coll:
            v.name = ren(v.name)


def merge_ensemble(members: list, reference: int, num_classes: int, opset: int = 13,
                   producer: str = "edgempir"):
    """Members (ModelProto, one input ``input`` and one output [B, K]) -> one ModelProto."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not members:
        raise ValueError("an ensemble needs members")
    m_count = len(members)
    nodes, inits, value_info = [], [], []
    logits = []
    first_input = None
    for i, proto in enumerate(members):
        g = onnx.GraphProto()
        g.CopyFrom(proto.graph)
        if [x.name for x in g.input] != [INPUT_NAME] or len(g.output) != 1:
            raise ValueError(f"member {i}: expected one input {INPUT_NAME!r} and one output")
        if first_input is None:
            first_input = onnx.ValueInfoProto()
            first_input.CopyFrom(g.input[0])
        _prefix_graph(g, f"m{i}/", {INPUT_NAME})
        nodes.extend(g.node)
        inits.extend(g.initializer)
        value_info.extend(g.value_info)
        out = g.output[0].name
        unsq = f"vote/logits_{i}"
        nodes.append(helper.make_node("Unsqueeze", [out, "vote/axis0"], [unsq],
                                      name=f"vote/unsqueeze_{i}"))
        logits.append(unsq)

    inits += [numpy_helper.from_array(np.array([0], dtype=np.int64), "vote/axis0"),
              numpy_helper.from_array(np.arange(num_classes, dtype=np.int64)
                                      .reshape(1, 1, num_classes), "vote/classes"),
              numpy_helper.from_array(np.array(m_count / 2.0, dtype=np.float32),
                                      "vote/half_members"),
              numpy_helper.from_array(np.array(reference, dtype=np.int64), "vote/reference")]
    nodes += [
        helper.make_node("Concat", logits, [MEMBER_LOGITS], axis=0, name="vote/concat"),
        # each member's vote [M, B]
        helper.make_node("ArgMax", [MEMBER_LOGITS], ["vote/preds"], axis=2, keepdims=0,
                         name="vote/argmax_members"),
        helper.make_node("Unsqueeze", ["vote/preds", "vote/axis_last"], ["vote/preds3"],
                         name="vote/unsqueeze_preds"),
        helper.make_node("Equal", ["vote/preds3", "vote/classes"], ["vote/onehot_b"],
                         name="vote/onehot"),
        helper.make_node("Cast", ["vote/onehot_b"], ["vote/onehot"], to=TensorProto.FLOAT,
                         name="vote/cast_onehot"),
        # votes per class [B, K]; strict majority: count > M/2
        helper.make_node("ReduceSum", ["vote/onehot", "vote/axis0"], ["vote/counts"],
                         keepdims=0, name="vote/count"),
        helper.make_node("ArgMax", ["vote/counts"], ["vote/top"], axis=1, keepdims=0,
                         name="vote/argmax_counts"),
        helper.make_node("ReduceMax", ["vote/counts"], ["vote/top_count"], axes=[1],
                         keepdims=0, name="vote/max_count"),
        helper.make_node("Greater", ["vote/top_count", "vote/half_members"], ["vote/majority"],
                         name="vote/has_majority"),
        helper.make_node("Gather", ["vote/preds", "vote/reference"], ["vote/ref_pred"], axis=0,
                         name="vote/reference_pred"),
        helper.make_node("Where", ["vote/majority", "vote/top", "vote/ref_pred"], [CLASS_IDS],
                         name="vote/decide"),
    ]
    inits.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "vote/axis_last"))

    outputs = [
        helper.make_tensor_value_info(CLASS_IDS, TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info(MEMBER_LOGITS, TensorProto.FLOAT,
                                      [m_count, "batch", num_classes]),
    ]
    graph = helper.make_graph(nodes, "edgempir_ensemble", [first_input], outputs,
                              initializer=inits, value_info=value_info)
    opsets = {}
    for proto in members:
        for o in proto.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    opsets[""] = max(opsets.get("", opset), opset)
    model = helper.make_model(graph, producer_name=producer,
                              opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = min(p.ir_version for p in members)
    onnx.checker.check_model(model)
    return model


def add_accepted(model, policy: str):
    """Append the reject policy's ``accepted`` output (bool [B]) to an ensemble graph.

    Built only from the graph's public outputs ``member_logits`` and ``class_ids``, so it
    does not depend on how the vote itself is wired. ``majority``: every vote accepted
    (``class_ids == class_ids``); ``unanimous``: the members' argmaxes all equal (their max
    and min over the members, as floats, agree). Same rule as ``edgempir.vote.accepted``.
    """
    import onnx
    from onnx import TensorProto, helper

    from edgempir.vote import REJECT_POLICIES

    if policy not in REJECT_POLICIES:
        raise ValueError(f"unknown reject policy {policy!r}; known: {', '.join(REJECT_POLICIES)}")
    g = model.graph
    if policy == "majority":
        nodes = [helper.make_node("Equal", [CLASS_IDS, CLASS_IDS], [ACCEPTED],
                                  name="reject/majority")]
    else:
        nodes = [
            helper.make_node("ArgMax", [MEMBER_LOGITS], ["reject/preds"], axis=2, keepdims=0,
                             name="reject/argmax_members"),
            helper.make_node("Cast", ["reject/preds"], ["reject/preds_f"],
                             to=TensorProto.FLOAT, name="reject/cast"),
            helper.make_node("ReduceMax", ["reject/preds_f"], ["reject/max"], axes=[0],
                             keepdims=0, name="reject/max"),
            helper.make_node("ReduceMin", ["reject/preds_f"], ["reject/min"], axes=[0],
                             keepdims=0, name="reject/min"),
            helper.make_node("Equal", ["reject/max", "reject/min"], [ACCEPTED],
                             name="reject/unanimous"),
        ]
    g.node.extend(nodes)
    g.output.append(helper.make_tensor_value_info(ACCEPTED, TensorProto.BOOL, ["batch"]))
    onnx.checker.check_model(model)
    return model
