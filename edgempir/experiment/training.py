"""The experiment's models: which members, which training, and getting each trained through
``edgempir.train.train`` with a ``TrainConfig`` (or the default EMPIR copied from a run)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgempir.experiment.config import ExperimentConfig, check_empir_run
from edgempir.experiment.layout import is_trained, run_dir
from edgempir.experiment.workdir import copy_run


def empir_manifest(cfg: ExperimentConfig, out: Path) -> dict | None:
    """The default EMPIR's manifest: the copy's once it exists (the source may change later),
    else the reused run's; None before a trained-here EMPIR exists."""
    from edgempir.rundir import read_manifest

    if is_trained(run_dir(out, "empir")):
        return read_manifest(run_dir(out, "empir"))
    if cfg.empir_run:
        return check_empir_run(Path(cfg.empir_run), cfg.dataset)
    return None


def empir_members(cfg: ExperimentConfig, out: Path) -> list:
    """The default EMPIR's members (else the default preset's)."""
    from edgempir.members import DEFAULT_PRESET, parse_spec, preset

    manifest = empir_manifest(cfg, out)
    if manifest is None:
        return preset(DEFAULT_PRESET, cfg.dataset)
    return [parse_spec(m["spec"]) for m in manifest["members"]]


def augment(cfg: ExperimentConfig, out: Path) -> str:
    """The adversarial models are trained with the default EMPIR's augmentation, so that
    adversarial training is the only difference (the data set's default otherwise)."""
    from edgempir.data import DEFAULT_AUGMENT

    manifest = empir_manifest(cfg, out)
    if manifest is not None:
        return manifest["training"].get("augment", "none")
    return DEFAULT_AUGMENT.get(cfg.dataset, "none")


def train_configs(cfg: ExperimentConfig, out: Path) -> dict:
    """TrainConfig of every model the experiment trains (empir only without --empir-run).

    ``fp32-adv`` gets as many epochs as the adversarial members together: the same number
    of PGD-training forward/backward passes over the same network, i.e. the same training
    compute (QAT is simulated in float, so a low-bit member's pass costs as many FLOPs)."""
    from edgempir.members import FP32
    from edgempir.models import default_arch
    from edgempir.train import TrainConfig

    members = empir_members(cfg, out)
    base = {"dataset": cfg.dataset, "data_dir": cfg.data_dir, "arch": default_arch(cfg.dataset),
            "seed": cfg.seed, "threads": cfg.threads, "augment": augment(cfg, out)}
    adv = {"adv_train": "pgd", "adv_eps": cfg.adv_eps_value, "adv_steps": cfg.adv_steps}
    configs = {
        "empir-adv": TrainConfig(out=str(run_dir(out, "empir-adv")), members=members,
                                 epochs=cfg.adv_epochs, **base, **adv),
        "fp32-adv": TrainConfig(out=str(run_dir(out, "fp32-adv")), members=[FP32],
                                epochs=cfg.adv_epochs * len(members), **base, **adv),
    }
    if not cfg.empir_run:
        configs["empir"] = TrainConfig(out=str(run_dir(out, "empir")), members=members,
                                       epochs=cfg.epochs, **base)
    return configs


def ensure_model(cfg: ExperimentConfig, out: Path, model: str, progress: bool,
                 echo: Callable[[str], None]) -> Path:
    """Train (or resume training, or copy) one model; return its run directory."""
    run = run_dir(out, model)
    if is_trained(run):
        return run
    if model == "empir" and cfg.empir_run:
        copy_run(Path(cfg.empir_run), run)
        echo(f"  copied {cfg.empir_run} to {run} (without eval/ and checkpoints/)")
        return run
    # the module, not the function, is imported: its train is looked up at call time
    from edgempir import train as train_mod
    from edgempir.rundir import partial_dir

    tc = train_configs(cfg, out)[model]
    train_mod.train(tc, resume=partial_dir(run).exists(), progress=progress, echo=echo)
    return run
