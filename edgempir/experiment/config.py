"""What an experiment is asked to do: its settings, the fixed names, and the cheap checks
made before anything heavy is loaded or written."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgempir.errors import EdgempirError
from edgempir.experiment.layout import is_trained, run_dir

SCHEMA = "edgempir.experiment"
SCHEMA_VERSION = 1
NAME = "paper-vs-adaptive"
DEFAULT_OUT = f"experiments/{NAME}"
DEFAULT_RESULTS_MD = "docs/RESULTS.md"
PLOT_NAME = "results-acc-vs-eps.png"
DATASETS = ("fashion-mnist", "mnist", "cifar10", "synthetic")
PARTS = ("empir", "empir-adv", "fp32-adv", "curve")
MODELS = ("empir", "empir-adv", "fp32-adv")
#: curve radii as multiples of the data set's eps (Fashion-MNIST: 0.05, 0.1, 0.2)
CURVE_FACTORS = (0.5, 1.0, 2.0)


class ExperimentError(EdgempirError):
    """Bad options for, or an inconsistent state of, an experiment directory."""


@dataclass
class ExperimentConfig:
    out: str = DEFAULT_OUT
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    n: int = 2000
    seed: int = 0
    epochs: int = 5                  # the default-trained EMPIR (when not reused)
    adv_epochs: int = 1              # per adversarially trained member
    adv_steps: int = 3
    adv_eps: float | None = None     # default: the data set's eval eps
    config: str = "quick"            # eval configuration (docs/EVAL.md)
    threads: int | None = None       # None: torch's choice for training, 1 for eval
    empir_run: str | None = None     # reuse this default EMPIR run (copied, not modified)
    curve_eps: list[float] | None = None
    curve_n: int = 300
    only: tuple[str, ...] = PARTS
    results_md: str | None = DEFAULT_RESULTS_MD
    overrides: dict | None = None    # Python API only (tests): eval attack parameters
    batch_size: int = 250            # eval batch

    @property
    def eps(self) -> float:
        from edgempir.data import DEFAULT_EPS

        return DEFAULT_EPS[self.dataset]

    @property
    def adv_eps_value(self) -> float:
        return self.adv_eps if self.adv_eps is not None else self.eps

    @property
    def curve_eps_values(self) -> list[float]:
        if self.curve_eps:
            return list(self.curve_eps)
        return [round(f * self.eps, 6) for f in CURVE_FACTORS]

    def eval_call(self, protocols: list[str], eps: list[float], n: int,
                  attacks: list[str] | None = None) -> dict:
        """The keyword arguments of one ``edgempir.robustness.evaluate`` call (its run
        directory, progress and echo aside); the commands in RESULTS.md are written from the
        same dict, so what is shown is what ran."""
        call = {"protocols": list(protocols), "config": self.config, "eps": list(eps), "n": n,
                "seed": self.seed, "batch_size": self.batch_size, "data_dir": self.data_dir,
                "overrides": self.overrides, "threads": self.threads or 1}
        if attacks is not None:
            call["attacks"] = list(attacks)
        return call

    def settings(self) -> dict:
        """What determines the results: a directory started with other settings is refused."""
        return {"experiment": NAME, "dataset": self.dataset, "n": self.n, "seed": self.seed,
                "eps": self.eps, "config": self.config, "epochs": self.epochs,
                "adv_train": "pgd", "adv_epochs": self.adv_epochs, "adv_steps": self.adv_steps,
                "adv_eps": self.adv_eps_value, "empir_run": self.empir_run,
                "curve_eps": self.curve_eps_values, "curve_n": self.curve_n,
                "overrides": self.overrides or {}}


def validate(cfg: ExperimentConfig) -> None:
    """Everything cheap, before anything heavy is loaded or written."""
    from edgempir.robustness import CONFIG_NAMES

    if cfg.dataset not in DATASETS:
        raise ExperimentError(f"unknown data set {cfg.dataset!r}; choose one of "
                              f"{', '.join(DATASETS)}")
    if cfg.config not in CONFIG_NAMES:
        raise ExperimentError(f"unknown eval configuration {cfg.config!r}; choose one of "
                              f"{', '.join(CONFIG_NAMES)}")
    for name, value in (("--n", cfg.n), ("--curve-n", cfg.curve_n), ("--epochs", cfg.epochs),
                        ("--adv-epochs", cfg.adv_epochs), ("--adv-steps", cfg.adv_steps)):
        if value < 1:
            raise ExperimentError(f"{name} {value}: must be at least 1")
    bad = [p for p in cfg.only if p not in PARTS]
    if bad or not cfg.only:
        raise ExperimentError(f"--only {','.join(cfg.only)}: choose among {', '.join(PARTS)}")
    if not 0 < cfg.adv_eps_value < 1:
        raise ExperimentError(f"--adv-eps {cfg.adv_eps_value}: must be in (0, 1)")
    if cfg.empir_run is not None and not is_trained(run_dir(Path(cfg.out), "empir")):
        check_empir_run(Path(cfg.empir_run), cfg.dataset)


def parse_curve_eps(text: str | None, dataset: str) -> list[float] | None:
    """``--curve-eps 0.05,0.1,0.2`` (or 8/255); None keeps the default multiples of eps."""
    if text is None or not text.strip():
        return None
    from edgempir.attacks.base import AttackError
    from edgempir.robustness import parse_eps_list

    try:
        return parse_eps_list(text, dataset)
    except AttackError as e:
        raise ExperimentError(f"--curve-eps: {e}") from None


def check_empir_run(run: Path, dataset: str) -> dict:
    """The manifest of a run given as --empir-run, if it can stand for the default EMPIR."""
    from edgempir.rundir import read_manifest

    manifest = read_manifest(run)
    if manifest["dataset"]["name"] != dataset:
        raise ExperimentError(f"--empir-run {run} was trained on {manifest['dataset']['name']}, "
                              f"not {dataset}; pass --dataset {manifest['dataset']['name']} or "
                              "another run")
    if (manifest.get("training") or {}).get("adversarial"):
        raise ExperimentError(f"--empir-run {run} was adversarially trained; the experiment "
                              "needs EMPIR with default training")
    if len(manifest["members"]) < 2:
        raise ExperimentError(f"--empir-run {run} has {len(manifest['members'])} member; "
                              "EMPIR needs at least 2")
    return manifest
