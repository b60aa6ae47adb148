"""The paper-vs-adaptive experiment on tiny synthetic data: every row, resume after an
interruption without recomputing finished rows, the reports, the compute figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgempir import experiment as X
from edgempir.errors import EdgempirError

# attack parameters cut down to keep the suite fast; the reports say so in config_label
FAST = {"bim": {"steps": 3, "step_size": 0.03}, "pgd": {"steps": 3}, "cw": {"steps": 5},
        "apgd-ce": {"steps": 3}, "square": {"n_queries": 10},
        "vote-pgd": {"steps": 3, "targets": 1}, "reject": {"steps": 3, "targets": 1},
        "disagree": {"steps": 3}}

ROWS = {"empir-m2-adaptive", "empir-m0-adaptive", "empir-m1-adaptive", "empir-m2-paper",
        "empir-paper", "empir-adaptive", "empir-adv-adaptive", "fp32-adv-adaptive",
        "empir-adv-m0-adaptive", "empir-adv-m1-adaptive", "empir-adv-m2-adaptive"}


@pytest.fixture
def small_synthetic(synthetic_with):
    """Synthetic data with 256 training images: PGD training on the default 2000 costs
    minutes on a busy 2-core machine, and 256 go through every code path."""
    synthetic_with(n_train=256)


@pytest.fixture
def calls(monkeypatch):
    """Counts the library's train and evaluate calls the experiment makes."""
    from edgempir import robustness, train

    counts = {"train": 0, "evaluate": 0, "fail_at_evaluate": None}
    real_train, real_eval = train.train, robustness.evaluate

    def counting_train(*a, **kw):
        counts["train"] += 1
        return real_train(*a, **kw)

    def counting_eval(*a, **kw):
        counts["evaluate"] += 1
        if counts["evaluate"] == counts["fail_at_evaluate"]:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle
        return real_eval(*a, **kw)

    monkeypatch.setattr(train, "train", counting_train)
    monkeypatch.setattr(robustness, "evaluate", counting_eval)
    return counts


def _cfg(tmp_path, run, **kw) -> X.ExperimentConfig:
    base = {"out": str(tmp_path / "exp"), "dataset": "synthetic", "n": 12, "epochs": 1, "adv_epochs": 1,
                "adv_steps": 1, "curve_n": 8, "curve_eps": [0.05, 0.1], "empir_run": str(run),
                "results_md": str(tmp_path / "docs" / "RESULTS.md"), "overrides": FAST, "threads": 1}
    base.update(kw)
    return X.ExperimentConfig(**base)


def _mtimes(out) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (out / "rows").glob("*.json")}


def test_whole_experiment_resumes_without_recomputing(tmp_path, synthetic_run,
                                                      small_synthetic, calls):
    cfg = _cfg(tmp_path, synthetic_run)
    out = tmp_path / "exp"
    # 1. interrupted at the third eval (EMPIR-adv's): EMPIR's rows and both trainings are done
    calls["fail_at_evaluate"] = 3
    with pytest.raises(KeyboardInterrupt):
        X.run_experiment(cfg, progress=False)
    done = _mtimes(out)
    assert {n[:-5] for n in done} == {r for r in ROWS if r.startswith("empir-")
                                      and not r.startswith("empir-adv")}
    assert (out / "runs" / "empir-adv" / "manifest.json").is_file()
    assert (out / "runs" / "fp32-adv" / "manifest.json").is_file()
    assert not list((out / "locks").glob("*.lock")), "an interrupted step must release its lock"
    # the reused run is copied, never written to
    assert not (synthetic_run / "eval" / "paper-quick.json").exists()

    # 2. resume: no training, only the missing evals (2 rows' evals + 3 curves)
    calls.update(train=0, evaluate=0, fail_at_evaluate=None)
    results = X.run_experiment(cfg, progress=False)
    assert calls["train"] == 0 and calls["evaluate"] == 5
    assert {k: v for k, v in _mtimes(out).items() if k in done} == done
    assert results["complete"] and not results["missing"]
    assert {r["id"] for r in results["rows"]} == ROWS
    # the order: fp32 alone, low-bit members, EMPIR paper then adaptive, EMPIR-adv,
    # the same-compute fp32
    order = [r["id"] for r in results["rows"]]
    assert order[:8] == ["empir-m2-adaptive", "empir-m0-adaptive", "empir-m1-adaptive",
                         "empir-m2-paper", "empir-paper", "empir-adaptive",
                         "empir-adv-adaptive", "fp32-adv-adaptive"]
    _check_reports(tmp_path, out, results)

    # 3. everything done: nothing is recomputed, the rows are untouched
    before = _mtimes(out)
    calls.update(train=0, evaluate=0)
    again = X.run_experiment(cfg, progress=False)
    assert calls == {"train": 0, "evaluate": 0, "fail_at_evaluate": None}
    assert _mtimes(out) == before
    assert [r["worst_case"] for r in again["rows"]] == [r["worst_case"] for r in results["rows"]]


def _check_reports(tmp_path, out, results):
    by_id = {r["id"]: r for r in results["rows"]}
    # every figure names its protocol, configuration and n
    for r in results["rows"]:
        assert r["config"] == "quick" and "lighter than standard" in r["config_label"]
        assert r["n"] == 12 and r["eps"] == 0.1
        assert 0 <= r["worst_case"] <= r["clean"] <= 1
    assert by_id["empir-paper"]["mean_of_attacks"] is not None
    assert "transfer-m0" in by_id["empir-adaptive"]["attacks"]
    # same training compute: the fp32 model makes as many passes as the adversarial members
    adv, fadv = by_id["empir-adv-adaptive"]["compute"], by_id["fp32-adv-adaptive"]["compute"]
    assert fadv["train_passes"] == adv["train_passes"] > 0
    assert adv["macs"] == 3 * fadv["macs"]
    assert by_id["empir-m0-adaptive"]["compute"]["bit_ops"] < fadv["bit_ops"]

    saved = json.loads((out / "results.json").read_text())
    assert saved["schema"] == X.SCHEMA and {r["id"] for r in saved["rows"]} == ROWS
    table = X.text_table(results)
    md = (tmp_path / "docs" / "RESULTS.md").read_text()
    for r in results["rows"]:
        assert r["label"] in table and r["label"] in md
    for section in ("## Accuracy and cost per model", "## What EMPIR does and does not buy",
                    "## Exact commands", "## Versions and seed", "same training compute",
                    "results-acc-vs-eps.png", "adaptive (quick, n=12)", "paper (quick, n=12)"):
        assert section in md, section
    png = tmp_path / "docs" / X.PLOT_NAME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(results["curves"]) == set(X.MODELS)
    paper_curve = results["curves"]["empir"]["protocols"]["paper"]
    assert paper_curve["eps"] == [0.05, 0.1] and len(paper_curve["mean_of_attacks"]) == 2
    assert "cw" in paper_curve["attacks"]


def test_member_compute_counts_macs_and_bit_operations():
    """The paper's MNIST net: conv 8x8x64/2, 6x6x128/2, 5x5x128, fc 10 on 28x28."""
    from edgempir.members import parse_spec
    from edgempir.models import build_model

    macs = 64 * 14 * 14 * 64 + 128 * 5 * 5 * 64 * 36 + 128 * 128 * 25 + 128 * 10
    for spec, bops in (("fp32", macs * 32 * 32),
                       # first conv sees the 8-bit input, the others 4-bit activations;
                       # the classifier is float (weights and input)
                       ("w2a4", 64 * 14 * 14 * 64 * 2 * 8 + (128 * 5 * 5 * 64 * 36
                                                            + 128 * 128 * 25) * 2 * 4
                        + 128 * 10 * 32 * 32)):
        s = parse_spec(spec)
        got = X.member_compute(build_model("mnist", s, (1, 28, 28), 10), s, (1, 28, 28))
        assert got["macs"] == macs and got["bit_ops"] == bops
    w = got["weight_bytes"]
    assert w["packed"] < w["int8"] < w["float32"]


def test_bad_options_are_one_line_errors(tmp_path, synthetic_run):
    for kw, message in (({"only": ("empir", "bogus")}, "choose among"),
                        ({"config": "slow"}, "unknown eval configuration"),
                        ({"n": 0}, "at least 1"),
                        ({"empir_run": str(tmp_path / "nowhere")}, "does not exist"),
                        ({"dataset": "mnist"}, "was trained on synthetic")):
        with pytest.raises(EdgempirError, match=message):
            X.validate(_cfg(tmp_path, synthetic_run, **kw))
    with pytest.raises(X.ExperimentError, match="not a number"):
        X.parse_curve_eps("0.1,abc", "synthetic")


def test_other_settings_are_refused(tmp_path, synthetic_run):
    X._open_dir(_cfg(tmp_path, synthetic_run), force=False, argv=None)
    with pytest.raises(X.ExperimentError, match=r"other settings \(n\)"):
        X._open_dir(_cfg(tmp_path, synthetic_run, n=13), force=False, argv=None)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(X.ExperimentError, match="not an experiment directory"):
        X._open_dir(_cfg(tmp_path, synthetic_run, out=str(tmp_path / "other")), force=True,
                    argv=None)
    assert (tmp_path / "other" / "keep.txt").is_file()


def test_step_locks_exclude_live_owners_and_take_over_dead_ones(tmp_path):
    path = X.try_lock(tmp_path, "eval-x")
    assert path is not None and X.try_lock(tmp_path, "eval-x") is None  # we are alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    path.write_text(dead)
    assert X.try_lock(tmp_path, "eval-x") == path
    assert path.read_text() == str(os.getpid())
