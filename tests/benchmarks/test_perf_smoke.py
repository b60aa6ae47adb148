"""benchmarks/perf.py end to end on the shared synthetic run, in its seconds-long --quick
mode: every section runs, the JSON has every figure and ratio, the table is printed, and
the run directory is left as it was. The figures themselves are not checked (a 2-core CI
machine shared with other jobs); their meaning is in docs/BENCHMARKS.md."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import testkit as H

REPO = Path(__file__).resolve().parents[2]
PERF = REPO / "benchmarks" / "perf.py"


def _perf_module():
    spec = importlib.util.spec_from_file_location("edgempir_perf", PERF)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(PERF.parent))       # perf.py imports its neighbour early_exit.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PERF.parent))
    return module


def test_summary_says_met_exactly_when_the_ratio_is_within_its_target():
    """Hand-made figures on both sides of each kind of bound (<= and >=), and at the bound."""
    perf = _perf_module()
    r = {"latency": {"headline": {"1": {"ratio": 1.5}, "32": {"ratio": 1.5001}}},
         "weights": {"ratio": 0.9}, "memory": {"ratio": 2.0},
         "pgd": {"ratio": 1.0}, "qat": {"ratio": 1.41},
         "early_exit": {"batches": {"1": {"vs_fp32": {"early_exit_clean": 0.5,
                                                      "early_exit_adversarial": 1.2}}}}}
    s = perf.summarize(r)
    assert {k: v["met"] for k, v in s.items()} == {
        "latency_b1": True, "latency_b32": False, "weight_bytes": True, "peak_rss": False,
        "pgd_throughput_vs_torchattacks": True, "qat_step": False,
        "early_exit_clean_b1": True, "early_exit_adversarial_b1": False}
    assert s["qat_step"] == {"ratio": 1.41, "target": "<= 1.4", "met": False}
    r["pgd"]["ratio"] = 0.99
    assert perf.summarize(r)["pgd_throughput_vs_torchattacks"]["met"] is False


def test_perf_quick_runs_every_section(evaluated_run, tmp_path):
    before = H.file_stamps(evaluated_run)
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(PERF), "--run", str(evaluated_run), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, check=False,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    # stdout: the table, then the same JSON
    table, _, printed = proc.stdout.partition("\n{")
    assert json.loads("{" + printed) == r
    for needle in ("latency p50, batch 1 (ms)", "weight bytes as stored (packed-int2-int4)",
                   "peak RSS above baseline", "QAT step w2a4 vs fp32, batch 128",
                   "PGD image-steps/s", "threads: ONNX Runtime", "latency vs batch size"):
        assert needle in table, needle
    assert r["schema"] == "edgempir.perf" and r["quick"] is True
    assert H.file_stamps(evaluated_run) == before                 # perf works on copies

    s = r["summary"]
    assert set(s) == {"latency_b1", "latency_b32", "weight_bytes", "peak_rss", "qat_step",
                      "pgd_throughput_vs_torchattacks", "early_exit_clean_b1",
                      "early_exit_clean_b32", "early_exit_adversarial_b1",
                      "early_exit_adversarial_b32"}
    for v in s.values():
        assert math.isfinite(v["ratio"]) and v["ratio"] > 0
        op, bound = v["target"].split()
        assert v["met"] is (v["ratio"] <= float(bound) if op == "<=" else v["ratio"] >= float(bound))
    assert s["latency_b1"]["ratio"] == round(r["latency"]["headline"]["1"]["ratio"], 4)

    lat = r["latency"]
    assert set(lat["headline"]) == {"1", "32"}
    for row in lat["headline"].values():
        assert row["ratio"] == row["ensemble_ms"] / row["fp32_ms"]
        assert row["ensemble_repeats"] >= 5 and row["fp32_repeats"] >= 5
    assert lat["profile_settings"]["intra_op_threads_effective"] >= 1

    w = r["weights"]
    # synthetic run: w2a4 + w4a4 + fp32; packed storage is what the bundle holds
    assert w["storage_format"] == "packed-int2-int4"
    assert w["ratio"] < 1.25 < w["ratio_int8_storage"]
    assert w["ensemble_true_bits_bytes"] < w["ensemble_stored_bytes"] < w["ensemble_int8_bytes"]
    assert abs(w["ratio_from_files"] - w["ratio"]) < 0.01  # the manifest matches the files

    mem = r["memory"]
    assert mem["ensemble"]["model_peak_bytes"] > 0 and mem["fp32_member"]["model_peak_bytes"] > 0
    assert mem["ratio"] == mem["ensemble"]["model_peak_bytes"] / \
        mem["fp32_member"]["model_peak_bytes"]

    q = r["qat"]
    assert q["low_bit_spec"] == "w2a4" and q["batch_size"] == 128 and q["torch_threads"] >= 1
    _check_qat(q)
    p = r["pgd"]
    assert p["n"] == 8 and p["steps"] == 2 and p["step_size"] == 0.25 * p["eps"]
    assert set(p["image_steps_per_s"]) == {"edgempir", "torchattacks"}

    assert [x["batch_size"] for x in r["scaling"]["latency"]["rows"]] == [1, 2, 4, 8]
    assert [x["n"] for x in r["scaling"]["eval"]["rows"]] == [2, 4]

    ee = r["early_exit"]   # issue 18: early exit vs full graph vs fp32, decisions checked
    assert "Early-exit vote (issue 18)" in table
    assert all(c["decisions_identical"] and c["same_as_full_graph"] for c in ee["sets"])
    for row in ee["batches"].values():
        assert {"fp32_member", "full_graph", "early_exit_clean", "early_exit_adversarial",
                "early_exit_worst_case", "python_cascade_clean"} <= set(row["ms"])
        assert row["vs_fp32"]["fp32_member"] == 1.0


def test_perf_refuses_a_directory_that_is_not_an_evaluated_run(tmp_path):
    proc = subprocess.run([sys.executable, str(PERF), "--run", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "is not a run directory" in proc.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    proc = subprocess.run([sys.executable, str(PERF), "--run", str(run)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "has not been evaluated" in proc.stderr


def _check_qat(q: dict) -> None:
    """Fused kernels and Brevitas' own path measured side by side (issue 19)."""
    assert q["ratio"] == q["low_bit_ms"] / q["fp32_ms"]
    assert q["ratio_brevitas_path"] == q["brevitas_path_ms"] / q["fp32_ms"]
    assert q["speedup_vs_brevitas_path"] == q["brevitas_path_ms"] / q["low_bit_ms"]


def test_perf_only_qat_needs_a_trained_run_only(synthetic_run, tmp_path):
    proc = subprocess.run([sys.executable, str(PERF), "--run", str(synthetic_run), "--quick",
                           "--only-qat", "--threads", "1"], capture_output=True, text=True,
                          timeout=600, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table, _, printed = proc.stdout.partition("\n{")
    r = json.loads("{" + printed)
    assert set(r["summary"]) == {"qat_step"} and "latency" not in r
    assert r["summary"]["qat_step"]["target"] == "<= 1.4"
    _check_qat(r["qat"])
    for needle in ("QAT step w2a4 vs fp32, batch 128", "(Brevitas path, before issue 19)"):
        assert needle in table, needle
