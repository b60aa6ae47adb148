"""The vote's tie rule on hand-made cases, in all three implementations: the ONNX graph that
ships in every bundle (targets/host/graph.py), the numpy vote (edgempir/vote.py, bench's
check) and the torch vote (edgempir/ensemble.py, what eval scores).

The ONNX members here pass hand-made logits through (member i returns row i of its input),
so each case feeds exactly the votes it names. Cases beyond tests/edgempir/test_ensemble.py:
a plurality that is not a majority (2-2-1 of 5, 2-1-1 of 4, 3-2-1 of 6, 3-2-2 of 7) goes to
the reference member, even when the reference is the odd one out; ties between classes in
the counts.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgempir.ensemble import vote_scores
from edgempir.targets.device.onnxruntime import make_session
from edgempir.targets.host.graph import CLASS_IDS, MEMBER_LOGITS, merge_ensemble
from edgempir.vote import vote

K = 5

# (member predictions [M][B], reference, expected decisions [B])
CASES = [
    # 3 members: 2 of 3 win over the reference; all different -> the reference
    ([[1, 2, 3], [1, 0, 3], [0, 2, 0]], 2, [1, 2, 3]),
    ([[0, 1, 4], [1, 2, 0], [2, 3, 1]], 1, [1, 2, 0]),
    # 2 members: a split is no majority -> the reference, either one
    ([[0, 3], [2, 3]], 0, [0, 3]),
    ([[0, 3], [2, 3]], 1, [2, 3]),
    # 4 members: 2-2 and 2-1-1 are no strict majority -> the reference; 3-1 wins
    ([[0, 0, 4], [0, 1, 4], [1, 2, 2], [1, 3, 4]], 3, [1, 3, 4]),
    ([[0, 0, 4], [0, 1, 4], [1, 2, 2], [1, 3, 4]], 2, [1, 2, 4]),
    # 5 members: 2-2-1 with the reference the odd one out -> the reference's class (the
    # plurality does not win); 3-2 -> the 3
    ([[0, 1], [0, 1], [1, 1], [1, 0], [4, 0]], 4, [4, 1]),
    ([[0, 1], [0, 1], [1, 1], [1, 0], [4, 0]], 0, [0, 1]),
    # 6 and 7 members: half (3 of 6) is not a majority, 4 of 6 is; 3-2-2 of 7 is not
    # (a squared count, 3 * 3 > 6, would call them majorities: mutation testing found it)
    ([[0, 0], [0, 0], [0, 0], [1, 0], [1, 3], [2, 3]], 5, [2, 0]),
    ([[0], [0], [0], [1], [1], [2], [2]], 6, [2]),
    ([[0], [0], [0], [0], [1], [1], [2]], 6, [0]),
]


def _logits(preds) -> np.ndarray:
    """[M, B, K] logits whose argmax is the given class (a clear margin: 1 vs 0)."""
    p = np.asarray(preds)
    out = np.zeros(p.shape + (K,), dtype=np.float32)
    for idx in np.ndindex(p.shape):
        out[idx + (p[idx],)] = 1.0
    return out


def _pass_through_member(i: int):
    """input [B, M, K] -> logits [B, K] = input[:, i, :]: a member that votes as told."""
    nodes = [helper.make_node("Gather", ["input", "row"], ["logits"], axis=1, name="pick")]
    g = helper.make_graph(nodes, "member",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                         ["batch", None, K])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["batch", K])],
                          initializer=[numpy_helper.from_array(np.array(i, np.int64), "row")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("preds, ref, expected", CASES)
def test_onnx_graph_numpy_and_torch_votes_break_ties_alike(tmp_path, preds, ref, expected):
    logits = _logits(preds)
    m = len(preds)
    path = tmp_path / "ens.onnx"
    onnx.save(merge_ensemble([_pass_through_member(i) for i in range(m)], ref, K), path)
    x = np.ascontiguousarray(logits.transpose(1, 0, 2))          # [B, M, K]
    ids, member_logits = make_session(path).run([CLASS_IDS, MEMBER_LOGITS], {"input": x})
    np.testing.assert_array_equal(member_logits, logits)
    assert ids.tolist() == expected, "ONNX graph"
    assert vote(logits, ref).tolist() == expected, "numpy vote"
    assert vote_scores(torch.from_numpy(logits), ref).argmax(1).tolist() == expected, "torch"
