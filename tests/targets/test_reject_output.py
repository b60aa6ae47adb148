"""The ensemble graph's ``accepted`` output (reject policy chosen at export): the same on
host torch, numpy, ONNX Runtime and TensorRT, recorded in the manifest, measured by bench."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import testkit as H
import torch

from edgempir.ensemble import accepted as torch_accepted
from edgempir.targets.device.onnxruntime import make_session
from edgempir.targets.host.graph import (
    ACCEPTED,
    CLASS_IDS,
    MEMBER_LOGITS,
    add_accepted,
    merge_ensemble,
)
from edgempir.vote import REJECT_POLICIES, accepted

K = 3  # few classes: unanimous and split votes both common


def linear_member(seed: int):
    """The members share most of W, so they often agree (and sometimes do not)."""
    return H.linear_member(seed, K, shared_seed=100)




@pytest.mark.parametrize("policy", REJECT_POLICIES)
@pytest.mark.parametrize("n_members, reference", [(2, 1), (3, 2), (5, 0)])
def test_accepted_in_onnx_equals_numpy_and_torch(tmp_path, policy, n_members, reference):
    model = add_accepted(merge_ensemble([linear_member(s) for s in range(n_members)],
                                        reference, K), policy)
    path = tmp_path / "ens.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(2).normal(size=(400, 1, 2, 2)).astype(np.float32)
    ids, logits, acc = make_session(path).run([CLASS_IDS, MEMBER_LOGITS, ACCEPTED],
                                              {"input": x})
    assert acc.dtype == np.bool_ and acc.shape == (400,)
    np.testing.assert_array_equal(acc, accepted(logits, policy))
    np.testing.assert_array_equal(acc, torch_accepted(torch.from_numpy(logits), policy).numpy())
    if policy == "majority":
        assert acc.all()
    else:  # both verdicts occur, and unanimous means every member's argmax equals the vote
        assert acc.any() and not acc.all()
        assert (logits.argmax(2)[:, acc] == ids[acc]).all()


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown reject policy 'strict'"):
        accepted(np.zeros((3, 2, 4)), "strict")


@pytest.fixture(scope="session")
def unanimous_bundle(evaluated_run, tmp_path_factory):
    from edgempir.targets.host.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "syn-x86-unanimous"
    export_bundle(evaluated_run, "x86", out, n_calib=32, progress=False,
                  reject_policy="unanimous")
    return out


def test_export_records_the_policy_and_bench_measures_it(unanimous_bundle, arm_bundle):
    from edgempir.calib import read_set
    from edgempir.targets.device.bench import rejection_figures
    from edgempir.targets.device.bundle import verify_bundle
    from edgempir.targets.device.runtime import open_model

    b = verify_bundle(unanimous_bundle)
    assert b.reject_policy == "unanimous"
    assert b.manifest["outputs"]["ensemble"][ACCEPTED] == "bool [batch]"
    model = open_model(b)
    for name in ("clean", "adv-adaptive"):
        s = read_set(b.calib_file(name))
        out = model.run_outputs(s["input"])
        np.testing.assert_array_equal(out[ACCEPTED], accepted(out[MEMBER_LOGITS], "unanimous"))
        figs = rejection_figures(model, b, name, s["input"], 64, same_set=True)
        assert figs["deployed_rejection_rate"] == pytest.approx(1 - out[ACCEPTED].mean())
        # the host's figure (PyTorch members at export) matches the engine's on the same set
        assert figs["host_rejection_rate"] == pytest.approx(b.host_rejection[name], abs=0.02)
        assert not figs["rejection_drift"]
    # the default policy is majority: accepted is always true
    a = verify_bundle(arm_bundle)
    assert a.reject_policy == "majority" and set(a.host_rejection.values()) == {0.0}


def test_bad_policy_is_a_clear_export_error(evaluated_run, tmp_path):
    from edgempir.targets.host.export import export_bundle
    from edgempir.targets.host.onnx_export import ExportError

    with pytest.raises(ExportError, match="--reject-policy 'maybe' is unknown"):
        export_bundle(evaluated_run, "x86", tmp_path / "b", reject_policy="maybe")
    assert not (tmp_path / "b").exists()


@pytest.mark.gpu
def test_tensorrt_accepted_matches_numpy(evaluated_run, tmp_path):
    pytest.importorskip("tensorrt", reason="needs TensorRT 10/11 and an NVIDIA GPU (Jetson)")
    from edgempir.calib import read_set
    from edgempir.targets.device.bundle import verify_bundle
    from edgempir.targets.device.runtime import open_model
    from edgempir.targets.host.export import export_bundle

    out = tmp_path / "syn-jetson-unanimous"
    export_bundle(evaluated_run, "jetson", out, n_calib=32, progress=False,
                  reject_policy="unanimous")
    b = verify_bundle(out)
    model = open_model(b)
    s = read_set(b.calib_file("adv-adaptive"))
    got = model.run_outputs(s["input"])
    np.testing.assert_array_equal(got[ACCEPTED].astype(bool),
                                  accepted(got[MEMBER_LOGITS], "unanimous"))
    assert abs((1 - got[ACCEPTED].mean()) - b.host_rejection["adv-adaptive"]) <= 0.02
