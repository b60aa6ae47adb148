"""A tiny preset-paper run (DoReFa members) exports with integer kernels and validates.

The reference's last quantized conv feeds the float classifier unquantized; the export turns
it into ConvInteger (targets/host/conv_integer.py), so ONNX Runtime's optimised graph must hold
no float convolution in a low-bit member, and ONNX Runtime must agree with PyTorch on every
top-1 decision of the clean and adversarial sets.
"""
from __future__ import annotations

import json
import shutil

import pytest

FLOAT_CONVS = ("Conv", "FusedConv", "NchwcConv")


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """Trained for one epoch and evaluated with short attacks: export needs the adversarial
    set, not strong attacks (the eval command itself is tested in tests/cli)."""
    from edgempir.eval import evaluate
    from edgempir.members import PRESET_QUANTIZER, preset
    from edgempir.train import TrainConfig, train

    out = tmp_path_factory.mktemp("paper") / "synthetic-paper"
    cfg = TrainConfig(out=str(out), dataset="synthetic", arch="mnist",
                      members=preset("paper", "synthetic"), epochs=1, batch_size=64,
                      preset="paper", quantizer=PRESET_QUANTIZER["paper"], schedule="constant")
    train(cfg, progress=False, echo=lambda s: None)
    # 32 images: the calibration sets export takes below
    evaluate(out, config="quick", n=32, attacks=["pgd"], progress=False,
             overrides={"pgd": {"steps": 8}, "reject": {"steps": 3, "targets": 1},
                        "disagree": {"steps": 5}})
    return out


def test_paper_run_records_its_family(paper_run):
    manifest = json.loads((paper_run / "manifest.json").read_text())
    assert manifest["preset"] == "paper" and manifest["quantizer"] == "dorefa"
    assert manifest["training"]["schedule"] == "constant"


def test_paper_members_export_with_integer_kernels_and_full_agreement(paper_run, tmp_path):
    from edgempir.targets.host.export import export_bundle

    out = tmp_path / "bundle"
    m = export_bundle(paper_run, "x86", out, n_calib=32, progress=False)
    for mem in m["members"][:2]:  # the two DoReFa members
        ops = mem["optimized_ops"]
        assert not any(ops.get(op) for op in FLOAT_CONVS), ops
        assert ops.get("QLinearConv", 0) + ops.get("ConvInteger", 0) == 3, ops
        assert mem["integer_kernels"] == mem["layers"]["quantized"] == 3
        # 2-bit DoReFa weights are the odd integers -3..3: packed in 4-bit containers
        assert mem["weight_bytes"]["storage"] == "packed-int4"
    for name in ("clean", "adv-adaptive"):
        for rep in (m["validation"][name]["member_files"],
                    m["validation"][name]["ensemble_graph"]):
            assert rep["ensemble"]["agreement"] == 1.0
            assert all(x["agreement"] == 1.0 for x in rep["members"])
    shutil.rmtree(out)
