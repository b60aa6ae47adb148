"""Fixtures for the attack and robustness tests (the synthetic run lives in tests/conftest.py).

``tiny_model``: an undefended float MLP trained for a second on the synthetic data, the
kind of model on which every attack must succeed; ``tiny_batch``: test images it gets right.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from shared import built_once


@pytest.fixture(scope="session")
def tiny_data():
    from edgempir.data import synthetic, to_float

    ds = synthetic(n_train=1000, n_test=200, seed=3)
    return (to_float(ds.x_train), ds.y_train, to_float(ds.x_test), ds.y_test)


@pytest.fixture(scope="session")
def tiny_model(tiny_data):
    import torch
    from torch import nn

    torch.manual_seed(0)
    x_train, y_train, _, _ = tiny_data
    model = nn.Sequential(nn.Flatten(), nn.Linear(x_train[0].size, 32), nn.ReLU(),
                          nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for epoch in range(8):
        perm = torch.randperm(len(yt), generator=torch.Generator().manual_seed(epoch))
        for s in range(0, len(yt), 100):
            idx = perm[s:s + 100]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_batch(tiny_model, tiny_data):
    """32 test images the tiny model classifies correctly."""
    import torch

    _, _, x_test, y_test = tiny_data
    x, y = torch.from_numpy(x_test), torch.from_numpy(y_test)
    with torch.no_grad():
        ok = tiny_model(x).argmax(1) == y
    assert ok.float().mean() > 0.9, "the tiny model should learn the synthetic data"
    return x[ok][:32], y[ok][:32]


@pytest.fixture
def synthetic_with(monkeypatch):
    """``synthetic_with(n_train=256)``: the data set ``synthetic`` made smaller (or otherwise
    changed) for this test; other data sets load as usual. Its default test split stays, so
    the synthetic run's data fingerprint still matches."""
    from edgempir import data

    real = data.load_dataset

    def use(**kw):
        def load(name=data.DEFAULT_DATASET, data_dir=None, image_size=None):
            return (data.synthetic(**kw) if name == "synthetic"
                    else real(name, data_dir, image_size))
        monkeypatch.setattr(data, "load_dataset", load)
    return use


@pytest.fixture
def run_copy(synthetic_run, tmp_path):
    """A private copy of the synthetic run (evals write into the run directory)."""
    dst = tmp_path / "run"
    shutil.copytree(synthetic_run, dst, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    return dst


@pytest.fixture(scope="session")
def evaluated_run(synthetic_run, tmp_path_factory):
    """The synthetic run evaluated once under both protocols with tiny attack settings,
    once per session for every xdist worker (tests/support/shared.py).

    Returns (run_dir, EvalResult); the result's reports are those ``evaluate`` returned,
    kept as JSON next to the run. Settings are cut down (overrides) to keep the suite fast;
    the reports say so in config_label.
    """
    from edgempir.robustness import EvalResult, evaluate

    def build(out: Path) -> None:
        shutil.copytree(synthetic_run, out / "run",
                        ignore=shutil.ignore_patterns("eval", "checkpoints"))
        result = evaluate(out / "run", protocols=["paper", "adaptive"], config="quick", n=40,
                          seed=0, eps="0.1,0.3", progress=False, overrides=FAST)
        (out / "returned.json").write_text(json.dumps(
            {"reports": result.reports, "files": [str(f) for f in result.files]}))

    out = built_once(tmp_path_factory, "evaluated/library-both-protocols", build)
    returned = json.loads((out / "returned.json").read_text())
    return out / "run", EvalResult(reports=returned["reports"],
                                   files=[Path(f) for f in returned["files"]])


FAST = {
    "bim": {"steps": 5, "step_size": 0.03},
    "pgd": {"steps": 8},
    "vote-pgd": {"steps": 5, "targets": 1},
    "reject": {"steps": 5, "targets": 1},
    "cw": {"steps": 10},
    "apgd-ce": {"steps": 8},
    "square": {"n_queries": 30},
    "disagree": {"steps": 5},
}


@pytest.fixture
def fast_overrides():
    return FAST


@pytest.fixture
def vote_accuracy():
    """The ensemble's accuracy computed independently: members' logits -> numpy vote."""

    def accuracy(run_dir, x: np.ndarray, y: np.ndarray) -> float:
        import torch

        from edgempir.rundir import load_run
        from edgempir.vote import vote

        ens = load_run(run_dir)
        with torch.no_grad():
            logits = ens.member_logits(torch.from_numpy(x)).numpy()
        return float((vote(logits, ens.reference) == y).mean())

    return accuracy
