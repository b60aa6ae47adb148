"""The step scheduler: the plan of train, eval and curve steps, and the loop that takes the
next ready step whose lock it can get, so that two invocations on one --out share the work.

Resume: a row whose JSON exists is never recomputed; a training resumes from its last
epoch (``train --resume``); an eval resumes from its finished attacks (eval/partial/)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgempir.experiment.config import MODELS, ExperimentConfig, validate
from edgempir.experiment.curves import run_curve
from edgempir.experiment.layout import curve_path, is_trained, run_dir
from edgempir.experiment.results import write_results
from edgempir.experiment.rows import EVAL_STEPS, EvalStep, run_eval_step, step_done
from edgempir.experiment.training import empir_members, ensure_model
from edgempir.experiment.workdir import open_dir, try_lock, unlock

LOCK_POLL_S = 1.0  # a stat of the step's result file per second: cheap, and no idle wait


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
    out = open_dir(cfg, force, argv)
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
        if step.kind != "train" and not is_trained(run_dir(out, step.model)):
            continue
        if try_lock(out, step.name) is None:
            continue
        if _done(out, step):  # finished by another process just before we locked it
            unlock(out, step.name)
            continue
        pending.remove(step)
        return step
    return None


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
        unlock(out, step.name)
    say(f"{tag} {desc}: finished in {_duration(time.perf_counter() - t0)}")


def _done(out: Path, step: Step) -> bool:
    if step.kind == "train":
        return is_trained(run_dir(out, step.model))
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
        epochs = cfg.adv_epochs * (1 if per else len(empir_members(cfg, out)))
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
