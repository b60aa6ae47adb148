"""``edgempir eval`` as a user runs it: the quick job end to end, help, errors."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from edgempir.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, list(args))


QUICK = ["--config", "quick", "--n", "16"]


@pytest.fixture(scope="module")
def quick_run(cli, synthetic_run, tmp_path_factory):
    """``edgempir eval RUN --config quick --n 16`` on a copy of the synthetic run, once."""
    run = tmp_path_factory.mktemp("eval-cli") / "run"
    shutil.copytree(synthetic_run, run, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    proc = cli("eval", str(run), *QUICK)
    return run, proc, json.loads((run / "eval" / "adaptive-quick.json").read_text())


def test_quick_eval_end_to_end(quick_run):
    run, proc, report = quick_run
    out = proc.stdout
    # every robustness figure is labelled with its protocol and configuration
    assert "adaptive (quick, n=16, eps=0.1): worst case" in out
    assert "lighter than standard" in out
    assert "Gradient-masking checks, protocol adaptive (quick)" in out
    for name in ("adaptive-quick.json", "adv-adaptive.npz", "table-quick.txt",
                 "acc-vs-eps.png"):
        assert (run / "eval" / name).is_file(), name
        assert f"eval/{name}" in out
    assert (run / "eval" / "acc-vs-eps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["n_examples"] == 16 and report["eps"] == [0.1]
    # progress bars go to stderr, one per attack, naming the attack and eps
    assert "pgd -> ensemble" in proc.stderr and "eps=0.1" in proc.stderr

    from edgempir.calib import read_set

    adv = read_set(run / "eval" / "adv-adaptive.npz", input_shape=(1, 28, 28), num_classes=10)
    assert adv["input"].shape == (16, 1, 28, 28)
    assert adv["index"].tolist() == report["subset"]["indices"]

    # rerun: every attack is resumed, the numbers are identical; --json prints only JSON
    again = _invoke("eval", str(run), *QUICK, "--json")
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert data["reports"]["adaptive"]["results"] == report["results"]


def test_help_shows_defaults_and_an_example():
    out = _invoke("eval", "--help").output
    assert "default: adaptive" in out and "default: standard" in out
    assert "Examples:" in out and "edgempir eval runs/fm --protocol both --config quick" in out
    assert "8/255" in out


def test_bad_inputs_exit_2_with_one_line(cli, synthetic_run, tmp_path):
    cases = [
        (["--attacks", "nope"], "unknown attack 'nope'"),
        (["--eps", "0"], "eps 0 is outside (0, 1]"),
        (["--eps", "1.5"], "eps 1.5 is outside (0, 1]"),
        (["--protocol", "paper", "--attacks", "square"], "unknown attack 'square'"),
    ]
    for args, message in cases:
        res = _invoke("eval", str(synthetic_run), "--config", "quick", "--n", "4", *args)
        assert res.exit_code == 2, res.output
        assert message in res.stderr and res.stderr.startswith("Error: ")
        assert res.stderr.strip().count("\n") == 0, res.stderr
    res = _invoke("eval", str(tmp_path / "missing"))
    assert res.exit_code == 2 and "does not exist" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _invoke("eval", str(empty))
    assert res.exit_code == 2 and "manifest.json missing" in res.stderr
    # exactly as a user sees it: one line, exit 2, no traceback
    proc = cli("eval", str(empty), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
