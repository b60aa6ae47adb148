"""Adversarial training on synthetic data: the adversarial batch accuracy sits below the
clean one, and the loss goes down."""

import pytest

from edgempir.members import parse_members
from edgempir.train import TrainConfig, train


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_adversarial_training_loop(tmp_path, method):
    cfg = TrainConfig(out=str(tmp_path / method), dataset="synthetic",
                      members=parse_members("w2a4,fp32"), epochs=2, batch_size=128, seed=1,
                      adv_train=method, adv_eps=0.05, adv_steps=2)
    manifest = train(cfg, progress=False, echo=lambda s: None)
    assert manifest["training"]["adversarial"]["method"] == method
    for member in manifest["members"]:
        h = member["history"]
        assert h[-1]["loss"] < h[0]["loss"]
        assert all(e["train_adversarial_accuracy"] <= e["train_accuracy"] for e in h)
        assert h[0]["train_adversarial_accuracy"] < h[0]["train_accuracy"]
