"""The paper-vs-adaptive experiment (issue 8): what EMPIR buys, measured honestly.

One command trains and evaluates, on one test subset and one eps, these models:

- ``empir``: the paper's ensemble (default training; or a copy of an existing run);
  scored by protocol paper and by protocol adaptive, and each member alone;
- ``empir-adv``: the same members, each adversarially trained (Madry PGD), adaptive;
- ``fp32-adv``: one full-precision model, PGD-trained for as many epochs as the
  adversarial members together (the same training compute: the same number of
  forward/backward passes over the same network), adaptive;

and a robust-accuracy-vs-eps curve for each (PGD only, on a smaller subset). Everything is
done by the library's own ``train`` and ``evaluate``; this module only orders the steps,
keeps their results and writes the tables.

Layout of ``--out`` (default ``experiments/paper-vs-adaptive``)::

    experiment.json          the settings this directory was started with
    invocations.jsonl        one line per invocation (argv, start time)
    runs/<model>/            one run directory per trained model (eval/ inside)
    rows/<row>.json          one finished table row each, written atomically
    curves/<model>/          a copy of the run for the curve evals (keeps run/eval intact)
    curves/<model>.json      the finished curve of that model
    results.json             every row, model compute, curves, commands, versions
    locks/                   step locks (two invocations may share the directory)

Resume: a row whose JSON exists is never recomputed; a training resumes from its last
epoch (``train --resume``); an eval resumes from its finished attacks (eval/partial/).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgempir.errors import EdgempirError
from edgempir.validate import loads_json, read_json

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
LOCK_POLL_S = 5.0


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

    def settings(self) -> dict:
        """What determines the results: a directory started with other settings is refused."""
        return {"experiment": NAME, "dataset": self.dataset, "n": self.n, "seed": self.seed,
                "eps": self.eps, "config": self.config, "epochs": self.epochs,
                "adv_train": "pgd", "adv_epochs": self.adv_epochs, "adv_steps": self.adv_steps,
                "adv_eps": self.adv_eps_value, "empir_run": self.empir_run,
                "curve_eps": self.curve_eps_values, "curve_n": self.curve_n,
                "overrides": self.overrides or {}}


# ------------------------------------------------------------------ validation
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
    if cfg.empir_run is not None and not _is_trained(run_dir(Path(cfg.out), "empir")):
        _check_empir_run(Path(cfg.empir_run), cfg.dataset)


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


def _check_empir_run(run: Path, dataset: str) -> dict:
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


# ------------------------------------------------------------------ the experiment directory
def _open_dir(cfg: ExperimentConfig, force: bool, argv: list[str] | None) -> Path:
    """Create or check ``--out``; refuse a directory started with other settings."""
    out = Path(cfg.out)
    state = out / "experiment.json"
    if force and out.exists():
        if not state.is_file() and _foreign_files(out):
            raise ExperimentError(f"--force: {out} is not an experiment directory (no "
                                  "experiment.json); refusing to delete it, choose another --out")
        shutil.rmtree(out)
    if state.is_file():
        saved = read_json(state, error=ExperimentError,
                          hint="pass --force to start over, or choose another --out")
        saved = saved.get("settings") if isinstance(saved, dict) else None
        saved = saved if isinstance(saved, dict) else {}
        now = json.loads(json.dumps(cfg.settings()))
        if saved != now:
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise ExperimentError(f"{out} was started with other settings ({', '.join(diff)}); "
                                  "rerun with the same options, pass --force to start over, "
                                  "or choose another --out")
    elif out.exists() and _foreign_files(out):
        raise ExperimentError(f"{out} exists and is not an experiment directory; choose "
                              "another --out")
    from edgempir.fsutil import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    if not state.is_file():
        atomic_write_json(state, {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
                                  "settings": cfg.settings()})
    _log_invocation(out, argv)
    return out


def _foreign_files(out: Path) -> bool:
    # a log file redirected into --out by the shell may exist before we start
    return any(p.name != "locks" and p.suffix != ".log" for p in out.iterdir())


def _log_invocation(out: Path, argv: list[str] | None) -> None:
    # one short line appended with O_APPEND: two invocations sharing --out cannot interleave
    line = json.dumps({"argv": argv, "started": _now(), "pid": os.getpid()}) + "\n"
    with open(out / "invocations.jsonl", "a") as f:
        f.write(line)


def _invocations(out: Path) -> list[dict]:
    path = out / "invocations.jsonl"
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        with contextlib.suppress(EdgempirError):
            lines.append(loads_json(text, str(path)))
    return lines


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def try_lock(out: Path, name: str) -> Path | None:
    """Take the step's lock, or None if another live process holds it.

    The lock file holds the owner's pid; a lock whose process is gone is stale and taken
    over, so a killed run never blocks its own resume."""
    path = out / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _lock_is_stale(path):
                return None
            path.unlink(missing_ok=True)
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return path
    return None


def _lock_is_stale(path: Path) -> bool:
    try:
        text = path.read_text().strip()
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False  # released meanwhile: try again
    if not text.isdigit():
        return age > 10  # the owner has not written its pid yet, or garbage
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# ------------------------------------------------------------------ the models
def run_dir(out: Path, model: str) -> Path:
    return out / "runs" / model


def _is_trained(run: Path) -> bool:
    return (run / "manifest.json").is_file()


def _empir_manifest(cfg: ExperimentConfig, out: Path) -> dict | None:
    """The default EMPIR's manifest: the copy's once it exists (the source may change later),
    else the reused run's; None before a trained-here EMPIR exists."""
    from edgempir.rundir import read_manifest

    if _is_trained(run_dir(out, "empir")):
        return read_manifest(run_dir(out, "empir"))
    if cfg.empir_run:
        return _check_empir_run(Path(cfg.empir_run), cfg.dataset)
    return None


def _empir_members(cfg: ExperimentConfig, out: Path) -> list:
    """The default EMPIR's members (else the paper preset)."""
    from edgempir.members import parse_spec, preset

    manifest = _empir_manifest(cfg, out)
    if manifest is None:
        return preset("paper", cfg.dataset)
    return [parse_spec(m["spec"]) for m in manifest["members"]]


def _augment(cfg: ExperimentConfig, out: Path) -> str:
    """The adversarial models are trained with the default EMPIR's augmentation, so that
    adversarial training is the only difference (the data set's default otherwise)."""
    from edgempir.data import DEFAULT_AUGMENT

    manifest = _empir_manifest(cfg, out)
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

    members = _empir_members(cfg, out)
    base = {"dataset": cfg.dataset, "data_dir": cfg.data_dir, "arch": default_arch(cfg.dataset),
            "seed": cfg.seed, "threads": cfg.threads, "augment": _augment(cfg, out)}
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
    if _is_trained(run):
        return run
    if model == "empir" and cfg.empir_run:
        _copy_run(Path(cfg.empir_run), run)
        echo(f"  copied {cfg.empir_run} to {run} (without eval/ and checkpoints/)")
        return run
    from edgempir import train as train_mod
    from edgempir.rundir import partial_dir

    tc = train_configs(cfg, out)[model]
    resume = partial_dir(run).exists()
    train_mod.train(tc, resume=resume, progress=progress, echo=echo)
    return run


def _copy_run(src: Path, dst: Path) -> None:
    # eval/ of the source holds another subset's attacks, checkpoints/ only resume state:
    # neither is needed, and the source is never written to
    from edgempir.fsutil import atomic_dir

    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("eval", "checkpoints"))


# ------------------------------------------------------------------ rows
@dataclass(frozen=True)
class EvalStep:
    """One evaluation of one model under one protocol; it gives one or more rows."""

    model: str
    protocol: str

    @property
    def name(self) -> str:
        return f"eval-{self.model}-{self.protocol}"

    @property
    def ensemble_row(self) -> str:
        return row_id(self.model, self.protocol, None)


def row_id(model: str, protocol: str, member: int | None) -> str:
    return f"{model}-{protocol}" if member is None else f"{model}-m{member}-{protocol}"


EVAL_STEPS = {
    "empir": (EvalStep("empir", "paper"), EvalStep("empir", "adaptive")),
    "empir-adv": (EvalStep("empir-adv", "adaptive"),),
    "fp32-adv": (EvalStep("fp32-adv", "adaptive"),),
}


def rows_dir(out: Path) -> Path:
    return out / "rows"


def step_done(out: Path, step: EvalStep) -> bool:
    # the ensemble row is written last, so its file marks the whole step as done
    return (rows_dir(out) / f"{step.ensemble_row}.json").is_file()


def run_eval_step(cfg: ExperimentConfig, out: Path, step: EvalStep, progress: bool,
                  echo: Callable[[str], None]) -> None:
    from edgempir import robustness
    from edgempir.fsutil import atomic_write_json

    run = run_dir(out, step.model)
    result = robustness.evaluate(run, protocols=[step.protocol], config=cfg.config,
                                 eps=[cfg.eps], n=cfg.n, seed=cfg.seed,
                                 batch_size=cfg.batch_size, data_dir=cfg.data_dir,
                                 progress=progress, echo=echo, overrides=cfg.overrides,
                                 threads=cfg.threads or 1)
    report = result.reports[step.protocol]
    report_path = run / "eval" / f"{step.protocol}-{cfg.config}.json"
    for row in rows_from_report(step, report, report_path):
        atomic_write_json(rows_dir(out) / f"{row['id']}.json", row)


def rows_from_report(step: EvalStep, report: dict, report_path: Path) -> list[dict]:
    """The step's rows: each member that was attacked (alone) first, the ensemble last.

    A single-model run (fp32-adv) gives only its ensemble row: the two are the same model."""
    res = report["results"][0]
    n_members = len(report["members"])
    rows = []
    if n_members > 1:
        for i in range(n_members):
            if res["worst_case"]["members"][i] is None:
                continue  # not attacked alone under this protocol/config (paper quick)
            rows.append(_row(step, report, report_path, i))
    rows.append(_row(step, report, report_path, None))
    return rows


def _row(step: EvalStep, report: dict, report_path: Path, member: int | None) -> dict:
    res = report["results"][0]

    def pick(fig):
        if fig is None:
            return None
        return fig.get("ensemble") if member is None else (fig.get("members") or [])[member]

    attacks = {name: pick(a) for name, a in res["attacks"].items()}
    return {
        "schema": f"{SCHEMA}.row", "schema_version": SCHEMA_VERSION,
        "id": row_id(step.model, step.protocol, member), "model": step.model,
        "member": member,
        "spec": ("+".join(m["spec"] for m in report["members"]) if member is None
                 else report["members"][member]["spec"]),
        "protocol": step.protocol, "config": report["config"],
        "config_label": report["config_label"], "n": report["n_examples"],
        "seed": report["seed"], "eps": res["eps"], "norm": report["norm"],
        "combiner": report["combiner"] if member is None else "member alone",
        "clean": pick(res["clean"]), "worst_case": pick(res["worst_case"]),
        "worst_case_over": res["worst_case"].get("over"),
        "attacks": {k: v for k, v in attacks.items() if v is not None},
        "attack_notes": {k: _attack_note(a) for k, a in res["attacks"].items()
                         if attacks.get(k) is not None and _attack_note(a)},
        "mean_of_attacks": pick(res.get("mean_of_attacks")),
        "masking_checks": report.get("masking_checks") if member is None else [],
        "report": str(report_path), "report_seconds": report.get("seconds"),
        "written": _now(),
    }


def _attack_note(a: dict) -> str:
    if a.get("norm") == "L2":
        return "L2, unbounded; not in the worst case"
    if a.get("mode") == "cascade":
        return "cumulative"
    return ""


def read_rows(out: Path) -> dict[str, dict]:
    rows = {}
    d = rows_dir(out)
    if d.is_dir():
        for path in sorted(d.glob("*.json")):
            with contextlib.suppress(OSError, EdgempirError, KeyError, TypeError):
                row = read_json(path)  # a damaged row is recomputed
                rows[row["id"]] = row
    return rows


# ------------------------------------------------------------------ curves
def curve_path(out: Path, model: str) -> Path:
    return out / "curves" / f"{model}.json"


def curve_protocols(model: str) -> list[str]:
    # the paper's protocol is shown for the default EMPIR only: that is the paper's claim
    return ["paper", "adaptive"] if model == "empir" else ["adaptive"]


def run_curve(cfg: ExperimentConfig, out: Path, model: str, progress: bool,
              echo: Callable[[str], None]) -> None:
    """Worst case vs eps on a copy of the run (the copy's eval/ keeps the main eval intact):
    PGD only under adaptive (ensemble PGD + transfer from each member); under paper the
    paper's four attacks, so that its own summary, the mean of attacks, has a curve too
    (CW-L2 is unbounded: run once, not in the L-inf worst case)."""
    from edgempir import robustness
    from edgempir.fsutil import atomic_write_json

    copy = out / "curves" / model
    if not _is_trained(copy):
        _copy_run(run_dir(out, model), copy)
    protocols = curve_protocols(model)
    attacks = ["fgsm", "bim", "pgd", "cw"] if "paper" in protocols else ["pgd"]
    result = robustness.evaluate(copy, protocols=protocols, config=cfg.config, attacks=attacks,
                                 eps=cfg.curve_eps_values, n=cfg.curve_n, seed=cfg.seed,
                                 batch_size=cfg.batch_size, data_dir=cfg.data_dir,
                                 progress=progress, echo=echo, overrides=cfg.overrides,
                                 threads=cfg.threads or 1)
    curve = {"model": model, "written": _now(), "protocols": {}}
    for proto, rep in result.reports.items():
        curve["protocols"][proto] = {
            "config": rep["config"], "config_label": rep["config_label"],
            "n": rep["n_examples"], "attacks": list(rep["attacks"]),
            "members": [m["spec"] for m in rep["members"]],
            "eps": [r["eps"] for r in rep["results"]],
            "clean": rep["results"][0]["clean"],
            "worst_case": [_curve_point(r["worst_case"]) for r in rep["results"]]}
        if proto == "paper":
            curve["protocols"][proto]["mean_of_attacks"] = [
                _curve_point(r["mean_of_attacks"]) for r in rep["results"]]
    atomic_write_json(curve_path(out, model), curve)


def _curve_point(fig: dict) -> dict:
    return {"ensemble": fig["ensemble"], "members": fig["members"]}


def read_curves(out: Path) -> dict[str, dict]:
    curves = {}
    for model in MODELS:
        path = curve_path(out, model)
        if path.is_file():
            with contextlib.suppress(OSError, EdgempirError):
                curves[model] = read_json(path)
    return curves


# ------------------------------------------------------------------ compute and memory
def member_compute(member, spec, input_shape) -> dict:
    """Inference cost of one member for one image, measured by hooks on a real forward.

    MACs: conv/linear multiply-accumulates. Bit-operations (BOPs): MACs x weight bits x
    input-activation bits per layer (a float layer or float input counts 32 bits), the
    usual measure of low-bit compute. Weight bytes: quantized weights at their bit width
    (packed) and as int8 containers (what export stores today), float weights at 4 bytes;
    quantizer scales are not counted (as in ``export``'s weight_bytes)."""
    import torch
    from torch import nn

    layers: list[dict] = []

    def hook(mod, inputs, output):
        x = inputs[0]
        a_bits = int(x.bit_width) if getattr(x, "bit_width", None) is not None else 32
        per_out = (mod.in_channels // mod.groups * math.prod(mod.kernel_size)
                   if isinstance(mod, nn.Conv2d) else mod.in_features)
        macs = int(getattr(output, "value", output)[0].numel()) * per_out
        quant = type(mod).__module__.startswith("brevitas") and not spec.is_float
        w_bits = spec.weight_bits if quant else 32
        layers.append({"macs": macs, "weight_bits": w_bits, "act_bits": a_bits,
                       "weights": int(mod.weight.numel()), "quantized": quant})

    mods = [m for m in member.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        with torch.no_grad():
            member.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    quant_w = sum(lay["weights"] for lay in layers if lay["quantized"])
    float_w = sum(lay["weights"] for lay in layers if not lay["quantized"])
    bits = spec.weight_bits or 32
    return {"spec": spec.name, "macs": sum(lay["macs"] for lay in layers),
            "bit_ops": sum(lay["macs"] * lay["weight_bits"] * lay["act_bits"] for lay in layers),
            "weights": quant_w + float_w,
            "weight_bytes": {"packed": -(-quant_w * bits // 8) + 4 * float_w,
                             "int8": quant_w + 4 * float_w, "float32": 4 * (quant_w + float_w)}}


def training_compute(manifest: dict, member_macs: list[int]) -> list[dict]:
    """Training cost per member from its manifest: forward/backward passes over a batch and
    an estimate of the MACs (backward ~ 2 forward; PGD training makes ``steps`` attack
    passes and one update pass per batch, plus one clean forward for the accuracy log)."""
    tr = manifest["training"]
    adv = tr.get("adversarial")
    n_train = manifest["dataset"]["n_train"]
    batches = math.ceil(n_train / tr["batch_size"]) * tr["epochs"]
    passes_per_batch = (adv["steps"] + 1) if adv else 1
    out = []
    for m, macs in zip(manifest["members"], member_macs):
        fwd_per_image = 3 * passes_per_batch + (1 if adv else 0)
        out.append({"spec": m["spec"], "epochs": tr["epochs"], "batches": batches,
                    "passes": batches * passes_per_batch,
                    "macs": macs * n_train * tr["epochs"] * fwd_per_image,
                    "seconds": round(sum(m.get("time_per_epoch_s") or []), 1)})
    return out


def model_summary(out: Path, model: str) -> dict | None:
    """Compute, memory and training of one trained model (None if not trained yet)."""
    run = run_dir(out, model)
    if not _is_trained(run):
        return None
    from edgempir.rundir import load_run

    ens = load_run(run)
    manifest = ens.manifest
    shape = tuple(manifest["dataset"]["input_shape"])
    members = [member_compute(m, s, shape) for m, s in zip(ens.members, ens.specs)]
    training = training_compute(manifest, [m["macs"] for m in members])
    tr = manifest["training"]
    return {"run": str(run), "members": members, "training": training,
            "training_settings": {k: tr[k] for k in ("epochs", "batch_size", "lr", "augment",
                                                     "adversarial")},
            "clean_accuracy_full_test": manifest["metrics"]["clean_accuracy"],
            "n_test": manifest["metrics"]["n_test"], "seed": manifest["seed"],
            "versions": manifest.get("versions")}


def row_compute(row: dict, models: dict) -> dict | None:
    """The compute of what a row scores: one member, or every member of the ensemble."""
    summary = models.get(row["model"])
    if summary is None:
        return None
    idx = [row["member"]] if row["member"] is not None else range(len(summary["members"]))
    mem = [summary["members"][i] for i in idx]
    tr = [summary["training"][i] for i in idx]
    return {"macs": sum(m["macs"] for m in mem), "bit_ops": sum(m["bit_ops"] for m in mem),
            "weight_bytes": {k: sum(m["weight_bytes"][k] for m in mem)
                             for k in ("packed", "int8", "float32")},
            "train_passes": sum(t["passes"] for t in tr),
            "train_macs": sum(t["macs"] for t in tr),
            "train_seconds": round(sum(t["seconds"] for t in tr), 1)}


# ------------------------------------------------------------------ labels and order
def row_label(row: dict) -> str:
    model, member, spec = row["model"], row["member"], row["spec"]
    kind = {"empir": "default training", "empir-adv": "PGD-trained",
            "fp32-adv": "PGD-trained"}[model]
    if model == "fp32-adv":
        return "fp32 alone, PGD-trained, same training compute as EMPIR-adv's members"
    if member is None:
        name = "EMPIR" if model == "empir" else "EMPIR-adv"
        return f"{name} ({spec}, {row['combiner']}), {kind}"
    owner = "EMPIR" if model == "empir" else "EMPIR-adv"
    return f"{spec} alone ({owner}'s member {member}), {kind}"


def _row_order(row: dict) -> tuple:
    """The issue's order: fp32 alone, low-bit members alone, EMPIR under paper then
    adaptive, EMPIR-adv, the same-compute fp32; the adversarial members alone last."""
    is_fp32 = row["spec"] == "fp32"
    if row["model"] == "empir" and row["member"] is not None:
        group = (0 if is_fp32 else 1) if row["protocol"] == "adaptive" else 2
    elif row["model"] == "empir":
        group = 3 if row["protocol"] == "paper" else 4
    elif row["model"] == "empir-adv" and row["member"] is None:
        group = 5
    elif row["model"] == "fp32-adv":
        group = 6
    else:
        group = 7
    return (group, row["member"] if row["member"] is not None else -1)


def expected_rows() -> list[str]:
    """Every ensemble row the experiment has (member rows depend on the runs)."""
    return [s.ensemble_row for m in MODELS for s in EVAL_STEPS[m]]


# ------------------------------------------------------------------ the whole thing
@dataclass(frozen=True)
class Step:
    kind: str          # "train", "eval" or "curve"
    model: str
    eval: EvalStep | None = None

    @property
    def name(self) -> str:
        return self.eval.name if self.eval else f"{self.kind}-{self.model}"


def plan(cfg: ExperimentConfig) -> list[Step]:
    """The steps of the parts in ``cfg.only``: the default EMPIR's rows first (the paper's
    claim), then the two long adversarial trainings (two invocations sharing --out run them
    in parallel), their evals, the curves."""
    models = [m for m in MODELS if m in cfg.only or "curve" in cfg.only]
    evals = {m: [Step("eval", m, s) for s in EVAL_STEPS[m]] if m in cfg.only else []
             for m in MODELS}
    steps = [Step("train", "empir")] + evals["empir"] if "empir" in models else []
    steps += [Step("train", m) for m in models if m != "empir"]
    steps += [st for m in MODELS if m != "empir" for st in evals[m]]
    if "curve" in cfg.only:
        steps += [Step("curve", m) for m in MODELS]
    return steps


def run_experiment(cfg: ExperimentConfig, *, force: bool = False, progress: bool = True,
                   echo: Callable[[str], None] = print, argv: list[str] | None = None) -> dict:
    """Run (or resume) the experiment; write results.json and RESULTS.md; return the results.

    Steps are taken in order; a step another invocation is running (its lock is held) is
    left for later, and a step whose model is not trained yet waits for it. Two invocations
    on the same --out therefore share the work."""
    validate(cfg)
    out = _open_dir(cfg, force, argv)
    say = echo if progress else (lambda s: None)
    pending = plan(cfg)
    total, waiting = len(pending), False
    while pending:
        step = _next_step(out, pending, say, total)
        if step is None and not pending:
            break
        if step is None:
            if not waiting:
                say("  waiting for steps another process is running: "
                    + ", ".join(s.name for s in pending))
            waiting = True
            time.sleep(LOCK_POLL_S)
            continue
        waiting = False
        _run_step(cfg, out, step, f"[{total - len(pending)}/{total}]", progress, say)
    return write_results(cfg, out, say)


def _next_step(out: Path, pending: list[Step], say, total: int) -> Step | None:
    """Pop the first step that is ready and not taken (kept steps are popped and reported).
    The returned step's lock is held; _run_step releases it."""
    for step in list(pending):
        if _done(out, step):
            pending.remove(step)
            say(f"[{total - len(pending)}/{total}] {step.name}: done earlier, kept")
            continue
        if step.kind != "train" and not _is_trained(run_dir(out, step.model)):
            continue
        if try_lock(out, step.name) is None:
            continue
        if _done(out, step):  # finished by another process just before we locked it
            _unlock(out, step)
            continue
        pending.remove(step)
        return step
    return None


def _unlock(out: Path, step: Step) -> None:
    (out / "locks" / f"{step.name}.lock").unlink(missing_ok=True)


def _run_step(cfg, out, step: Step, tag: str, progress: bool, say) -> None:
    desc = _describe(cfg, out, step)
    say(f"{tag} {desc} ...")
    t0 = time.perf_counter()
    try:
        if step.kind == "train":
            ensure_model(cfg, out, step.model, progress, say)
        elif step.kind == "eval":
            run_eval_step(cfg, out, step.eval, progress, say)
        else:
            run_curve(cfg, out, step.model, progress, say)
    finally:
        _unlock(out, step)
    say(f"{tag} {desc}: finished in {_duration(time.perf_counter() - t0)}")


def _done(out: Path, step: Step) -> bool:
    if step.kind == "train":
        return _is_trained(run_dir(out, step.model))
    if step.kind == "eval":
        return step_done(out, step.eval)
    return curve_path(out, step.model).is_file()


def _describe(cfg: ExperimentConfig, out: Path, step: Step) -> str:
    what = step.model
    if step.kind == "train":
        if what == "empir":
            return (f"EMPIR: copy {cfg.empir_run}" if cfg.empir_run else
                    f"train EMPIR ({cfg.epochs} epochs per member)")
        per = " per member" if what == "empir-adv" else ""
        epochs = cfg.adv_epochs * (1 if per else len(_empir_members(cfg, out)))
        return (f"train {what} (PGD-{cfg.adv_steps} adversarial training, eps "
                f"{cfg.adv_eps_value:g}, {epochs} epochs{per})")
    if step.kind == "eval":
        return (f"eval {what}, protocol {step.eval.protocol} ({cfg.config}, n={cfg.n}, "
                f"eps {cfg.eps:g})")
    eps = ",".join(f"{e:g}" for e in cfg.curve_eps_values)
    attacks = "paper: FGSM/BIM/PGD/CW-L2, adaptive: PGD" if what == "empir" else "PGD"
    return f"curve {what} ({attacks}, n={cfg.curve_n}, eps {eps})"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# ------------------------------------------------------------------ results
def collect(cfg: ExperimentConfig, out: Path) -> dict:
    """Everything on disk, in the results.json schema (docs/EXPERIMENT.md)."""
    from edgempir.robustness import versions

    models = {m: model_summary(out, m) for m in MODELS}
    models = {k: v for k, v in models.items() if v is not None}
    rows = sorted(read_rows(out).values(), key=_row_order)
    for row in rows:
        row["label"] = row_label(row)
        row["compute"] = row_compute(row, models)
    done = {r["id"] for r in rows}
    missing = [r for r in expected_rows() if r not in done]
    curves = read_curves(out)
    missing += [f"curve-{m}" for m in MODELS if m not in curves]
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "experiment": NAME,
        "generated": _now(), "settings": cfg.settings(), "out": str(out),
        "complete": not missing, "missing": missing,
        "dataset": cfg.dataset, "norm": "Linf", "eps": cfg.eps,
        "rows": rows, "models": models, "curves": curves,
        "commands": commands(cfg, out),
        "invocations": _invocations(out),
        "versions": versions(),
    }


def commands(cfg: ExperimentConfig, out: Path) -> list[dict]:
    """The library calls each step made, as the equivalent ``edgempir`` commands."""
    eval_common = (f"--config {cfg.config} --n {cfg.n} --seed {cfg.seed} --eps {cfg.eps:g} "
                   f"--threads {cfg.threads or 1}")
    data = f" --data-dir {cfg.data_dir}" if cfg.data_dir else ""
    train_opts = (data + f" --augment {_augment(cfg, out)}"
                  + (f" --threads {cfg.threads}" if cfg.threads else ""))
    cmds = []
    if cfg.empir_run:
        cmds.append({"step": "empir", "command": f"cp -r {cfg.empir_run} {run_dir(out, 'empir')}"
                     " (without eval/ and checkpoints/)"})
    else:
        cmds.append({"step": "empir", "command":
                     f"edgempir train --dataset {cfg.dataset}{train_opts} --epochs {cfg.epochs} "
                     f"--seed {cfg.seed} --out {run_dir(out, 'empir')}"})
    members = ",".join(m.name for m in _empir_members(cfg, out))
    adv = (f"--adv-train pgd --adv-eps {cfg.adv_eps_value:g} --adv-steps {cfg.adv_steps}")
    cmds.append({"step": "empir-adv", "command":
                 f"edgempir train --dataset {cfg.dataset}{train_opts} --members {members} {adv} "
                 f"--epochs {cfg.adv_epochs} --seed {cfg.seed} --out {run_dir(out, 'empir-adv')}"})
    fp = train_configs(cfg, out)["fp32-adv"]
    cmds.append({"step": "fp32-adv", "command": (
        "python -c 'from edgempir.members import FP32; from edgempir.train import TrainConfig, "
        f"train; train(TrainConfig(out=\"{fp.out}\", dataset=\"{fp.dataset}\", "
        f"members=[FP32], epochs={fp.epochs}, seed={fp.seed}, augment=\"{fp.augment}\", "
        f"adv_train=\"pgd\", adv_eps={fp.adv_eps:g}, adv_steps={fp.adv_steps}))'  "
        "# one member: the train command needs at least 2")})
    for model in MODELS:
        for s in EVAL_STEPS[model]:
            cmds.append({"step": s.name, "command": f"edgempir eval {run_dir(out, model)} "
                         f"--protocol {s.protocol} {eval_common}{data}"})
    eps = ",".join(f"{e:g}" for e in cfg.curve_eps_values)
    for model in MODELS:
        protos = curve_protocols(model)
        attacks = "fgsm,bim,pgd,cw" if "paper" in protos else "pgd"
        cmds.append({"step": f"curve-{model}", "command":
                     f"edgempir eval {out / 'curves' / model} --protocol "
                     f"{'both' if len(protos) > 1 else protos[0]} --attacks {attacks} "
                     f"--config {cfg.config} --n {cfg.curve_n} --seed {cfg.seed} --eps {eps} "
                     f"--threads {cfg.threads or 1}{data}  # on a copy of {run_dir(out, model)}"})
    return cmds


def write_results(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> dict:
    from edgempir.fsutil import atomic_write_json, atomic_write_text

    results = collect(cfg, out)
    files = {"results_json": str(out / "results.json")}
    if cfg.results_md:
        md = Path(cfg.results_md)
        plot = md.with_name(PLOT_NAME)
        accuracy_plot(results, plot)
        files["plot"] = str(plot)
        files["results_md"] = str(md)
        results["files"] = files
        atomic_write_text(md, results_markdown(results, plot.name))
    results["files"] = files
    atomic_write_json(out / "results.json", results)
    return results


# ------------------------------------------------------------------ tables (torch-free)
# Every accuracy printed or written below carries its protocol, configuration and n: a
# figure without the attack that produced it is not one a safety case can cite.

def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _si(x, unit: str = "") -> str:
    if x is None:
        return "-"
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}".strip()


def _bytes(x) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f} MB" if x >= 1e5 else f"{x / 1e3:.1f} kB"


def _proto(row: dict) -> str:
    return f"{row['protocol']} ({row['config']}, n={row['n']})"


def _compute(row: dict, key: str):
    c = row.get("compute") or {}
    if key == "weights":
        return (c.get("weight_bytes") or {}).get("packed")
    return c.get(key)


def summary_rows(results: dict) -> list[list[str]]:
    return [[r["label"], _proto(r), _pct(r["clean"]), _pct(r["worst_case"]),
             _pct(r.get("mean_of_attacks")) if r["protocol"] == "paper" else "",
             _si(_compute(r, "macs")), _si(_compute(r, "bit_ops")),
             _bytes(_compute(r, "weights")), _si(_compute(r, "train_passes"))]
            for r in results["rows"]]


SUMMARY_HEADERS = ["model", "protocol (config, n)", "clean", "worst case", "paper: mean of attacks",
                   "MACs/image", "BOPs/image", "weights (packed)", "training passes"]


def attack_rows(results: dict) -> list[list[str]]:
    rows = []
    for r in results["rows"]:
        notes = r.get("attack_notes") or {}
        parts = [f"{name}{' (' + notes[name] + ')' if name in notes else ''} {_pct(v)}"
                 for name, v in r["attacks"].items()]
        rows.append([r["label"], _proto(r), "; ".join(parts)])
    return rows


def text_table(results: dict) -> str:
    """The readable table printed at the end of the command."""
    from edgempir.report import format_table

    s = results["settings"]
    title = (f"Paper vs adaptive on {results['dataset']}, eps {results['eps']:g} "
             f"(L-inf), seed {s['seed']}; eval config {s['config']} (see "
             "config_label in results.json); worst case = per image over the protocol's "
             "attacks; training passes = forward/backward passes over a batch")
    blocks = [format_table(SUMMARY_HEADERS, summary_rows(results), title=title),
              format_table(["model", "protocol (config, n)", "accuracy per attack"],
                           attack_rows(results), title="Accuracy per attack")]
    if results["missing"]:
        blocks.append("not done yet: " + ", ".join(results["missing"])
                      + " (rerun the same command to continue)")
    return "\n\n".join(blocks)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _find(results: dict, model: str, protocol: str, spec: str | None = None,
          member: bool = False) -> list[dict]:
    return [r for r in results["rows"] if r["model"] == model and r["protocol"] == protocol
            and (r["member"] is not None) == member and (spec is None or r["spec"] == spec)]


def _one(results, *args, **kw) -> dict | None:
    found = _find(results, *args, **kw)
    return found[0] if found else None


def _margin(n: int) -> float:
    """Two standard errors of an accuracy at its worst (p = 0.5), in points: what n images
    can resolve (the rows share the images, so this is conservative for differences)."""
    return 2 * 100 * math.sqrt(0.25 / max(n, 1))


def _compare(diff: float, margin: float, more: str, less: str, same: str) -> str:
    return more if diff > margin else less if diff < -margin else same


def findings(results: dict) -> list[str]:
    """The honest paragraphs, from the figures (only the sentences whose rows exist; the
    wording follows the figures, with differences under two standard errors called ties)."""
    paper = _one(results, "empir", "paper")
    adap = _one(results, "empir", "adaptive")
    fp = _one(results, "empir", "adaptive", "fp32", member=True)
    fp_paper = _one(results, "empir", "paper", "fp32", member=True)
    low = [r for r in _find(results, "empir", "adaptive", member=True) if r["spec"] != "fp32"]
    adv = _one(results, "empir-adv", "adaptive")
    fadv = _one(results, "fp32-adv", "adaptive")
    n = results["settings"]["n"]
    margin = _margin(n)
    out = []
    paper_gain = None
    if paper and fp_paper:
        paper_gain = 100 * (paper["mean_of_attacks"] - fp_paper["mean_of_attacks"])
        out.append(
            f"Scored as the paper scored it (protocol paper, {paper['config']}), EMPIR keeps "
            f"{_pct(paper['worst_case'])} worst case over FGSM/BIM/PGD and "
            f"{_pct(paper['mean_of_attacks'])} by the paper's mean of attacks (CW-L2 "
            f"included), against {_pct(fp_paper['worst_case'])} and "
            f"{_pct(fp_paper['mean_of_attacks'])} for its fp32 member alone"
            + _compare(paper_gain, margin, ": the kind of gain the paper reports.",
                       ": not even the paper's protocol shows a gain here.",
                       ": no gain, even under the paper's protocol."))
    if adap and fp:
        gain = 100 * (adap["worst_case"] - fp["worst_case"])
        lows = " and ".join(_pct(r["worst_case"]) for r in low)
        cost = _ratio(_compute(adap, "macs"), _compute(fp, "macs"))
        verdict = _compare(gain, margin, f"EMPIR buys {gain:.1f} points of worst-case accuracy "
                           "over its fp32 member", f"EMPIR is {-gain:.1f} points less robust "
                           "than its fp32 member", f"EMPIR and its fp32 member are within "
                           f"{abs(gain):.1f} points (a tie at this n)")
        out.append(
            f"Attacked as it is deployed (protocol adaptive, {adap['config']}: PGD and APGD "
            "through the members' mean softmax and the straight-through quantizers, Square, "
            "transfer from each member; worst case per image), EMPIR keeps "
            f"{_pct(adap['worst_case'])}, its fp32 member alone {_pct(fp['worst_case'])}"
            + (f" and its low-bit members alone {lows}" if lows else "")
            + f". {verdict}, for {cost} the inference MACs"
            + (f"; the paper's protocol suggested {paper_gain:.0f} points."
               if paper_gain is not None and paper_gain > gain + margin else "."))
    paragraphs = [" ".join(out)] if out else []
    if adv and fadv:
        paragraphs.append(" ".join(_adv_findings(results, adv, fadv, adap, margin)))
        paragraphs.append(_limits(results, [adv, fadv], adap))
    if paragraphs:
        paragraphs[-1] += (f" Noise: on n={n} images one standard error of an accuracy is at "
                           f"most {margin / 2:.1f} points; differences under {margin:.1f} "
                           "points are called ties above.")
    return paragraphs


def _adv_findings(results, adv, fadv, adap, margin) -> list[str]:
    s = results["settings"]
    macs = _ratio(_compute(adv, "macs"), _compute(fadv, "macs"))
    bops = _ratio(_compute(adv, "bit_ops"), _compute(fadv, "bit_ops"))
    size = _ratio(_compute(adv, "weights"), _compute(fadv, "weights"))
    how = (f"PGD-{s['adv_steps']}, eps {s['adv_eps']:g}, {_plural(s['adv_epochs'], 'epoch')} "
           "per member")
    out = []
    if adap:
        lift = 100 * (adv["worst_case"] - adap["worst_case"])
        out.append(_compare(
            lift, margin, f"Adversarial training moves the number: with PGD-trained members "
            f"({how}) EMPIR keeps {_pct(adv['worst_case'])} under protocol adaptive "
            f"({lift:+.1f} points) at {_pct(adv['clean'])} clean "
            f"({_pct(adap['clean'])} with default training).",
            f"Adversarially trained members ({how}) did not help here: EMPIR keeps "
            f"{_pct(adv['worst_case'])} under protocol adaptive at {_pct(adv['clean'])} clean.",
            f"Adversarially trained members ({how}) changed little: EMPIR keeps "
            f"{_pct(adv['worst_case'])} under protocol adaptive at {_pct(adv['clean'])} clean."))
    diff = 100 * (adv["worst_case"] - fadv["worst_case"])
    out.append(
        f"One PGD-trained fp32 model given the same training compute "
        f"({_si(_compute(fadv, 'train_passes'))} training passes, as many as the members "
        f"together) keeps {_pct(fadv['worst_case'])} at {_pct(fadv['clean'])} clean; the "
        f"ensemble costs {macs} its inference MACs ({bops} its bit-operations) and {size} its "
        "packed weight bytes.")
    out.append(_compare(
        diff, margin, f"At equal training compute the ensemble of adversarially trained "
        f"members is {diff:.1f} points more robust than the single model: here mixing "
        "precisions adds robustness on top of adversarial training, at the inference cost "
        "above.",
        f"At equal training compute the single model is {-diff:.1f} points more robust: "
        "spending the compute on one adversarially trained model beats EMPIR.",
        f"At equal training compute the two are within {abs(diff):.1f} points (a tie at this "
        "n): the mixed-precision ensemble adds inference cost, not robustness."))
    return out


def _limits(results: dict, adv_rows: list[dict], default: dict | None) -> str:
    s = results["settings"]
    cleans = sorted(r["clean"] for r in adv_rows)
    text = (f"Limits: the adversarial models were trained briefly ("
            f"{_plural(s['adv_epochs'], 'epoch')} of PGD-{s['adv_steps']} per member, to fit "
            f"the time budget of a 2-core CPU; clean accuracy {_pct(cleans[0])} to "
            f"{_pct(cleans[-1])}" + (f" against {_pct(default['clean'])} with default "
                                     "training" if default else "")
            + "); longer training raises both adversarial rows and may change their order.")
    if s["config"] == "quick":
        text += (" Every row uses eval configuration quick: upper bounds on what standard "
                 "would report.")
    return text


def _plural(k: int, word: str) -> str:
    return f"{k} {word}" if k == 1 else f"{k} {word}s"


def _ratio(a, b) -> str:
    if not a or not b:
        return "-"
    r = a / b
    return f"{r:.2f}x" if r >= 0.995 else f"{r:.2f}x ({100 * r:.0f}%)"


def results_markdown(results: dict, plot_name: str = PLOT_NAME) -> str:
    """docs/RESULTS.md, generated: tables, the paragraph, commands, versions."""
    s = results["settings"]
    rows = results["rows"]
    parts = [
        "# Results: EMPIR under the paper's evaluation and under adaptive attacks",
        "",
        (f"Generated by `edgempir experiment {NAME}` on {results['generated']} from "
        f"`{results['out']}/results.json`; do not edit by hand, rerun the command "
        "(docs/EXPERIMENT.md)."),
        "",
    ]
    if results["missing"]:
        parts += [(f"**Incomplete:** not done yet: {', '.join(results['missing'])}. Rerun the "
                  "same command to continue; finished rows are kept."), ""]
    parts += _md_setup(results) + [""]
    parts += ["## Accuracy and cost per model", "",
              (f"L-inf eps {results['eps']:g}, inputs in [0, 1]; the same {s['n']} test images "
              f"(seed {s['seed']}) for every row. Worst case = per image, over every attack of "
              "the row's protocol (adaptive: also the examples crafted on the ensemble and on "
              "the other members). Compute is per image at inference; training passes are "
              f"forward/backward passes over a training batch ({_batch(results)} images)."), "",
              _md_table(SUMMARY_HEADERS, summary_rows(results)), ""]
    parts += ["## Accuracy per attack", "",
              ("Ensemble rows: the attack aimed at the ensemble, scored with the vote. Member "
              "rows: the member attacked alone with its own gradients. `transfer-m<i>`: "
              "examples crafted on member i alone. `cumulative`: AutoAttack's cascade, the "
              "robust accuracy after the attack."), "",
              _md_table(["model", "protocol (config, n)", "accuracy per attack"],
                        attack_rows(results)), ""]
    parts += _md_compute(results) + [""]
    parts += _md_curve(results, plot_name) + [""]
    text = findings(results)
    parts += ["## What EMPIR does and does not buy", ""]
    parts += ["\n\n".join(text) if text else "(not enough rows yet)", ""]
    parts += _md_checks(rows) + [""]
    parts += _md_protocols(rows) + [""]
    parts += _md_commands(results) + [""]
    return "\n".join(parts).rstrip() + "\n"


def _batch(results: dict) -> str:
    sizes = {m["training_settings"]["batch_size"] for m in results["models"].values()}
    return "/".join(str(b) for b in sorted(sizes)) or "?"


def _md_setup(results: dict) -> list[str]:
    s = results["settings"]
    models = results["models"]
    members = (models.get("empir") or {}).get("members") or []
    specs = "+".join(m["spec"] for m in members) or "the paper preset"
    emp = (models.get("empir") or {}).get("training_settings") or {}
    k = len(members) or 3
    lines = ["## Setup", "",
             (f"- Data: {results['dataset']}, the test split; n={s['n']} images drawn with "
             f"seed {s['seed']} (docs/EVAL.md, \"The test subset\"). Threat model L-inf, eps "
             f"{results['eps']:g}."),
             f"- EMPIR: members {specs}, vote; default training"
             + (f" ({_plural(emp.get('epochs'), 'epoch')} per member, Adam lr {emp.get('lr')} cosine, "
                f"batch {emp.get('batch_size')}, augment {emp.get('augment')})" if emp else "")
             + (f", reused from `{s['empir_run']}` (copied, not modified)"
                if s.get("empir_run") else "") + ".",
             (f"- EMPIR-adv: the same members, each trained with Madry PGD from scratch: "
             f"PGD-{s['adv_steps']} with a random start, eps {s['adv_eps']:g}, step "
             f"2.5 x eps / steps, {_plural(s['adv_epochs'], 'epoch')} per member, through the "
             "straight-through quantizers (`edgempir train --adv-train pgd`)."),
             (f"- fp32-adv, **same training compute**: one fp32 model of the same architecture, "
             f"PGD-trained the same way for {s['adv_epochs']} x {k} = {s['adv_epochs'] * k} "
             f"epochs, i.e. as many epochs x batches x PGD steps as the {k} members of "
             "EMPIR-adv together: the same number of forward/backward passes over the same "
             "network (quantization-aware training simulates the low-bit members in float, so "
             "a member's pass costs the same FLOPs; on this CPU it costs more wall time). Its "
             "**inference** compute is that of one member, listed next to the ensemble's."),
             f"- Evaluation: `edgempir eval` configuration **{s['config']}** for every row "
             "(labels in \"Protocols and configurations\" below)."
             + (" `quick` is lighter than `standard`: its figures are upper bounds on what "
                "`standard` would report." if s["config"] == "quick" else ""),
             ("- Compute: MACs per image from hooks on a real forward; bit-operations (BOPs) = "
             "MACs x weight bits x input-activation bits per layer (a float layer counts 32 x "
             "32); weight bytes at the members' true bit widths (packed; quantizer scales not "
             "counted), see the next table for int8-container and float32 sizes.")]
    if s.get("overrides"):
        lines.append(f"- Attack parameters changed through the API: {s['overrides']}")
    return lines


def _md_compute(results: dict) -> list[str]:
    rows = []
    names = {"empir": "EMPIR (default training)", "empir-adv": "EMPIR-adv",
             "fp32-adv": "fp32-adv (same training compute)"}
    for model, summ in results["models"].items():
        for m, t in zip(summ["members"], summ["training"]):
            wb = m["weight_bytes"]
            rows.append([names[model], m["spec"], _si(m["macs"]), _si(m["bit_ops"]),
                         _bytes(wb["packed"]), _bytes(wb["int8"]), _bytes(wb["float32"]),
                         str(t["epochs"]), _si(t["passes"]), _si(t["macs"]),
                         f"{t['seconds']:.0f} s"])
    return ["## Compute and memory per member", "",
            ("Inference per image; training over the whole run (train MACs estimated as 3 x "
            "forward per pass, plus the clean forward PGD training logs); train time is wall "
            "time on this machine (2 cores, shared)."), "",
            _md_table(["model", "member", "MACs", "BOPs", "weights packed", "int8 containers",
                       "float32", "epochs", "train passes", "train MACs", "train time"], rows)]


def _md_curve(results: dict, plot_name: str) -> list[str]:
    curves = results["curves"]
    if not curves:
        return ["## Accuracy vs eps", "", "(not done yet)"]
    label = next(iter(next(iter(curves.values()))["protocols"].values()))
    lines = ["## Accuracy vs eps", "",
             f"![worst-case accuracy vs eps]({plot_name})", "",
             (f"On n={label['n']} test images (seed {results['settings']['seed']}), a lighter "
              "evaluation than the tables above. Solid: protocol adaptive with PGD only (on "
              "the ensemble's mean softmax, and transfer from each member), worst case per "
              "image. Dashed: protocol paper (default EMPIR and its fp32 member) with its four "
              "attacks, plotted as the paper summarised them, the mean of attacks (CW-L2 is "
              "unbounded: the same figure at every eps); the paper's worst case is in the "
              "table. eps 0 is the clean accuracy."), ""]
    eps = sorted({e for cv in curves.values() for c in cv["protocols"].values()
                  for e in c["eps"]})
    rows = []
    for model, proto, key, what, c in _curve_series(curves):
        at = {e: i for i, e in enumerate(c["eps"])}
        for _target, name, acc in _curve_lines(model, c, key):
            if all(a is None for a in acc[1:]):
                continue  # not attacked under this protocol (paper quick: low-bit members)
            over = [a for a in c["attacks"] if key != "worst_case" or a != "cw"]  # L2
            rows.append([name, f"{proto} ({c['config']}, n={c['n']}): {what} over "
                         + ", ".join(over), _pct(acc[0])]
                        + [_pct(acc[1 + at[e]]) if e in at else "" for e in eps])
    lines.append(_md_table(["model", "protocol: figure over attacks", "clean"]
                           + [f"eps {e:g}" for e in eps], rows))
    return lines


def _md_checks(rows: list[dict]) -> list[str]:
    checks = [c for r in rows for c in r.get("masking_checks") or []]
    warned = [c for c in checks if c["passed"] is False]
    lines = ["## Gradient-masking checks", "",
             (f"Run by protocol adaptive on every ensemble row (docs/EVAL.md, \"Gradient-masking "
              f"checks\"): {len(checks) - len(warned)} of {len(checks)} passed"
              + (f", {len(warned)} warning(s): read their detail." if warned else ".")), ""]
    for r in rows:
        for c in r.get("masking_checks") or []:
            state = {True: "ok", False: "WARN", None: "skip"}[c["passed"]]
            lines.append(f"- {r['label']}, {_proto(r)}: [{state}] `{c['id']}`: {c['detail']}")
    if not checks:
        lines.append("(none run yet)")
    return lines


def _md_protocols(rows: list[dict]) -> list[str]:
    seen = {}
    for r in rows:
        seen.setdefault((r["protocol"], r["config"], r["n"]), r)
    lines = ["## Protocols and configurations", ""]
    for (proto, config, n), r in seen.items():
        lines.append(f"- **{proto} ({config}, n={n})**: {r['config_label']}. Worst case over: "
                     f"{r['worst_case_over']}.")
    return lines


def _md_commands(results: dict) -> list[str]:
    invs = [i for i in results["invocations"] if i.get("argv")]
    last = (" ".join(invs[-1]["argv"]) if invs
            else "(Python API: edgempir.experiment.run_experiment)")
    intro = (f"The experiment (the last of {len(results['invocations'])} invocations on this "
             f"directory, all logged with their start times in `{results['out']}/"
             "invocations.jsonl`; a resumed invocation must have the same settings):")
    lines = ["## Exact commands", "", intro, "", "```", last]
    lines += ["```", "", ("What each step ran, as the equivalent commands (the experiment calls "
              "the same library functions):"), "", "```"]
    lines += [f"{c['command']}" for c in results["commands"]]
    lines += ["```", "", "## Versions and seed", ""]
    v = results["versions"]
    lines.append(", ".join(f"{k} {val}" for k, val in v.items()) + f"; seed "
                 f"{results['settings']['seed']} (training, test subset and attacks).")
    return lines


# ------------------------------------------------------------------ the plot
def accuracy_plot(results: dict, path) -> None:
    """PNG: worst-case accuracy vs eps, one line per row that has a curve; solid adaptive,
    dashed paper; eps 0 is the clean accuracy."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgempir.fsutil import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=110)
    k = 0
    for model, proto, key, what, c in _curve_series(results["curves"]):
        if proto == "paper" and key == "worst_case":
            continue
        for target, name, acc in _curve_lines(model, c, key):
            color = _line_color(model, target, c)
            if color is None or all(a is None for a in acc[1:]):
                continue
            ys = [float("nan") if a is None else 100 * a for a in acc]
            ax.plot([0.0] + c["eps"], ys, "--" if proto == "paper" else "-",
                    marker="s" if proto == "paper" else "o", color=color,
                    linewidth=2.4 if target == "ensemble" else 1.0,
                    markersize=5 if target == "ensemble" else 3,
                    label=f"{name}, {proto} ({c['config']}): {what}")
            k += 1
    ax.set_xlim(left=0)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("eps (L-inf); eps 0 = clean accuracy")
    ax.set_ylabel("accuracy under attack (%)")
    ax.grid(alpha=0.3)
    n = next((c["n"] for cv in results["curves"].values() for c in cv["protocols"].values()),
             None)
    ax.set_title(f"{results['dataset']}, accuracy vs eps on n={n} test images\nsolid: "
                 "protocol adaptive, worst case (PGD + transfer); dashed: protocol paper, "
                 "mean of attacks", fontsize=8.5)
    if k:
        ax.legend(fontsize=6.5, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _line_color(model: str, target: str, c: dict) -> str | None:
    """One colour per model; EMPIR's members in their own colours; EMPIR-adv's members are
    left to the table (the plot stays readable)."""
    if target == "ensemble":
        return {"empir": "tab:blue", "empir-adv": "tab:green", "fp32-adv": "tab:red"}[model]
    if model != "empir":
        return None
    i = int(target[1:])
    if c["members"][i] == "fp32":
        return "tab:orange"
    return ("tab:gray", "tab:purple", "tab:brown", "tab:pink")[i % 4]


def _curve_lines(model: str, c: dict, key: str = "worst_case"):
    """(target, name, [clean, acc per eps]) for the ensemble and, if several, each member."""
    owner = {"empir": "EMPIR", "empir-adv": "EMPIR-adv", "fp32-adv": "fp32-adv"}[model]
    yield ("ensemble", owner, [c["clean"]["ensemble"]] + [w["ensemble"] for w in c[key]])
    if len(c["members"]) > 1:
        for i, spec in enumerate(c["members"]):
            yield (f"m{i}", f"{owner} member {i} {spec}",
                   [c["clean"]["members"][i]] + [w["members"][i] for w in c[key]])


def _curve_series(curves: dict):
    """Every curve: (model, protocol, figure key, its label, curve). Under protocol paper the
    plot shows the paper's own summary (mean of attacks): its worst case follows the
    adaptive one closely and is in the table."""
    for model, curve in curves.items():
        for proto, c in curve["protocols"].items():
            keys = ["worst_case"] + (["mean_of_attacks"] if "mean_of_attacks" in c else [])
            for key in keys:
                what = "worst case" if key == "worst_case" else "mean of attacks"
                yield model, proto, key, what, c
