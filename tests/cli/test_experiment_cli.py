"""``edgempir experiment paper-vs-adaptive`` as a user runs it: one part end to end,
resume with --json, help, and bad input."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgempir.cli import main

CMD = ("experiment", "paper-vs-adaptive")


def _invoke(*args):
    """In-process (the suite's torch import is reused); the first run below is a real
    subprocess."""
    return CliRunner().invoke(main, list(args))


def _args(tmp_path, synthetic_run, *extra):
    return [*CMD, "--dataset", "synthetic", "--empir-run", str(synthetic_run), "--n", "8",
            "--out", str(tmp_path / "exp"), "--results-md", str(tmp_path / "RESULTS.md"),
            "--threads", "1", *extra]


def _run_two_at_once(args: list[str]) -> list[subprocess.CompletedProcess]:
    """Two invocations on one --out started together, as two users (or two terminals) would."""
    cmd = [sys.executable, "-m", "edgempir.cli", *args]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr))
    return done


def test_one_part_by_two_invocations_sharing_the_directory_then_resume_as_json(
        tmp_path, synthetic_run):
    both = _run_two_at_once(_args(tmp_path, synthetic_run, "--only", "empir"))
    assert [p.returncode for p in both] == [0, 0], [p.stderr[-2000:] for p in both]
    # the three steps (copy the run, eval paper, eval adaptive) are split: each one is run by
    # exactly one of the two, and both finish with the whole part's results
    ran = [re.findall(r"\] (.+?): finished in", p.stderr) for p in both]
    assert sorted(ran[0] + ran[1]) == sorted(set(ran[0] + ran[1])) and len(ran[0] + ran[1]) == 3
    assert all(ran), ("one invocation did every step", ran)
    assert both[0].stdout == both[1].stdout
    proc = next(p for p in both if "[2/3] eval empir, protocol paper" in p.stderr)
    out = proc.stdout
    # every figure says its protocol, configuration and n; unfinished rows are listed
    for text in ("EMPIR (w2a4+w4a4+fp32, vote), default training", "paper (quick, n=8)",
                 "adaptive (quick, n=8)", "fp32 alone (EMPIR's member 2), default training",
                 "w4a4 alone (EMPIR's member 1)", "not done yet: empir-adv-adaptive",
                 f"wrote {tmp_path / 'RESULTS.md'}"):
        assert text in out, text
    assert "[2/3] eval empir, protocol paper (quick, n=8, eps 0.1)" in proc.stderr
    assert not list((tmp_path / "exp" / "locks").glob("*.lock"))
    rows = tmp_path / "exp" / "rows"
    before = {p.name: p.stat().st_mtime_ns for p in rows.glob("*.json")}
    assert len(before) == 6

    again = _invoke(*_args(tmp_path, synthetic_run, "--only", "empir", "--json"))
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert {r["id"] for r in data["rows"]} == {p[:-5] for p in before}
    assert not data["complete"] and "fp32-adv-adaptive" in data["missing"]
    assert {p.name: p.stat().st_mtime_ns for p in rows.glob("*.json")} == before
    assert (tmp_path / "results-acc-vs-eps.png").is_file()
    # the command line is logged as given, whichever way the process was started
    argv = [i["argv"] for i in data["invocations"]]
    assert len(argv) == 3 and argv[0] == argv[1] == argv[2][:-1] and argv[2][-1] == "--json"
    assert argv[0][:3] == ["edgempir", *CMD] and "--empir-run" in argv[0]

    other = _invoke(*_args(tmp_path, synthetic_run, "--only", "empir", "--n", "9"))
    assert other.exit_code == 2 and "other settings (n)" in other.stderr


@pytest.mark.parametrize("extra, message", [
    (["--only", "empir,bogus"], "choose among"),
    (["--curve-eps", "0.1,abc"], "not a number"),
    (["--empir-run", "NOWHERE"], "does not exist"),
    (["--dataset", "mnist"], "was trained on synthetic"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, synthetic_run, extra, message):
    extra = [e.replace("NOWHERE", str(tmp_path / "nowhere")) for e in extra]
    res = _invoke(*_args(tmp_path, synthetic_run, *extra))
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert not (tmp_path / "exp").exists()


def test_help_shows_defaults_and_example():
    res = _invoke(*CMD, "--help")
    # undo click's line wrapping (it also breaks lines after a hyphen)
    text = " ".join(res.stdout.split()).replace("- ", "-")
    for part in ("[default: 2000; 1<=x<=1000000]", "[default: quick]", "--empir-run", "Examples:",
                 "[default: experiments/paper-vs-adaptive]", "[default: docs/RESULTS.md]"):
        assert part in text, part
