"""``edgempir export`` from the command line: the good path and every bad input.

Bad inputs must give one line ``Error: ...``, exit code 2, no traceback, and leave no
output directory (or temporary directory) behind.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgempir.cli", *args], capture_output=True,
                          text=True, timeout=600, check=False)


def assert_one_line_error(proc, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_and_force(evaluated_run, tmp_path):
    out = tmp_path / "fm-arm"
    out.mkdir()
    (out / "old-file").write_text("x")
    proc = cli("export", str(evaluated_run), "--target", "x86", "--out", str(out))
    assert_one_line_error(proc, "already exists; pass --force")
    assert (out / "old-file").exists()
    proc = cli("export", str(evaluated_run), "--target", "x86", "--out", str(out), "--force",
               "--n-calib", "16", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["target"] == "x86" and not (out / "old-file").exists()
    assert json.loads((out / "manifest.json").read_text())["files"] == manifest["files"]
    assert [p.name for p in tmp_path.iterdir()] == ["fm-arm"]


def test_unknown_target(evaluated_run, tmp_path):
    proc = cli("export", str(evaluated_run), "--target", "riscv", "--out", str(tmp_path / "b"))
    assert_one_line_error(proc, "unknown target 'riscv'")
    assert not (tmp_path / "b").exists()


def test_profile_with_unknown_key(evaluated_run, tmp_path):
    prof = tmp_path / "board.toml"
    prof.write_text('name = "board"\nruntime = "onnxruntime"\n[onnxruntime]\nthreads = 2\n')
    proc = cli("export", str(evaluated_run), "--target", str(prof), "--out", str(tmp_path / "b"))
    assert_one_line_error(proc, "unknown key 'threads' in [onnxruntime]")
    assert not (tmp_path / "b").exists()


def test_run_without_weights(evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    next((run / "members").glob("*.safetensors")).unlink()
    proc = cli("export", str(run), "--target", "arm", "--out", str(tmp_path / "b"))
    assert_one_line_error(proc, "member weights")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("remove", ["eval", "eval/adv-adaptive.npz", "report"])
def test_run_without_eval(evaluated_run, tmp_path, remove):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    if remove == "eval":
        shutil.rmtree(run / "eval")
    elif remove == "report":
        for p in (run / "eval").glob("adaptive-*.json"):
            p.unlink()
    else:
        (run / remove).unlink()
    proc = cli("export", str(run), "--target", "arm", "--out", str(tmp_path / "b"))
    assert_one_line_error(proc, "edgempir eval")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_not_a_run(tmp_path):
    proc = cli("export", str(tmp_path), "--target", "arm", "--out", str(tmp_path / "b"))
    assert_one_line_error(proc, "not a run directory")


def test_tensorrt_rules_checked_on_every_jetson_export(evaluated_run, tmp_path):
    """A TensorRT profile without the rules pass: the checker names the offending node."""
    prof = tmp_path / "trt-no-pass.toml"
    prof.write_text('name = "trt-no-pass"\nruntime = "tensorrt"\n[export]\n'
                    'graph_rules = ["tensorrt"]\n[tensorrt]\nmax_batch = 8\n')
    proc = cli("export", str(evaluated_run), "--target", str(prof), "--out", str(tmp_path / "b"))
    assert_one_line_error(proc, "breaks TensorRT's ONNX rules: QuantizeLinear node "
                                "'/quant_input/act_quant/export_handler/QuantizeLinear'")
    assert not (tmp_path / "b").exists()
