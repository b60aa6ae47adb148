"""The "Exact commands" of docs/RESULTS.md are written from the very TrainConfig and
evaluate() arguments the experiment uses: parsed back by the real ``edgempir train`` and
``edgempir eval`` commands, each line must give the same settings (no training, no eval)."""
from __future__ import annotations

import shlex

import pytest

from edgempir import experiment as X
from edgempir.cli import eval_cmd, train_cmd
from edgempir.experiment.command_lines import commands, eval_command, train_command
from edgempir.experiment.curves import curve_call
from edgempir.experiment.rows import eval_step_call
from edgempir.experiment.training import train_configs

SETTINGS = [
    {},
    {"threads": 3, "data_dir": "/data/fm", "adv_eps": 0.07, "adv_steps": 2, "config": "standard",
     "curve_eps": [0.03, 0.06]},
]


def _cfg(tmp_path, **kw) -> X.ExperimentConfig:
    return X.ExperimentConfig(out=str(tmp_path / "exp"), dataset="fashion-mnist", **kw)


def _parse(command, line: str) -> dict:
    args = shlex.split(line.split("  #")[0])[2:]  # drop "edgempir train|eval" and a comment
    return command.make_context(command.name, args).params


@pytest.mark.parametrize("kw", SETTINGS)
def test_train_lines_parse_back_to_the_train_configs(tmp_path, kw):
    cfg = _cfg(tmp_path, **kw)
    out = tmp_path / "exp"
    for model, tc in train_configs(cfg, out).items():
        if len(tc.members) < 2:
            continue  # fp32-adv: one member, written as a Python call
        p = _parse(train_cmd.command, train_command(tc, with_members=model != "empir"))
        assert (p["dataset"], p["data_dir"], p["augment"], p["threads"]) == (
            tc.dataset, tc.data_dir, tc.augment, tc.threads)
        assert (p["epochs"], p["seed"], p["out"], p["batch_size"], p["adv_train"]) == (
            tc.epochs, tc.seed, tc.out, tc.batch_size, tc.adv_train)
        if tc.adv_train != "none":
            assert (p["adv_eps"], p["adv_steps"]) == (tc.adv_eps, tc.adv_steps)
            assert p["members"] == ",".join(m.name for m in tc.members)


@pytest.mark.parametrize("kw", SETTINGS)
def test_eval_lines_parse_back_to_the_evaluate_calls(tmp_path, kw):
    from edgempir.robustness import parse_eps_list

    cfg = _cfg(tmp_path, **kw)
    out = tmp_path / "exp"
    calls = [(X.run_dir(out, s.model), eval_step_call(cfg, s))
             for m in X.MODELS for s in X.EVAL_STEPS[m]]
    calls += [(out / "curves" / m, curve_call(cfg, m)) for m in X.MODELS]
    lines = [c["command"] for c in commands(cfg, out)]
    for run, call in calls:
        line = eval_command(run, call)
        assert any(x.startswith(line) for x in lines), line
        p = _parse(eval_cmd.command, line)
        protocols = ["paper", "adaptive"] if p["protocol"] == "both" else [p["protocol"]]
        assert p["run_dir"] == str(run) and sorted(protocols) == sorted(call["protocols"])
        assert parse_eps_list(p["eps"], cfg.dataset) == call["eps"]
        assert (p["config_name"], p["n"], p["seed"], p["threads"], p["data_dir"]) == (
            call["config"], call["n"], call["seed"], call["threads"], call["data_dir"])
        assert p["batch_size"] == call["batch_size"]  # not on the line: the defaults agree
        attacks = p["attacks"].split(",") if p["attacks"] else None
        assert attacks == call.get("attacks")
