"""The ensemble graph: members side by side on one input, the vote in ONNX ops."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from edgempir.targets.host.graph import CLASS_IDS, MEMBER_LOGITS, merge_ensemble
from edgempir.targets.device.onnxruntime import make_session
from onnx import TensorProto, helper, numpy_helper

from edgempir.vote import vote

K = 4  # classes; few classes make ties and no-majority cases common


def linear_member(seed: int):
    """input [B, 1, 2, 2] -> Flatten -> MatMul W -> logits [B, K], a member in miniature."""
    w = np.random.default_rng(seed).normal(size=(4, K)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1, name="flatten"),
             helper.make_node("MatMul", ["flat", "w"], ["logits"], name="fc")]
    g = helper.make_graph(nodes, "member",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                         ["batch", 1, 2, 2])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["batch", K])],
                          initializer=[numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("n_members, reference", [(2, 1), (3, 2), (3, 0), (4, 3), (5, 1)])
def test_vote_in_onnx_equals_numpy_vote(tmp_path, n_members, reference):
    model = merge_ensemble([linear_member(s) for s in range(n_members)], reference, K)
    path = tmp_path / "ens.onnx"
    onnx.save(model, path)
    sess = make_session(path)
    x = np.random.default_rng(1).normal(size=(500, 1, 2, 2)).astype(np.float32)
    ids, logits = sess.run([CLASS_IDS, MEMBER_LOGITS], {"input": x})
    assert ids.dtype == np.int64 and ids.shape == (500,)
    assert logits.dtype == np.float32 and logits.shape == (n_members, 500, K)
    np.testing.assert_array_equal(ids, vote(logits, reference))
    # the cases that make a vote a vote occur: majorities and no-majority fallbacks
    preds = logits.argmax(2)
    counts = np.array([np.bincount(preds[:, b], minlength=K).max() for b in range(500)])
    assert (counts * 2 > n_members).any() and (counts * 2 <= n_members).any()
    # member branches are the members, unchanged
    for i in range(n_members):
        w = numpy_helper.to_array(linear_member(i).graph.initializer[0])
        np.testing.assert_allclose(logits[i], x.reshape(500, 4) @ w, rtol=1e-5, atol=1e-6)


def test_names_are_prefixed_and_batch_is_dynamic(tmp_path, small_members):
    protos = [onnx.load(small_members[b][1]) for b in (2, 8)]
    model = merge_ensemble(protos, 1, 10)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == [CLASS_IDS, MEMBER_LOGITS]
    names = [n.name for n in model.graph.node]
    assert len(names) == len(set(names))
    assert all(n.startswith(("m0/", "m1/", "vote/")) for n in names)
    path = tmp_path / "ens.onnx"
    onnx.save(model, path)
    sess = make_session(path)
    for batch in (1, 7):
        ids, logits = sess.run(None, {"input": np.random.rand(batch, 1, 28, 28).astype(np.float32)})
        assert ids.shape == (batch,) and logits.shape == (2, batch, 10)
