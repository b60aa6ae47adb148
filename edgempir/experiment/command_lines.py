"""What each step ran, as the equivalent ``edgempir`` commands (docs/RESULTS.md, "Exact
commands"). The steps call the library (``train`` with a TrainConfig, ``evaluate`` with
keyword arguments); these lines are written from those very objects, never the other way
round, so they cannot drift from what ran."""
from __future__ import annotations

from pathlib import Path

from edgempir.experiment.config import MODELS, ExperimentConfig
from edgempir.experiment.curves import curve_call
from edgempir.experiment.layout import curve_copy, run_dir
from edgempir.experiment.rows import EVAL_STEPS, eval_step_call
from edgempir.experiment.training import train_configs


def train_command(tc, with_members: bool = True) -> str:
    """``edgempir train`` for a TrainConfig (the default EMPIR's members are train's own
    default, so its line leaves --members out)."""
    opts = [f"--dataset {tc.dataset}"]
    if tc.data_dir:
        opts.append(f"--data-dir {tc.data_dir}")
    opts.append(f"--augment {tc.augment}")
    if tc.threads:
        opts.append(f"--threads {tc.threads}")
    if with_members:
        opts.append("--members " + ",".join(m.name for m in tc.members))
    if tc.adv_train != "none":
        opts.append(f"--adv-train {tc.adv_train} --adv-eps {tc.adv_eps:g} "
                    f"--adv-steps {tc.adv_steps}")
    opts += [f"--epochs {tc.epochs}", f"--seed {tc.seed}", f"--out {tc.out}"]
    return "edgempir train " + " ".join(opts)


def single_member_train_command(tc) -> str:
    """The Python call for a one-member run (the train command needs at least 2 members)."""
    return ("python -c 'from edgempir.members import FP32; from edgempir.train import "
            f"TrainConfig, train; train(TrainConfig(out=\"{tc.out}\", dataset=\"{tc.dataset}\", "
            f"members=[FP32], epochs={tc.epochs}, seed={tc.seed}, augment=\"{tc.augment}\", "
            f"adv_train=\"{tc.adv_train}\", adv_eps={tc.adv_eps:g}, "
            f"adv_steps={tc.adv_steps}))'  # one member: the train command needs at least 2")


def eval_command(run: Path, call: dict) -> str:
    """``edgempir eval`` for the keyword arguments of an ``evaluate`` call."""
    protocols = call["protocols"]
    opts = [f"--protocol {'both' if len(protocols) > 1 else protocols[0]}"]
    if call.get("attacks"):
        opts.append("--attacks " + ",".join(call["attacks"]))
    opts += [f"--config {call['config']}", f"--n {call['n']}", f"--seed {call['seed']}",
             "--eps " + ",".join(f"{e:g}" for e in call["eps"]), f"--threads {call['threads']}"]
    if call["data_dir"]:
        opts.append(f"--data-dir {call['data_dir']}")
    return f"edgempir eval {run} " + " ".join(opts)


def commands(cfg: ExperimentConfig, out: Path) -> list[dict]:
    """The library calls each step made, as the equivalent ``edgempir`` commands."""
    configs = train_configs(cfg, out)
    cmds = []
    if cfg.empir_run:
        cmds.append({"step": "empir", "command": f"cp -r {cfg.empir_run} {run_dir(out, 'empir')}"
                     " (without eval/ and checkpoints/)"})
    else:
        cmds.append({"step": "empir",
                     "command": train_command(configs["empir"], with_members=False)})
    cmds.append({"step": "empir-adv", "command": train_command(configs["empir-adv"])})
    cmds.append({"step": "fp32-adv",
                 "command": single_member_train_command(configs["fp32-adv"])})
    for model in MODELS:
        for s in EVAL_STEPS[model]:
            cmds.append({"step": s.name, "command": eval_command(run_dir(out, model),
                                                                 eval_step_call(cfg, s))})
    for model in MODELS:
        line = eval_command(curve_copy(out, model), curve_call(cfg, model))
        cmds.append({"step": f"curve-{model}",
                     "command": f"{line}  # on a copy of {run_dir(out, model)}"})
    return cmds
