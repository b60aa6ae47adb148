"""Fixtures for the targets tests: an evaluated run and bundles exported from it.

The evaluated run is the shared ``synthetic_run`` plus ``edgempir eval --config quick``
when the eval command exists; without it (eval is written in parallel) the fixture writes
the two files export reads, in eval's format, with a real one-step FGSM on the vote's
surrogate so the adversarial set is not just noise.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m edgempir.cli ARGS`` as a user runs it (tests/conftest.py's run_cli)."""
    proc = subprocess.run([sys.executable, "-m", "edgempir.cli", *args], capture_output=True,
                          text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgempir {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def write_eval_files(run: Path, n: int = 64, eps: float = 0.1, seed: int = 0) -> None:
    """eval/adaptive-quick.json and eval/adv-adaptive.npz in eval's format."""
    import torch
    from edgempir.calib import write_set

    from edgempir.data import load_dataset, to_float
    from edgempir.rundir import load_run

    ens = load_run(run)
    ds = load_dataset(ens.manifest["dataset"]["name"])
    idx = np.sort(np.random.default_rng(seed).choice(len(ds.y_test), n, replace=False))
    x = torch.from_numpy(to_float(ds.x_test[idx])).requires_grad_(True)
    y = torch.from_numpy(ds.y_test[idx])
    loss = torch.nn.functional.nll_loss(ens.surrogate()(x), y)
    loss.backward()
    x_adv = (x + eps * x.grad.sign()).clamp(0, 1).detach()
    with torch.no_grad():
        clean_ok = (ens.predict(x) == y).float().mean().item()
        adv_ok = (ens.predict(x_adv) == y).float().mean().item()
    eval_dir = run / "eval"
    eval_dir.mkdir(exist_ok=True)
    write_set(eval_dir / "adv-adaptive.npz", x_adv.numpy(), y.numpy(), index=idx.astype(np.int64),
              eps=np.float32(eps), protocol=np.array("adaptive"), config=np.array("quick"))
    report = {"schema": "edgempir.eval", "schema_version": 1, "protocol": "adaptive",
              "config": "quick", "norm": "Linf", "eps": [eps], "n_examples": n, "seed": seed,
              "results": [{"eps": eps, "clean": {"ensemble": clean_ok, "members": []},
                           "worst_case": {"ensemble": adv_ok, "members": []}}],
              "worst_case_over": "fgsm (test fixture)",
              "adversarial_examples": "adv-adaptive.npz"}
    (eval_dir / "adaptive-quick.json").write_text(json.dumps(report))


def evaluated_copy(synthetic_run: Path) -> Path:
    """A copy of the synthetic run with an adaptive eval (adv set + report), made once.

    Cached next to the session's synthetic run so that tests/cli reuses it (its fixtures
    cannot see this conftest's).
    """
    run = synthetic_run.parent / "evaluated" / "synthetic"
    done = run.parent / ".complete"
    if done.exists():
        return run
    if run.parent.exists():
        shutil.rmtree(run.parent)
    run.parent.mkdir(parents=True)
    shutil.copytree(synthetic_run, run, ignore=shutil.ignore_patterns("eval"))
    if (REPO / "cli" / "eval_cmd.py").is_file():
        # the real adaptive protocol, kept small: PGD only, 64 images
        cli("eval", str(run), "--config", "quick", "--n", "64", "--attacks", "pgd")
    else:
        write_eval_files(run)
    done.write_text("ok")
    return run


@pytest.fixture(scope="session")
def evaluated_run(synthetic_run) -> Path:
    return evaluated_copy(synthetic_run)


@pytest.fixture(scope="session")
def arm_bundle(evaluated_run, tmp_path_factory) -> Path:
    from edgempir.targets.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "syn-arm"
    export_bundle(evaluated_run, "arm", out, n_calib=64, progress=False)
    return out


@pytest.fixture(scope="session")
def jetson_bundle(evaluated_run, tmp_path_factory) -> Path:
    from edgempir.targets.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "syn-jetson"
    export_bundle(evaluated_run, "jetson", out, n_calib=64, progress=False)
    return out


BITS = tuple(range(2, 9))


def small_member(bits: int, seed: int = 0):
    """An untrained w{bits}a{bits} paper MNIST member with its activation scales initialised."""
    import torch

    from edgempir.members import MemberSpec
    from edgempir.models import build_model

    torch.manual_seed(seed + bits)
    model = build_model("mnist", MemberSpec(bits, bits), (1, 28, 28), 10)
    model.train()
    with torch.no_grad():  # two batches give the activation quantizers a runtime scale
        for _ in range(2):
            model(torch.rand(8, 1, 28, 28))
    return model.eval()


@pytest.fixture(scope="session")
def small_members(tmp_path_factory) -> dict:
    """bits -> (PyTorch model, exported ONNX path) for every bit width 2..8."""
    from edgempir.targets.onnx_export import export_member

    root = tmp_path_factory.mktemp("members")
    out = {}
    for bits in BITS:
        model = small_member(bits)
        path = root / f"w{bits}a{bits}.onnx"
        export_member(model, path, (1, 28, 28))
        out[bits] = (model, path)
    return out


@pytest.fixture(scope="session")
def probe_inputs() -> np.ndarray:
    """Inputs for comparing runtimes: half on the 8-bit grid (camera images), half off it."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28)).astype(np.float32)
    x[:32] = np.round(x[:32] * 255) / 255
    return x
