"""merge_ensemble's contract beyond the vote (fast, no torch: part of the mutation-testing
selection for targets/host/graph.py): members must have one input named ``input`` and one
output; every node is prefixed ``m<i>/`` (unnamed ones by their op type); the ensemble keeps
the members' opset, and at least 13 (the vote's ReduceSum takes its axes as an input)."""
from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgempir.targets.host.graph import add_accepted, merge_ensemble

K = 3


def _member(input_name="input", outputs=1, node_names=("flatten", "fc"), opset=13):
    w = numpy_helper.from_array(np.eye(4, K, dtype=np.float32), "w")
    nodes = [helper.make_node("Flatten", [input_name], ["flat"], axis=1, name=node_names[0]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"], name=node_names[1])]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", K])]
    if outputs == 0:
        outs = []
    if outputs == 2:
        outs.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["batch", 4]))
    g = helper.make_graph(nodes, "member", [helper.make_tensor_value_info(
        input_name, TensorProto.FLOAT, ["batch", 1, 2, 2])], outs, initializer=[w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("bad, needle", [
    ({"input_name": "x"}, "member 1: expected one input 'input' and one output"),
    ({"input_name": "data"}, "member 1: expected one input 'input' and one output"),
    ({"outputs": 2}, "member 1: expected one input 'input' and one output"),
    ({"outputs": 0}, "member 1: expected one input 'input' and one output"),
])
def test_members_need_one_input_named_input_and_one_output(bad, needle):
    with pytest.raises(ValueError, match=needle):
        merge_ensemble([_member(), _member(**bad)], 0, K)
    with pytest.raises(ValueError, match="needs members"):
        merge_ensemble([], 0, K)


def test_nodes_are_prefixed_by_member_and_unnamed_ones_get_their_op_type():
    model = merge_ensemble([_member(), _member(node_names=("", ""))], 1, K)
    names = [n.name for n in model.graph.node if n.name.startswith("m")]
    assert names[:4] == ["m0/flatten", "m0/fc", "m1/Flatten", "m1/MatMul"]
    inits = {t.name for t in model.graph.initializer}
    assert {"m0/w", "m1/w"} <= inits
    assert [i.name for i in model.graph.input] == ["input"]      # the shared input stays


@pytest.mark.parametrize("member_opset, expected", [(11, 13), (13, 13), (17, 17)])
def test_the_ensemble_keeps_the_members_opset(member_opset, expected):
    model = merge_ensemble([_member(opset=member_opset)] * 2, 0, K)
    assert {o.domain: o.version for o in model.opset_import} == {"": expected}


REDUCTIONS = {"ArgMax", "ArgMin", "ReduceSum", "ReduceMax", "ReduceMin"}


@pytest.mark.parametrize("vote", ["full", "early-exit"])
def test_every_reduction_of_the_vote_drops_its_axis_with_keepdims_0(vote):
    """The ONNX spec allows keepdims 0 or 1. ONNX Runtime reads ``keepdims == 1`` and a
    runtime that reads it as a boolean (TensorRT's parser) keeps the axis for any other
    non-zero value, so the graph must say 0, not merely something ONNX Runtime treats as 0
    (the mutants keepdims=-1 ran unnoticed on ONNX Runtime)."""
    model = merge_ensemble([_member()] * 3, 2, K, vote=vote)
    add_accepted(model, "unanimous")
    ours = [n for n in model.graph.node  # not the members' own nodes (m0/..., m1/...)
            if n.op_type in REDUCTIONS and not re.match(r"m\d+/", n.name)]
    assert len(ours) >= 4, [n.name for n in ours]
    for node in ours:
        keepdims = {a.name: a.i for a in node.attribute}.get("keepdims")
        assert keepdims == 0, (node.name, keepdims)
