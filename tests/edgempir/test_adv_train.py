"""Adversarial training on synthetic data: the adversarial batch accuracy sits below the
clean one, and the loss goes down. 512 training images in batches of 32: every code path,
in a quarter of the default data's time."""

import pytest

from edgempir.members import parse_members
from edgempir.train import TrainConfig, train


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_adversarial_training_loop(tmp_path, method, synthetic_with):
    synthetic_with(n_train=512)
    cfg = TrainConfig(out=str(tmp_path / method), dataset="synthetic",
                      members=parse_members("w2a4,fp32"), epochs=2, batch_size=32, seed=1,
                      adv_train=method, adv_eps=0.05, adv_steps=2)
    manifest = train(cfg, progress=False, echo=lambda s: None)
    assert manifest["training"]["adversarial"]["method"] == method
    assert manifest["dataset"]["n_train"] == 512
    for member in manifest["members"]:
        h = member["history"]
        assert h[-1]["loss"] < h[0]["loss"]
        assert all(e["train_adversarial_accuracy"] <= e["train_accuracy"] for e in h)
        assert h[-1]["train_adversarial_accuracy"] < h[-1]["train_accuracy"]
