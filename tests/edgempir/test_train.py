"""Training: the run directory it leaves, loading it back, --threads not leaking into the
caller. Determinism and resume after SIGKILL: tests/reliability/test_faults.py."""
import json

import pytest
import torch

from edgempir.members import parse_members
from edgempir.rundir import load_run, partial_dir
from edgempir.train import TrainConfig, train


def cfg(out, epochs=2):
    return TrainConfig(out=str(out), dataset="synthetic", members=parse_members("w2a4,fp32"),
                       epochs=epochs, batch_size=64, seed=3)


# Same seed, same weights and resume after SIGKILL: tests/reliability/test_faults.py kills
# `edgempir train` at random points and compares the resumed run with the session's
# synthetic run bit for bit.
def test_run_directory_contents(synthetic_run):
    m = json.loads((synthetic_run / "manifest.json").read_text())
    assert m["schema"] == "edgempir.run" and m["schema_version"] == 1
    assert [x["spec"] for x in m["members"]] == ["w2a4", "w4a4", "fp32"]
    assert [x["weight_bits"] for x in m["members"]] == [2, 4, 32]
    assert len(m["members"][0]["time_per_epoch_s"]) == 1
    assert set(m["metrics"]["clean_accuracy"]["ensemble"]) == {"vote", "mean-softmax", "mean-logits"}
    assert {"torch", "brevitas", "python", "edgempir"} <= set(m["versions"])
    assert (synthetic_run / "train.log").read_text().count("epoch") >= 3
    assert not partial_dir(synthetic_run).exists()
    for f in (synthetic_run / "members").iterdir():  # safetensors, not pickles
        assert f.read_bytes()[8:9] == b"{"


def test_load_run_reproduces_manifest_accuracy(synthetic_run):
    from edgempir.data import load_dataset

    ens = load_run(synthetic_run)
    data = load_dataset("synthetic")
    x = torch.from_numpy(data.x_test).float() / 255
    acc = (ens.predict(x) == torch.from_numpy(data.y_test)).float().mean().item()
    assert acc == pytest.approx(ens.manifest["metrics"]["clean_accuracy"]["ensemble"]["vote"])


def test_threads_option_does_not_leak_into_the_caller(tmp_path):
    # a leaked torch.set_num_threads(1) made later in-process runs compute with another
    # thread count than subprocess runs, and so with other float rounding
    before = torch.get_num_threads()
    c = cfg(tmp_path / "one-thread", epochs=1)
    c.threads = 1 if before != 1 else 2
    train(c, progress=False, echo=lambda s: None)
    assert torch.get_num_threads() == before
