"""Shared fixtures, each expensive artefact built once per test session: one tiny trained run
on synthetic data, its evaluation and x86 bundle, and the tiny numpy-built bundle.
Plain helpers live in tests/support (``import testkit``).

Fixtures that build on it live next to the tests that use them
(tests/edgempir/conftest.py for eval, tests/targets/conftest.py for bundles).
"""
from __future__ import annotations

import os

# Before anything imports numpy or torch: their thread pools read OMP_NUM_THREADS once, when
# they load. Under pytest-xdist (``-n 2``, scripts/test.sh) each worker, and every command it
# starts, computes on one thread: two workers on CI's two cores. A worker inherits the
# controller's environment, so it overrides what the controller set; a ``setdefault`` here
# kept the controller's 2, and two workers ran four threads on two cores (the adversarial
# training test took 2.4x its time alone). Run without workers, two threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import testkit as H
from shared import built_once, exported_once
from tiny_bundle import make_tiny_bundle

REPO = Path(__file__).resolve().parents[1]


#: The slowest test files, slowest first (their seconds summed in a fresh-clone CI run,
#: 2026-12-01 10:38 UTC: faults 88 with the session's run and evaluation, arm 60,
#: eval_cli 28, cifar 25, robustness 25, experiment 23, experiment_cli 22, perf 21,
#: device_install 20, adv_train 16; the rest 14 and below).
#: scripts/test.sh hands the workers whole files in collection order
#: (``--dist loadfile --no-loadscope-reorder``); slow files last would leave one worker
#: running them alone at the end. The three after the first need no artefact the first
#: builds (the session's trained run), so the other worker does not wait for it.
SLOWEST_FILES = (
    "reliability/test_faults.py", "cli/test_cifar_cli.py", "cli/test_device_install.py",
    "edgempir/test_adv_train.py", "targets/test_arm.py", "cli/test_eval_cli.py",
    "edgempir/test_robustness.py", "edgempir/test_experiment.py",
    "cli/test_experiment_cli.py", "benchmarks/test_perf_smoke.py",
    "edgempir/test_distributed_eval.py", "reliability/test_hostile.py",
    "edgempir/test_train.py", "targets/test_paper_export.py", "cli/test_export_cli.py",
    "edgempir/test_presets.py", "cli/test_train_cli.py", "cli/test_folder_cli.py",
    "edgempir/test_distributed.py", "reliability/test_fuzz.py",
    "reliability/test_hostile_inputs.py", "targets/test_packing.py", "edgempir/test_archs.py")


def pytest_collection_modifyitems(config, items):
    """The slowest files first (SLOWEST_FILES), the rest in collection order; a file's tests
    stay together and in order."""
    missing = [name for name in SLOWEST_FILES if not (REPO / "tests" / name).is_file()]
    if missing:  # a renamed file would silently lose its place
        raise pytest.UsageError(f"tests/conftest.py SLOWEST_FILES: no tests/{missing[0]}")
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}

    def key(item) -> int:
        rel = Path(item.path).resolve().relative_to(REPO / "tests").as_posix()
        return rank.get(rel, len(SLOWEST_FILES))

    items.sort(key=key)  # stable


def run_cli(*args: str, env: dict | None = None, check: bool = True, timeout: int = 600
            ) -> subprocess.CompletedProcess:
    """Run ``python -m edgempir.cli ARGS`` in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "edgempir.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgempir {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def cli():
    """``cli("train", "--help")`` runs the command line in a subprocess (see run_cli).

    A fixture rather than an import: tests/ is not on sys.path, because its folder
    tests/edgempir would shadow the installed package.
    """
    return run_cli


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """A trained run directory (w2a4, w4a4, fp32 on synthetic data, 1 epoch)."""
    def build(out: Path) -> None:
        from edgempir.members import parse_members
        from edgempir.train import TrainConfig, train

        cfg = TrainConfig(out=str(out), dataset="synthetic", arch="mnist",
                          members=parse_members("w2a4,w4a4,fp32"), epochs=1, batch_size=64,
                          seed=0)
        train(cfg, progress=False, echo=lambda s: None)
    return built_once(tmp_path_factory, "runs/synthetic", build)


@pytest.fixture(scope="session")
def evaluated_run(synthetic_run, tmp_path_factory) -> Path:
    """synthetic_run copied and evaluated once (``testkit.EVAL_ARGS``: adaptive protocol,
    quick, PGD only, 32 images): what export needs. Shared by tests/targets and tests/cli."""
    def build(run: Path) -> None:
        shutil.copytree(synthetic_run, run, ignore=shutil.ignore_patterns("eval"))
        run_cli("eval", str(run), *H.EVAL_ARGS)
    return built_once(tmp_path_factory, "evaluated/synthetic", build)


@pytest.fixture(scope="session")
def x86_bundle(evaluated_run, tmp_path_factory) -> Path:
    """An x86 bundle exported from ``evaluated_run`` (64 calibration images: the fault
    test re-exports with testkit.EXPORT_N_CALIB and compares), once per
    session for tests/cli (as ``bundle``) and tests/reliability. Read-only: copy it before
    damaging it."""
    return exported_once(tmp_path_factory, evaluated_run, "x86")


# ----------------------------------------------------------------- the tiny bundle
@pytest.fixture(scope="session")
def tiny_bundle_factory(tmp_path_factory):
    made = {}

    def make(runtime="onnxruntime", target="x86", fp32=True, vote_mode="full") -> Path:
        key = (runtime, target, fp32, vote_mode)
        if key not in made:
            made[key] = make_tiny_bundle(tmp_path_factory.mktemp("tiny") / f"tiny-{target}",
                                         runtime, target, fp32, vote_mode)
        return made[key]
    return make


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bundle_factory) -> Path:
    return tiny_bundle_factory()


@pytest.fixture
def tiny_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy a test may damage."""
    dst = tmp_path / "tiny-x86"
    shutil.copytree(tiny_bundle, dst)
    return dst
