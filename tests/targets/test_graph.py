"""The ensemble graph: members side by side on one input, the vote in ONNX ops."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import testkit as H
from onnx import TensorProto, helper, numpy_helper
from vote_cases import CASES, logits_for

from edgempir.contract import MEMBER_RAN
from edgempir.targets.device.onnxruntime import make_session
from edgempir.targets.host.graph import CLASS_IDS, MEMBER_LOGITS, merge_ensemble
from edgempir.vote import cascade_from_logits, vote

K = 4  # classes; few classes make ties and no-majority cases common


def linear_member(seed: int):
    return H.linear_member(seed, K)




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
    assert [o.name for o in model.graph.output] == [CLASS_IDS, MEMBER_LOGITS, MEMBER_RAN]
    names = [n.name for n in model.graph.node]
    assert len(names) == len(set(names))
    assert all(n.startswith(("m0/", "m1/", "vote/")) for n in names)
    path = tmp_path / "ens.onnx"
    onnx.save(model, path)
    sess = make_session(path)
    for batch in (1, 7):
        ids, logits, _ = sess.run(None, {"input": np.random.rand(batch, 1, 28, 28)
                                         .astype(np.float32)})
        assert ids.shape == (batch,) and logits.shape == (2, batch, 10)


# ------------------------------------------------------------------ early exit
def table_member(logits: np.ndarray):
    """input [B, 1, 1, 1] holding a row number r -> row r of ``logits`` [R, K]."""
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Cast", ["flat"], ["rows2"], to=TensorProto.INT64),
             helper.make_node("Squeeze", ["rows2", "axis1"], ["rows"]),
             helper.make_node("Gather", ["table", "rows"], ["logits"], axis=0)]
    g = helper.make_graph(nodes, "member",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                         ["batch", 1, 1, 1])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["batch", logits.shape[1]])],
                          initializer=[numpy_helper.from_array(logits.astype(np.float32),
                                                               "table"),
                                       numpy_helper.from_array(np.array([1]), "axis1")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _session(tmp_path, model, name="ens.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return make_session(path)


@pytest.mark.parametrize("preds, ref, ran", CASES)
def test_early_exit_graph_on_hand_made_cases(tmp_path, preds, ref, ran):
    logits = logits_for(preds, classes=4)
    m, b = len(preds), len(preds[0])
    members = [table_member(logits[i]) for i in range(m)]
    sess = _session(tmp_path, merge_ensemble(members, ref, 4, vote="early-exit"))
    full = _session(tmp_path, merge_ensemble(members, ref, 4), "full.onnx")
    x = np.arange(b, dtype=np.float32).reshape(b, 1, 1, 1)
    ids, out, got_ran = sess.run([CLASS_IDS, MEMBER_LOGITS, MEMBER_RAN], {"input": x})
    full_ids, full_logits, full_ran = full.run([CLASS_IDS, MEMBER_LOGITS, MEMBER_RAN],
                                               {"input": x})
    assert ids.tolist() == full_ids.tolist() == vote(logits, ref).tolist()
    assert got_ran.astype(int).tolist() == ran and full_ran.all()
    # a member that did not run is marked: NaN logits, never zeros
    np.testing.assert_array_equal(out, np.where(got_ran[..., None], full_logits, np.nan))
    # one row at a time (batch 1, where a member may run on an empty batch)
    for r in range(b):
        one = sess.run([CLASS_IDS, MEMBER_RAN], {"input": x[r:r + 1]})
        assert one[0].tolist() == [ids[r]] and one[1][:, 0].tolist() == got_ran[:, r].tolist()


@pytest.mark.parametrize("n_members, reference", [(3, 2), (3, 0), (5, 4), (5, 1), (4, 3)])
def test_early_exit_graph_equals_full_graph(tmp_path, n_members, reference):
    members = [linear_member(s) for s in range(n_members)]
    sess = _session(tmp_path, merge_ensemble(members, reference, K, vote="early-exit"))
    full = _session(tmp_path, merge_ensemble(members, reference, K), "full.onnx")
    for batch in (300, 1, 0):
        x = np.random.default_rng(batch).normal(size=(batch, 1, 2, 2)).astype(np.float32)
        ids, _, ran = sess.run(None, {"input": x})
        full_ids, full_logits, _ = full.run(None, {"input": x})
        order = [i for i in range(n_members) if i != reference] + [reference]
        want_ids, want_ran = cascade_from_logits(full_logits, order, reference)
        np.testing.assert_array_equal(ids, full_ids)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(ran, want_ran)


def test_early_exit_graph_with_real_quantized_members(tmp_path, small_members, probe_inputs):
    """Brevitas members through ONNX Runtime's integer kernels, on gathered rows and on an
    empty batch of open rows: the same decisions as the full graph."""
    protos = [onnx.load(small_members[b][1]) for b in (2, 3, 8)]
    sess = _session(tmp_path, merge_ensemble(protos, 2, 10, vote="early-exit"))
    full = _session(tmp_path, merge_ensemble(protos, 2, 10), "full.onnx")
    x = probe_inputs
    ids, out, ran = sess.run(None, {"input": x})
    full_ids, full_logits, _ = full.run(None, {"input": x})
    np.testing.assert_array_equal(ids, full_ids)
    np.testing.assert_array_equal(out[ran], full_logits[ran])
    assert np.isnan(out[~ran]).all()
    agree = np.flatnonzero(~ran[2])
    if agree.size:  # a batch where every row is decided by the pair: the reference runs on 0
        ids1, _, ran1 = sess.run(None, {"input": x[agree[:1]]})
        assert not ran1[2].any() and ids1.tolist() == full_ids[agree[:1]].tolist()


def test_unknown_vote_mode_and_bad_order_are_refused():
    members = [linear_member(s) for s in range(3)]
    with pytest.raises(ValueError, match="vote"):
        merge_ensemble(members, 2, K, vote="fast")
    with pytest.raises(ValueError, match="reference"):
        merge_ensemble(members, 2, K, vote="early-exit", order=[2, 0, 1])
