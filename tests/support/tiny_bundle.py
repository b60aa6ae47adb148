"""The tiny bundle: a real bundle (real ONNX graphs with the vote inside, real npz sets, real
sha256 manifest) built in a second from three linear members trained in numpy. It checks
bench's plumbing fast, independently of export; tests/conftest.py's ``tiny_bundle*``
fixtures build it once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SPECS = (("w2a4", 2, 4), ("w4a4", 4, 4), ("fp32", 32, 32))
EPS = 0.1


def _train_linear(x, y, classes, steps, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.01, (x.shape[1], classes))
    b = np.zeros(classes)
    for _ in range(steps):
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        w -= 0.5 * x.T @ p / len(y)
        b -= 0.5 * p.mean(0)
    return w.astype(np.float32), b.astype(np.float32)


def _vote_nodes(helper, m, reference, classes):
    """The EMPIR vote as ONNX ops: strict majority of the members' argmax, else the reference."""
    from onnx import TensorProto

    c = helper.make_tensor
    return [
        helper.make_node("ArgMax", ["member_logits"], ["preds"], axis=2, keepdims=0),
        helper.make_node("Constant", [], ["depth"], value=c("d", TensorProto.INT64, [], [classes])),
        helper.make_node("Constant", [], ["onoff"], value=c("o", TensorProto.FLOAT, [2], [0, 1])),
        helper.make_node("OneHot", ["preds", "depth", "onoff"], ["onehot"], axis=-1),
        helper.make_node("Constant", [], ["ax0"], value=c("a", TensorProto.INT64, [1], [0])),
        helper.make_node("ReduceSum", ["onehot", "ax0"], ["counts"], keepdims=0),
        helper.make_node("ArgMax", ["counts"], ["top"], axis=1, keepdims=0),
        helper.make_node("ReduceMax", ["counts"], ["best"], axes=[1], keepdims=0),
        helper.make_node("Constant", [], ["half"], value=c("h", TensorProto.FLOAT, [], [m / 2])),
        helper.make_node("Greater", ["best", "half"], ["majority"]),
        helper.make_node("Constant", [], ["ref"], value=c("r", TensorProto.INT64, [], [reference])),
        helper.make_node("Gather", ["preds", "ref"], ["ref_pred"], axis=0),
        helper.make_node("Where", ["majority", "top", "ref_pred"], ["class_ids"]),
    ]


def _onnx_linear(path, members, input_shape, classes, ensemble_reference=None):
    from onnx import TensorProto, helper, numpy_helper, save

    nodes, inits, outs = [helper.make_node("Flatten", ["input"], ["flat"], axis=1)], [], []
    for i, (w, b) in enumerate(members):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes.append(helper.make_node("Gemm", ["flat", f"W{i}", f"B{i}"], [f"z{i}"]))
        nodes.append(helper.make_node("Unsqueeze", [f"z{i}", "ax_u"], [f"u{i}"]))
        outs.append(f"u{i}")
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax_u"))
    inp = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])]
    if ensemble_reference is None:
        nodes[-1] = helper.make_node("Identity", ["z0"], ["logits"])
        out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])]
    else:
        nodes.append(helper.make_node("Concat", outs, ["member_logits"], axis=0))
        nodes += _vote_nodes(helper, len(members), ensemble_reference, classes)
        out = [helper.make_tensor_value_info("class_ids", TensorProto.INT64, ["N"]),
               helper.make_tensor_value_info("member_logits", TensorProto.FLOAT,
                                             [len(members), "N", classes])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", inp, out, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save(model, str(path))


def make_tiny_bundle(out: Path, runtime: str = "onnxruntime", target: str = "x86",
                     fp32: bool = True, vote_mode: str = "full") -> Path:
    from edgempir.calib import write_set
    from edgempir.data import synthetic, to_float
    from edgempir.targets.device.bundle import write_manifest
    from edgempir.vote import vote

    d = synthetic(n_train=600, n_test=200)
    x = to_float(d.x_train).reshape(len(d.x_train), -1).astype(np.float64)
    # weak members disagree now and then, so the vote's tie-break path is used
    members = [_train_linear(x, d.y_train, d.num_classes, steps, seed)
               for steps, seed in ((3, 1), (6, 2), (60, 3))]
    reference = 2
    specs = SPECS if fp32 else (*SPECS[:2], ("w8a8", 8, 8))
    out.mkdir(parents=True)
    (out / "members").mkdir()
    (out / "calib").mkdir()
    _onnx_linear(out / "ensemble.onnx", members, d.input_shape, d.num_classes, reference)
    for i, m in enumerate(members):
        _onnx_linear(out / "members" / f"{i}-{specs[i][0]}.onnx", [m], d.input_shape,
                     d.num_classes)
    if vote_mode == "early-exit":  # the exporter's graph over the same member files
        import onnx

        from edgempir.targets.host.graph import merge_ensemble

        protos = [onnx.load(str(out / "members" / f"{i}-{specs[i][0]}.onnx"))
                  for i in range(len(members))]
        onnx.save(merge_ensemble(protos, reference, d.num_classes, vote="early-exit"),
                  str(out / "ensemble.onnx"))

    def logits(xs):
        flat = xs.reshape(len(xs), -1)
        return np.stack([flat @ w + b for w, b in members])

    xt, yt = to_float(d.x_test)[:120].astype(np.float32), d.y_test[:120]
    # adversarial set: the best L-inf step against the fp32 member (linear: sign of weights)
    w_fp = members[reference][0]
    z = xt.reshape(len(xt), -1) @ w_fp
    other = np.where(np.eye(d.num_classes, dtype=bool)[yt], -np.inf, z).argmax(1)
    grad = (w_fp[:, other] - w_fp[:, yt]).T.reshape(xt.shape)
    xa = np.clip(xt + EPS * np.sign(grad), 0, 1).astype(np.float32)
    write_set(out / "calib" / "calibration.npz", to_float(d.x_train[:32]).astype(np.float32),
              d.y_train[:32])
    write_set(out / "calib" / "clean.npz", xt, yt)
    write_set(out / "calib" / "adv-adaptive.npz", xa, yt, clean_index=np.arange(len(yt)))
    host = {"clean": float((vote(logits(xt), reference) == yt).mean()),
            "adv-adaptive": float((vote(logits(xa), reference) == yt).mean())}
    size = {"true_bits": 0, "stored": 0, "float32": 0}
    profile = {"name": target, "runtime": runtime,
               "onnxruntime": {"providers": ["CPUExecutionProvider"], "intra_op_threads": 1,
                               "graph_optimization_level": "all"}}
    manifest = {
        "target": target, "runtime": runtime, "profile": profile,
        "input": {"name": "input", "shape": list(d.input_shape), "range": [0, 1]},
        "num_classes": d.num_classes, "class_names": list(d.class_names),
        "members": [{"index": i, "spec": s, "weight_bits": wb, "act_bits": ab,
                     "file": f"members/{i}-{s}.onnx",
                     "weight_bytes": {k: int(w.size * (wb if k == "true_bits" else 32) / 8) + v
                                      for k, v in size.items()}}
                    for i, ((s, wb, ab), (w, _)) in enumerate(zip(specs, members))],
        "reference_member": reference, "fp32_member": reference if fp32 else None,
        "ensemble_file": "ensemble.onnx",
        "calib": {n: {"file": f"calib/{n}.npz"} for n in ("calibration", "clean",
                                                          "adv-adaptive")},
        "host_accuracy": host,
        "eval_info": {"protocol": "adaptive", "config": "tiny", "eps": [EPS], "adv_eps": EPS,
                      "norm": "Linf",
                      "report": {}},
    }
    if vote_mode == "early-exit":
        manifest["vote_execution"] = {"mode": "early-exit", "order": [0, 1, 2],
                                      "reference_member": reference, "always_open": 2,
                                      "how": "tiny"}
    write_manifest(out, manifest)
    return out
