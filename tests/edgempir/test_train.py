"""Training: determinism, resume after SIGKILL, run directory contents."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from edgempir.members import parse_members
from edgempir.rundir import load_run, load_weights, partial_dir
from edgempir.train import TrainConfig, train

MEMBERS = "w2a4,fp32"


def cfg(out, epochs=2):
    return TrainConfig(out=str(out), dataset="synthetic", members=parse_members(MEMBERS),
                       epochs=epochs, batch_size=64, seed=3)


def weights(run):
    m = json.loads((run / "manifest.json").read_text())
    return [load_weights(run / mm["file"])[0] for mm in m["members"]]


def assert_same_weights(a, b):
    for wa, wb in zip(weights(a), weights(b)):
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    train(cfg(out), progress=False, echo=lambda s: None)
    return out


def test_same_seed_same_weights(reference_run, tmp_path):
    train(cfg(tmp_path / "again"), progress=False, echo=lambda s: None)
    assert_same_weights(reference_run, tmp_path / "again")


def test_run_directory_contents(reference_run):
    m = json.loads((reference_run / "manifest.json").read_text())
    assert m["schema"] == "edgempir.run" and m["schema_version"] == 1
    assert [x["spec"] for x in m["members"]] == ["w2a4", "fp32"]
    assert m["members"][0]["weight_bits"] == 2 and m["members"][1]["weight_bits"] == 32
    assert len(m["members"][0]["time_per_epoch_s"]) == 2
    assert set(m["metrics"]["clean_accuracy"]["ensemble"]) == {"vote", "mean-softmax", "mean-logits"}
    assert {"torch", "brevitas", "python", "edgempir"} <= set(m["versions"])
    assert (reference_run / "train.log").read_text().count("epoch") >= 4
    assert not partial_dir(reference_run).exists()
    for f in (reference_run / "members").iterdir():  # safetensors, not pickles
        assert f.read_bytes()[8:9] == b"{"


def test_load_run_reproduces_manifest_accuracy(reference_run):
    from edgempir.data import load_dataset

    ens = load_run(reference_run)
    data = load_dataset("synthetic")
    x = torch.from_numpy(data.x_test).float() / 255
    acc = (ens.predict(x) == torch.from_numpy(data.y_test)).float().mean().item()
    assert acc == pytest.approx(ens.manifest["metrics"]["clean_accuracy"]["ensemble"]["vote"])


def test_resume_after_sigkill_mid_epoch_loses_nothing(reference_run, tmp_path):
    out = tmp_path / "killed"
    ckpt = partial_dir(out) / "checkpoints" / "0-w2a4.safetensors"
    args = [sys.executable, "-m", "edgempir.cli", "train", "--dataset", "synthetic",
            "--members", MEMBERS, "--epochs", "2", "--batch-size", "64", "--seed", "3",
            "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch of member 0
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and partial_dir(out).exists()
    again = subprocess.run(args, capture_output=True, text=True)  # noqa: PLW1510
    assert again.returncode == 2 and "--resume" in again.stderr
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True)  # noqa: PLW1510
    assert done.returncode == 0, done.stderr
    assert "resuming after epoch 1" in (out / "train.log").read_text()
    assert_same_weights(reference_run, out)


def test_threads_option_does_not_leak_into_the_caller(tmp_path):
    # a leaked torch.set_num_threads(1) made later in-process runs compute with another
    # thread count than subprocess runs, and so with other float rounding
    before = torch.get_num_threads()
    c = cfg(tmp_path / "one-thread", epochs=1)
    c.threads = 1 if before != 1 else 2
    train(c, progress=False, echo=lambda s: None)
    assert torch.get_num_threads() == before
