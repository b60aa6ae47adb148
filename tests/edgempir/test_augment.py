"""``--augment hflip`` shows the members each training image mirrored left-right with
probability 1/2, and ``none`` shows every image as it is: checked on the batches the
optimizer steps receive, on a data set whose images are told apart from their mirrors."""
from __future__ import annotations

import numpy as np
import pytest


def _mirror_classes(n_train: int = 256, n_test: int = 128, size: int = 28, seed: int = 0):
    """Class 0: a bar in the left third of the image; class 1: the same bar mirrored."""
    from edgempir.data import Dataset

    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 2, size=n)
        x = rng.integers(0, 60, size=(n, 1, size, size))
        rows = rng.integers(2, size - 12, size=n)
        for i, (label, top) in enumerate(zip(y, rows)):
            cols = slice(2, 8) if label == 0 else slice(size - 8, size - 2)
            x[i, 0, top:top + 10, cols] = 255
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return Dataset("synthetic", x_train, y_train, x_test, y_test, ("left", "right"), "generated")


@pytest.fixture
def mirror_data(monkeypatch):
    from edgempir import data

    dataset = _mirror_classes()
    monkeypatch.setattr(data, "load_dataset", lambda *a, **kw: dataset)
    return dataset


def _train_and_record_batches(tmp_path, monkeypatch, augment: str) -> list:
    """Train (one epoch, two members) and keep every (images, labels) batch the members'
    optimizer steps saw."""
    from edgempir import adv_train
    from edgempir.members import parse_members
    from edgempir.train import TrainConfig, train

    seen = []
    real = adv_train.training_step_loss

    def recording(model, xb, yb, *args, **kw):
        seen.append((xb.clone(), yb.clone()))
        return real(model, xb, yb, *args, **kw)

    monkeypatch.setattr(adv_train, "training_step_loss", recording)
    cfg = TrainConfig(out=str(tmp_path / augment), dataset="synthetic", arch="mnist",
                      members=parse_members("w4a4,fp32"), epochs=1, batch_size=64, seed=0,
                      augment=augment, threads=1)
    train(cfg, progress=False, echo=lambda s: None)
    return seen


def _mirrored_share(seen, dataset) -> float:
    """The share of training images seen mirrored left-right (each image of the mirror
    data set is told apart from its mirror by its class's bar)."""
    import torch

    originals = torch.from_numpy(dataset.x_train).float().div(255.0)
    flat = originals.flatten(1)
    mirrored = 0
    total = 0
    for xb, yb in seen:
        for x, y in zip(xb, yb):
            exact = (flat == x.flatten()).all(1)
            mirror = (flat == x.flip(2).flatten()).all(1)
            # every batch image is a training image, as it is or mirrored, with its own label
            assert bool(exact.any()) != bool(mirror.any())
            row = int((exact | mirror).nonzero()[0])
            assert int(dataset.y_train[row]) == int(y)
            mirrored += bool(mirror.any())
            total += 1
    assert total == 2 * len(dataset.y_train)         # two members, one epoch each
    return mirrored / total


def test_hflip_shows_each_member_half_its_images_mirrored(tmp_path, monkeypatch, mirror_data):
    assert _mirrored_share(_train_and_record_batches(tmp_path, monkeypatch, "none"),
                           mirror_data) == 0
    share = _mirrored_share(_train_and_record_batches(tmp_path, monkeypatch, "hflip"),
                            mirror_data)
    assert 0.4 <= share <= 0.6, share                # p = 1/2 per image, 512 draws
    import json
    manifest = json.loads((tmp_path / "hflip" / "manifest.json").read_text())
    assert manifest["training"]["augment"] == "hflip"
