"""``edgempir bench`` end to end: table, JSON schema, vote agreement with the host, bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import testkit as H

from edgempir.targets.device.bench import validate_report

FAST = ("--batch-sizes", "1,4", "--repeats", "15", "--warmup", "2", "--square-queries", "25",
        "--square-n", "16")




def test_bench_prints_its_table_and_writes_a_valid_report_next_to_the_bundle(tiny_copy, cli):
    before = H.file_stamps(tiny_copy)
    proc = cli("bench", str(tiny_copy), *FAST, "--duration", "1.5")
    out = proc.stdout
    for heading in ("Latency after warm-up", "Memory (peak RSS", "Accuracy of the deployed",
                    "Black-box robustness: Square Linf eps 0.1, 25 queries", "Soak:"):
        assert heading in out, out
    # every accuracy says what produced it
    assert "protocol adaptive (tiny)" in out and "no attack" in out
    report_path = tiny_copy.parent / "tiny-x86-bench.json"
    assert f"report: {report_path}" in out
    report = json.loads(report_path.read_text())
    assert validate_report(report) == []
    assert H.file_stamps(tiny_copy) == before, "bench must not write inside the bundle"
    assert [r["batch_size"] for r in report["latency"]] == [1, 4]
    assert report["soak"] and len(report["soak"]["windows"]) >= 1
    # the tiny bundle's host figures come from the same vote: no drift
    assert not report["accuracy"]["drift"]
    assert all(s["vote_agreement"] == 1.0 for s in report["accuracy"]["sets"])
    mem = report["memory"]
    assert mem["ensemble"]["peak_rss_bytes"] > mem["ensemble"]["baseline_rss_bytes"] > 0
    assert mem["ensemble"]["which"] == "ensemble" and mem["fp32_member"]["which"] == "2"


def test_bench_of_an_early_exit_graph_reports_three_latencies_and_the_slow_path(
        tiny_bundle_factory, cli, tmp_path):
    """Clean, adversarial and worst-case latency side by side with the fp32 member; the
    slow-path fraction; decisions checked against the full vote of every member file."""
    bundle = tiny_bundle_factory(vote_mode="early-exit")
    out = tmp_path / "r.json"
    proc = cli("bench", str(bundle), *FAST, "--no-memory", "--out", str(out))
    report = json.loads(out.read_text())
    assert validate_report(report) == []
    ee = report["early_exit"]
    assert ee["order"] == [0, 1, 2] and ee["reference_member"] == 2
    from edgempir.calib import INPUT_NAME, read_set
    from edgempir.targets.device.runtime import open_model

    for s in ee["sets"]:
        assert s["decisions_identical"] and s["full_vote_mismatches"] == 0, s
        # the slow path is exactly where the two low-bit member files disagree
        x = read_set(bundle / "calib" / f"{s['name']}.npz")[INPUT_NAME]
        pair = [open_model(bundle, i, threads=1).run(x)[0] for i in (0, 1)]
        assert s["slow_path_fraction"] == pytest.approx(float((pair[0] != pair[1]).mean()))
        assert s["member_ran_fraction"][:2] == [1.0, 1.0]
        assert s["member_ran_fraction"][2] == s["slow_path_fraction"]
    assert ee["worst_case_rows"] > 0
    for row in report["latency"]:
        for key in ("ensemble", "ensemble_adversarial", "ensemble_worst_case"):
            assert row[key]["p50_ms"] > 0
        assert row["overhead_p50_worst_case"] > 0
    text = proc.stdout
    assert "WORST CASE (all slow path)" in text and "adversarial set" in text
    assert "slow path (reference run) on" in text and "budget deadlines on the worst case" in text
    assert "decisions identical to the full vote" in text


def test_json_flag_prints_only_json(tiny_bundle, cli, tmp_path):
    out = tmp_path / "r.json"
    proc = cli("bench", str(tiny_bundle), *FAST, "--no-memory", "--json", "--out", str(out),
               env={"EDGEMPIR_EMULATED": "qemu-aarch64 -cpu cortex-a76"})
    report = json.loads(proc.stdout)
    assert validate_report(report) == []
    assert report["memory"]["ensemble"] is None
    assert report["machine"]["emulation"] == {
        "emulated": True, "emulator": "qemu-aarch64 -cpu cortex-a76",
        "evidence": ["EDGEMPIR_EMULATED=qemu-aarch64 -cpu cortex-a76"]}
    assert any(w["code"] == "emulated" for w in report["warnings"])
    assert proc.stderr.strip() == ""


def test_no_fp32_member_and_no_memory_child_are_warnings_not_failures(tiny_bundle_factory,
                                                                     monkeypatch):
    """In process: a bundle without fp32 member, and a machine where no child can start."""
    import sys

    from edgempir.targets.device.bench import BenchConfig, format_report, run_bench

    b = tiny_bundle_factory(fp32=False)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    r = run_bench(b, BenchConfig(batch_sizes=(2,), repeats=5, warmup=1, square_queries=10,
                                 square_n=6))
    assert validate_report(r) == []
    codes = {w["code"] for w in r["warnings"]}
    assert {"no-fp32-member", "memory-unavailable"} <= codes
    assert r["bundle"]["fp32_member"] is None and r["bundle"]["baseline_member"] == 2
    assert r["memory"]["ensemble"] is None
    text = format_report(r)
    assert "member 2 (w8a8)" in text and "warning [memory-unavailable]" in text


# ----------------------------------------------------------------- bad input: exit 2, one line
def _fails(cli, *args, needle: str, env=None):
    proc = cli("bench", *args, check=False, env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


def test_missing_bundle(cli, tmp_path):
    _fails(cli, str(tmp_path / "nope"), needle="does not exist")
    (tmp_path / "empty").mkdir()
    _fails(cli, str(tmp_path / "empty"), needle="not a bundle")


def test_tampered_bundle(cli, tiny_copy):
    f = tiny_copy / "members" / "2-fp32.onnx"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    _fails(cli, str(tiny_copy), needle="does not match its sha256")


def test_missing_file_in_bundle(cli, tiny_copy):
    (tiny_copy / "calib" / "clean.npz").unlink()
    _fails(cli, str(tiny_copy), needle="calib/clean.npz is missing")


def test_tensorrt_bundle_without_tensorrt(cli, tiny_bundle_factory):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    jetson = tiny_bundle_factory(runtime="tensorrt", target="jetson")
    _fails(cli, str(jetson), needle="TensorRT is not installed")


def test_wrong_input_shape_in_a_calib_file(cli, tiny_copy):
    from edgempir.calib import write_set
    from edgempir.targets.device.bundle import write_manifest

    # a consistent bundle (hashes re-signed) whose clean set has 1x27x28 images
    x = np.zeros((4, 1, 27, 28), np.float32)
    write_set(tiny_copy / "calib" / "clean.npz", x, np.zeros(4, np.int64))
    manifest = json.loads((tiny_copy / "manifest.json").read_text())
    manifest.pop("files")
    write_manifest(tiny_copy, manifest)
    _fails(cli, str(tiny_copy), needle="inputs have shape [1, 27, 28] but the model takes "
                                       "[1, 28, 28]")


def test_unwritable_report_path_fails_before_measuring(cli, tiny_bundle, tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "a-dir"
        target.mkdir()   # root can write anywhere: use a directory as the "file" instead
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "r.json"
    _fails(cli, str(tiny_bundle), "--out", str(target), needle="cannot write the report")


def test_bad_batch_sizes_are_a_usage_error(cli, tiny_bundle):
    proc = cli("bench", str(tiny_bundle), "--batch-sizes", "1,x", check=False)
    assert proc.returncode == 2 and "positive integers" in proc.stderr


# ----------------------------------------------------------------- the vote, host vs device
def test_vote_in_the_runtime_equals_the_hosts_vote(bundle, evaluated_run):
    """The exported graph's vote (ONNX Runtime) gives the host's (PyTorch) class ids."""
    import torch

    from edgempir.calib import INPUT_NAME, LABEL_NAME, read_set
    from edgempir.rundir import load_run
    from edgempir.targets.device.bundle import verify_bundle
    from edgempir.targets.device.runtime import open_model
    from edgempir.vote import vote

    b = verify_bundle(bundle)
    engine = open_model(b, "ensemble", threads=1)
    host = load_run(evaluated_run)
    for name in ("clean", "adv-adaptive"):
        s = read_set(b.calib_file(name), b.input_shape, b.num_classes)
        x = s[INPUT_NAME]
        ids, logits = engine.run(x)
        with torch.no_grad():
            host_ids = host(torch.from_numpy(x)).argmax(1).numpy()
        np.testing.assert_array_equal(ids, host_ids, err_msg=name)
        # and the graph's vote is the numpy rule applied to the graph's own member logits
        np.testing.assert_array_equal(ids, vote(logits, b.reference_member))
        acc = float((ids == s[LABEL_NAME]).mean())
        assert abs(acc - b.host_accuracy[name]) <= 0.005, (name, acc, b.host_accuracy[name])
