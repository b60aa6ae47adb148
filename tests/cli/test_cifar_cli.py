"""CIFAR-10 as a user with the files runs it (binary batches generated here): the paper
preset on the reference CIFAR net and the edge preset on ResNet-8 train with their recipes,
evaluate, and export with every quantized layer an integer kernel at 100% agreement."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgempir.cli import main


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """CIFAR-10's binary batches: 5 x 32 training and 32 test images."""
    folder = tmp_path_factory.mktemp("cifar-10-batches-bin")
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (32, 3073), dtype=np.uint8)
        rec[:, 0] %= 10
        (folder / name).write_bytes(rec.tobytes())
    return folder


def _run(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


@pytest.mark.parametrize("preset, arch, members, recipe", [
    ("paper", None, ["w4a2", "w2a2", "fp32"],
     {"schedule": "constant", "label_smoothing": 0.1, "augment": "none"}),
    ("edge", "resnet8", ["w4a2", "w2a2", "fp32"],
     {"schedule": "cosine", "label_smoothing": 0.0, "augment": "hflip"}),
])
def test_cifar10_trains_evaluates_and_exports(tmp_path, cifar_dir, preset, arch, members,
                                             recipe):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    data = ["--data-dir", str(cifar_dir)]
    _run("train", "--dataset", "cifar10", *data, "--preset", preset, "--epochs", "1",
         "--threads", "1", *(["--arch", arch] if arch else []), "--out", str(run), "--json")
    m = json.loads((run / "manifest.json").read_text())
    assert m["arch"] == (arch or "cifar") and m["preset"] == preset
    assert [x["spec"] for x in m["members"]] == members
    assert {k: m["training"][k] for k in recipe} == recipe
    assert m["dataset"]["input_shape"] == [3, 32, 32]

    _run("eval", str(run), *data, "--config", "quick", "--n", "16", "--attacks", "pgd",
         "--threads", "1")
    report = json.loads((run / "eval" / "adaptive-quick.json").read_text())
    assert report["eps"] == [pytest.approx(8 / 255)]          # CIFAR-10's adaptive budget
    assert report["n_examples"] == 16

    _run("export", str(run), *data, "--target", "x86", "--out", str(bundle))
    b = json.loads((bundle / "manifest.json").read_text())
    for member in b["members"]:
        if member["spec"] != "fp32":
            assert member["integer_kernels"] == member["layers"]["quantized"] > 0, member
            assert member["layers"]["float_conv"] == 0, member
    for check in b["validation"]["clean"]["member_files"]["members"]:
        assert check["agreement"] == 1.0, check
    assert b["validation"]["clean"]["ensemble_graph"]["ensemble"]["agreement"] == 1.0
