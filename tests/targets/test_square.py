"""The numpy Square attack (device side): schedule, bounds, and that it really breaks models."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgempir.targets.device.square import margin, p_selection, square_linf


def test_p_selection_shrinks_squares_over_the_budget():
    ps = [p_selection(0.8, i, 300) for i in range(300)]
    assert ps[0] == 0.8
    assert all(a >= b for a, b in itertools.pairwise(ps))
    assert ps[-1] == pytest.approx(0.8 / 512)
    # the schedule is rescaled to the budget, so a short attack reaches small squares too
    assert p_selection(0.8, 150, 300) == p_selection(0.8, 5000, 10000)


def test_margin_is_true_score_minus_best_other():
    s = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    np.testing.assert_allclose(margin(s, np.array([0, 2])), [1.0, -4.0])


# ----------------------------------------------------------------- an undefended small model
@pytest.fixture(scope="module")
def linear_model():
    """Softmax regression on the synthetic data set: small, accurate and undefended."""
    from edgempir.data import synthetic, to_float

    d = synthetic(n_train=600, n_test=60)
    x = to_float(d.x_train).reshape(len(d.x_train), -1).astype(np.float64)
    y = d.y_train
    w = np.zeros((x.shape[1], d.num_classes))
    b = np.zeros(d.num_classes)
    for _ in range(100):
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        w -= 0.5 * x.T @ p / len(y)
        b -= 0.5 * p.mean(0)
    xt = to_float(d.x_test)[:60].astype(np.float32)
    return w.astype(np.float32), b.astype(np.float32), xt, d.y_test[:60]


def _numpy_query(w, b):
    def query(x):
        z = x.reshape(len(x), -1) @ w + b
        return z.argmax(1), z
    return query


def _onnx_query(w, b, tmp_path):
    """The same model as an ONNX graph run by ONNX Runtime: the attack sees only scores."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    c, h, wd = 1, 28, 28
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "B"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, wd])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", w.shape[1]])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "linear.onnx"
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def query(x):
        z = sess.run(None, {"input": x})[0]
        return z.argmax(1), z
    return query


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_square_lowers_accuracy_of_an_undefended_model(linear_model, backend, tmp_path):
    w, b, x, y = linear_model
    query = _numpy_query(w, b) if backend == "numpy" else _onnx_query(w, b, tmp_path)
    eps, budget = 0.25, 200
    res = square_linf(query, x, y, eps, n_queries=budget, seed=0)
    s = res.summary()
    assert s["clean_accuracy"] >= 0.9
    assert s["robust_accuracy"] <= s["clean_accuracy"] - 0.4, s
    # the adversarial images are real: within eps, valid pixels, and the model gets them wrong
    assert np.abs(res.x_adv - x).max() <= eps + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    ids, _ = query(res.x_adv)
    np.testing.assert_array_equal(ids == y, res.robust)
    assert res.queries.max() <= budget
    assert s["queries_median_success"] is not None and s["queries_median_success"] < budget


def test_square_is_deterministic_for_a_seed(linear_model):
    w, b, x, y = linear_model
    q = _numpy_query(w, b)
    a = square_linf(q, x[:20], y[:20], 0.25, n_queries=60, seed=3)
    c = square_linf(q, x[:20], y[:20], 0.25, n_queries=60, seed=3)
    np.testing.assert_array_equal(a.x_adv, c.x_adv)
    np.testing.assert_array_equal(a.queries, c.queries)


def test_success_is_judged_by_the_decision_not_the_scores():
    """The vote decides: scores that say 'wrong' do not count while the decision is right."""
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 6, 6), dtype=np.float32)
    y = np.arange(8) % 3

    # decisions are always right: nothing is broken and every image spends the whole budget
    def query(batch):
        # each query image is within eps of exactly one clean image: answer its true label
        idx = [int(np.argmin(np.abs(x - im).reshape(len(x), -1).max(1))) for im in batch]
        scores = np.zeros((len(batch), 3))
        scores[:, 0] = 10.0
        return y[idx], scores

    res = square_linf(query, x, y, 0.05, n_queries=12, seed=0)
    assert res.robust.all() and (res.queries == 12).all()

    # decisions always wrong: every image counts as broken by its clean query alone
    res = square_linf(lambda b: ((y[:len(b)] + 1) % 3, np.zeros((len(b), 3))), x, y, 0.05,
                      n_queries=12, seed=0)
    assert res.clean_accuracy == 0 and not res.robust.any() and (res.queries == 1).all()


def test_bad_arguments():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError):
        square_linf(lambda b: (np.zeros(len(b), int), np.zeros((len(b), 2))), x, [0], -0.1)
    with pytest.raises(ValueError):
        square_linf(lambda b: (np.zeros(len(b), int), np.zeros((len(b), 2))), x, [0], 0.1,
                    n_queries=0)
