"""Host side graph work with the onnx package: one ONNX graph for the whole ensemble.

``merge_ensemble(members, reference, num_classes, vote=...)`` puts every member's graph on
the one shared input and appends the paper's vote in ONNX ops, so one ONNX Runtime session
or one TensorRT engine runs the deployed decision. Outputs (docs/BUNDLE.md):

- ``class_ids`` int64 [B]: the vote's decision;
- ``member_logits`` float32 [M, B, K]: each member's logits; NaN rows where it did not run;
- ``member_ran`` bool [M, B]: True where the member ran on that row.

Two executions of the same vote (``vote``, the profile's ``[export] vote``):

``full``: every member on every row, side by side::

    input --> member 0 --> logits_0 --+--> member_logits --> argmax --> preds [M, B] --> vote
          \\-> member 1 --> logits_1 --+

``early-exit`` (edgempir.vote.cascade, same decisions): members in cascade order (cheapest
first, the reference last); the first ``always_open(M)`` run on the whole batch, each later
member only on the rows where its vote can still change the decision::

    open = rows still undecided (from the preds so far)       [B] bool
    idx  = NonZero(open)                                      [1, n]
    x'   = Gather(input, idx)     --> member j --> logits'    [n, K]
    logits_j = ScatterND(NaN [B, K], idx^T, logits')          [B, K]
    preds_j  = ScatterND(-1 [B], idx^T, ArgMax(logits'))      [B]

No control flow (no ``If``, no subgraphs): NonZero, Gather and ScatterND are the only
additions, and none allocates more than its input's size (targets/device/bundle.py,
SECURITY.md). A member with no open row runs on an empty batch. ``If`` at batch 1 would
skip that empty run (about 0.05-0.1 ms of per-node cost here) but needs subgraphs, which
the device's graph check refuses by design; not tried.

The vote itself (:func:`vote_nodes`) reads only ``vote/preds`` (int64 [M, B], -1 where a
member did not run). Every name inside member i gets the prefix ``m{i}/``; the shared input
keeps its name.

``add_accepted(model, policy)`` then appends the reject policy's ``accepted`` output (bool
[B]; docs/BUNDLE.md), computed from ``member_logits`` and ``class_ids`` only. ``unanimous``
reads every member's vote, so export builds it on the full graph only.
"""
from __future__ import annotations

import numpy as np

from edgempir.contract import (
    ACCEPTED,
    CLASS_IDS,
    INPUT_NAME,
    MEMBER_LOGITS,
    MEMBER_RAN,
    VOTE_EARLY_EXIT,
    VOTE_FULL,
    VOTE_MODES,
)
from edgempir.vote import NOT_RUN, always_open

PREDS = "vote/preds"  # int64 [M, B]: each member's argmax, NOT_RUN where it did not run


def _prefix_graph(graph, prefix: str, keep: set[str], rename_input: str = INPUT_NAME):
    """Rename every value, node and initializer of ``graph`` in place (except ``keep``);
    the member's input becomes ``rename_input``."""

    def ren(name: str) -> str:
        if name == INPUT_NAME:
            return rename_input
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


class _Builder:
    """Nodes, initializers and value infos of the ensemble graph being built."""

    def __init__(self, members: list):
        self.members = members
        self.nodes, self.inits, self.value_info = [], [], []
        self.first_input = None

    def const(self, name: str, array) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        name = output if output.startswith("vote/") else f"vote/{output}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def member(self, i: int, source: str) -> str:
        """Member i's graph on tensor ``source``; returns its logits' name."""
        import onnx

        g = onnx.GraphProto()
        g.CopyFrom(self.members[i].graph)
        if [x.name for x in g.input] != [INPUT_NAME] or len(g.output) != 1:
            raise ValueError(f"member {i}: expected one input {INPUT_NAME!r} and one output")
        if self.first_input is None:
            self.first_input = onnx.ValueInfoProto()
            self.first_input.CopyFrom(g.input[0])
        _prefix_graph(g, f"m{i}/", set(), source)
        self.nodes.extend(g.node)
        self.inits.extend(g.initializer)
        if source == INPUT_NAME:  # on gathered rows the exporter's "batch" dim is not B
            self.value_info.extend(g.value_info)
        return g.output[0].name

    def stack(self, names: list[str], output: str) -> str:
        """Concat of the tensors along a new axis 0."""
        ups = [self.node("Unsqueeze", [n, "vote/axis0"], f"{output}/u{k}")
               for k, n in enumerate(names)]
        return self.node("Concat", ups, output, axis=0)


def vote_nodes(b: _Builder, m_count: int, reference: int) -> None:
    """``vote/preds`` [M, B] -> ``class_ids``: strict majority, else the reference's vote.
    A NOT_RUN (-1) prediction matches no class, so it counts as an absent vote."""
    from onnx import TensorProto

    b.node("Unsqueeze", [PREDS, "vote/axis_last"], "vote/preds3")
    b.node("Equal", ["vote/preds3", "vote/classes"], "vote/onehot_b")
    b.node("Cast", ["vote/onehot_b"], "vote/onehot", to=TensorProto.FLOAT)
    b.node("ReduceSum", ["vote/onehot", "vote/axis0"], "vote/counts", keepdims=0)   # [B, K]
    b.node("ArgMax", ["vote/counts"], "vote/top", axis=1, keepdims=0)
    b.node("ReduceMax", ["vote/counts"], "vote/top_count", axes=[1], keepdims=0)
    b.node("Greater", ["vote/top_count", "vote/half_members"], "vote/majority")
    b.node("Gather", [PREDS, "vote/reference"], "vote/ref_pred", axis=0)
    b.node("Where", ["vote/majority", "vote/top", "vote/ref_pred"], CLASS_IDS)


def _full(b: _Builder, m_count: int) -> None:
    b.stack([b.member(i, INPUT_NAME) for i in range(m_count)], MEMBER_LOGITS)
    b.node("ArgMax", [MEMBER_LOGITS], PREDS, axis=2, keepdims=0)
    b.node("Equal", [PREDS, PREDS], "vote/ran_b")  # all True, [M, B]
    b.node("Identity", ["vote/ran_b"], MEMBER_RAN)


def _open_rows(b: _Builder, k: int, ran_preds: list[str], m_count: int, is_ref: bool) -> str:
    """bool [B]: rows where the k-th member in cascade order can change the decision
    (edgempir.vote.cascade): no majority yet and, for a non-reference member, some class
    can still reach one with the remaining non-reference votes."""
    from onnx import TensorProto

    s = f"vote/stage{k}"
    b.stack(ran_preds, f"{s}/preds")
    b.node("Unsqueeze", [f"{s}/preds", "vote/axis_last"], f"{s}/preds3")
    b.node("Equal", [f"{s}/preds3", "vote/classes"], f"{s}/onehot_b")
    b.node("Cast", [f"{s}/onehot_b"], f"{s}/onehot", to=TensorProto.FLOAT)
    b.node("ReduceSum", [f"{s}/onehot", "vote/axis0"], f"{s}/counts", keepdims=0)
    b.node("ReduceMax", [f"{s}/counts"], f"{s}/top", axes=[1], keepdims=0)
    b.node("Greater", [f"{s}/top", "vote/half_members"], f"{s}/majority")
    b.node("Not", [f"{s}/majority"], f"{s}/no_majority")
    if is_ref:
        return f"{s}/no_majority"
    left = b.const(f"{s}/left", np.array(m_count - 1 - k, dtype=np.float32))
    b.node("Add", [f"{s}/top", left], f"{s}/reach")
    b.node("Greater", [f"{s}/reach", "vote/half_members"], f"{s}/reachable")
    return b.node("And", [f"{s}/no_majority", f"{s}/reachable"], f"{s}/open")


def _early_exit(b: _Builder, m_count: int, order: list[int], reference: int) -> None:
    logits: dict[int, str] = {}
    preds: dict[int, str] = {}
    ran: dict[int, str] = {}
    first = order[0]
    for k, i in enumerate(order):
        if k < always_open(m_count):
            logits[i] = b.member(i, INPUT_NAME)
            preds[i] = b.node("ArgMax", [logits[i]], f"vote/pred_{i}", axis=1, keepdims=0)
            continue
        if k == always_open(m_count):  # fillers shaped like the batch, without allocation ops
            b.node("Mul", [logits[first], "vote/nan"], "vote/nan_rows")           # [B, K]
            b.node("Mul", [preds[first], "vote/zero_i64"], "vote/zeros_b")
            b.node("Add", ["vote/zeros_b", "vote/not_run"], "vote/not_run_rows")  # [B]
        s = f"vote/stage{k}"
        open_rows = _open_rows(b, k, [preds[j] for j in order[:k]], m_count, i == reference)
        b.node("NonZero", [open_rows], f"{s}/idx")                                # [1, n]
        b.node("Squeeze", [f"{s}/idx", "vote/axis0"], f"{s}/rows")                # [n]
        b.node("Transpose", [f"{s}/idx"], f"{s}/scatter_idx", perm=[1, 0])       # [n, 1]
        x_open = b.node("Gather", [INPUT_NAME, f"{s}/rows"], f"{s}/input", axis=0)
        out = b.member(i, x_open)
        b.node("ArgMax", [out], f"{s}/pred", axis=1, keepdims=0)
        logits[i] = b.node("ScatterND", ["vote/nan_rows", f"{s}/scatter_idx", out],
                           f"vote/logits_{i}")
        preds[i] = b.node("ScatterND", ["vote/not_run_rows", f"{s}/scatter_idx", f"{s}/pred"],
                          f"vote/pred_{i}")
        ran[i] = open_rows
    for i in order[:always_open(m_count)]:
        ran[i] = b.node("Equal", [preds[i], preds[i]], f"vote/ran_{i}")  # all True
    b.stack([logits[i] for i in range(m_count)], MEMBER_LOGITS)
    b.stack([preds[i] for i in range(m_count)], PREDS)
    b.stack([ran[i] for i in range(m_count)], MEMBER_RAN)


def merge_ensemble(members: list, reference: int, num_classes: int, opset: int = 13,
                   producer: str = "edgempir", vote: str = VOTE_FULL,
                   order: list[int] | None = None):
    """Members (ModelProto, one input ``input`` and one output [B, K]) -> one ModelProto.

    ``vote``: ``full`` or ``early-exit``; ``order``: the early-exit cascade order (every
    member once, the reference last; default: as given with the reference moved last).
    """
    import onnx
    from onnx import TensorProto, helper

    if not members:
        raise ValueError("an ensemble needs members")
    if vote not in VOTE_MODES:
        raise ValueError(f"vote {vote!r} is not one of {', '.join(VOTE_MODES)}")
    m_count = len(members)
    if order is None:
        order = [i for i in range(m_count) if i != reference] + [reference]
    if sorted(order) != list(range(m_count)) or order[-1] != reference:
        raise ValueError(f"cascade order {order} must list every member once, the reference "
                         f"({reference}) last")
    b = _Builder(members)
    b.const("vote/axis0", np.array([0], dtype=np.int64))
    b.const("vote/axis_last", np.array([2], dtype=np.int64))
    b.const("vote/classes", np.arange(num_classes, dtype=np.int64).reshape(1, 1, num_classes))
    b.const("vote/half_members", np.array(m_count / 2.0, dtype=np.float32))
    b.const("vote/reference", np.array(reference, dtype=np.int64))
    if vote == VOTE_EARLY_EXIT:
        b.const("vote/nan", np.array(np.nan, dtype=np.float32))
        b.const("vote/zero_i64", np.array(0, dtype=np.int64))
        b.const("vote/not_run", np.array(NOT_RUN, dtype=np.int64))
        _early_exit(b, m_count, order, reference)
    else:
        _full(b, m_count)
    vote_nodes(b, m_count, reference)

    outputs = [
        helper.make_tensor_value_info(CLASS_IDS, TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info(MEMBER_LOGITS, TensorProto.FLOAT,
                                      [m_count, "batch", num_classes]),
        helper.make_tensor_value_info(MEMBER_RAN, TensorProto.BOOL, [m_count, "batch"]),
    ]
    graph = helper.make_graph(b.nodes, "edgempir_ensemble", [b.first_input], outputs,
                              initializer=b.inits, value_info=b.value_info)
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
