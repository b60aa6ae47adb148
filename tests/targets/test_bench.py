"""bench's measuring parts, without a bundle: statistics, timing, soak, machine, schema."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from edgempir.targets.device import bench, machine, report

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------- latency
def test_latency_stats_percentiles_and_throughput():
    s = bench.latency_stats([i / 1000 for i in range(1, 101)], batch_size=8)  # 1..100 ms
    assert s["repeats"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == pytest.approx(100)
    assert s["throughput_img_s"] == pytest.approx(8 / 0.0505)
    with pytest.raises(ValueError):
        bench.latency_stats([], 1)


def test_time_calls_respects_repeats_and_the_time_cap():
    assert len(bench.time_calls(lambda: None, 7)) == 7
    t0 = time.perf_counter()
    out = bench.time_calls(lambda: time.sleep(0.01), 10_000, time_cap_s=0.1)
    assert time.perf_counter() - t0 < 1.0
    assert bench.MIN_REPEATS <= len(out) < 100
    assert all(t >= 0.009 for t in out)


def test_compare_latency_measures_both_side_by_side():
    """A model that does twice the work shows up about twice as slow, at every batch size."""
    w = np.random.default_rng(0).random((784, 784), dtype=np.float32)
    one = lambda x: x.reshape(len(x), -1) @ w
    two = lambda x: (x.reshape(len(x), -1) @ w) @ w
    pool = np.random.default_rng(1).random((5, 1, 28, 28), dtype=np.float32)
    ticks = []

    class Prog:
        def __init__(self, label, total):
            ticks.append((label, total))

        def __enter__(self):
            return lambda n=1: ticks.append(n)

        def __exit__(self, *a):
            return False

    rows = bench.compare_latency({"ensemble": two, "fp32_member": one}, pool, (1, 16),
                                 warmup=2, repeats=25, time_cap_s=0.5, progress=Prog)
    assert [r["batch_size"] for r in rows] == [1, 16]
    for r in rows:
        assert r["ensemble"]["repeats"] <= 25 and r["fp32_member"]["repeats"] <= 25
        assert r["ensemble"]["batch_size"] == r["batch_size"]
    assert ticks[0] == ("latency", 4) and sum(t for t in ticks[1:]) == 4


def test_compare_latency_times_each_callable_under_its_own_label():
    # no wall-clock ratio (a flake on a shared machine): a sleep is a lower bound that load
    # cannot shorten, so a swapped label or a timer around the wrong call shows
    def slow(x):
        time.sleep(0.004)
        return x

    pool = np.zeros((3, 1, 2, 2), dtype=np.float32)
    rows = bench.compare_latency({"ensemble": slow, "fp32_member": lambda x: x}, pool, (1, 4),
                                 warmup=1, repeats=5, time_cap_s=5.0)
    for r in rows:
        assert r["ensemble"]["p50_ms"] >= 4.0
        assert r["fp32_member"]["p50_ms"] < r["ensemble"]["p50_ms"]


def test_batches_are_real_images_repeated_to_size():
    pool = np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1)
    np.testing.assert_array_equal(bench._batch_of(pool, 5).ravel(), [0, 1, 2, 0, 1])


# ----------------------------------------------------------------- scores
def test_ensemble_scores_is_log_of_mean_softmax():
    logits = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(bench.ensemble_scores(logits), np.log(p.mean(0)), rtol=1e-5)
    np.testing.assert_allclose(bench.member_scores(logits[0]), np.log(p[0]), rtol=1e-5)


# ----------------------------------------------------------------- soak
def test_soak_reports_windows_drift_and_rss():
    calls = []

    def slow_down(x):  # slower after the first ~0.4 s: the last window must show the drift
        calls.append(1)
        time.sleep(0.002 if len(calls) < 150 else 0.006)

    r = bench.soak(slow_down, np.zeros((1, 1, 2, 2), np.float32), duration_s=1.2,
                   window_s=0.4)
    assert len(r["windows"]) == 3
    assert 1.1 < r["duration_s"] < 2.5
    assert all(w["rss_bytes"] > 0 and w["calls"] > 0 for w in r["windows"])
    assert r["latency_drift"] > 0.5 and r["latency_drift_flag"]
    assert isinstance(r["rss_growth_bytes"], int)
    assert not r["rss_growth_flag"]


# ----------------------------------------------------------------- machine
X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse sse2 hypervisor
"""
PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""
PI5_BOARD_LINES = """Revision\t: d04170
Serial\t\t: 7e8f2c1a
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


def test_cpu_model_names_x86_and_arm_cores():
    assert machine.cpu_model(X86_CPUINFO).startswith("Intel(R) Xeon(R)")
    assert machine.cpu_model(PI5_CPUINFO) == "Cortex-A76"
    unknown = PI5_CPUINFO.replace("0x41", "0x51").replace("0xd0b", "0x802")
    assert machine.cpu_model(unknown) == "ARM implementer 0x51 part 0x802"


def test_board_lines_name_the_board_not_the_cpu(monkeypatch):
    # a Pi 5's cpuinfo ends with the board's "Model" line: that is no CPU name
    monkeypatch.setattr(machine, "read_text", lambda path: None)  # no device tree here
    assert machine.cpu_model(PI5_CPUINFO + PI5_BOARD_LINES) == "Cortex-A76"
    assert machine.board_name(PI5_CPUINFO + PI5_BOARD_LINES) == "Raspberry Pi 5 Model B Rev 1.0"
    # x86's numeric "model" is the CPU model number, not a board
    assert machine.board_name(X86_CPUINFO + "model\t\t: 143\n") is None


def test_detect_emulation(tmp_path):
    empty = tmp_path / "binfmt"
    empty.mkdir()
    native = machine.detect_emulation("x86_64", X86_CPUINFO, env={}, binfmt_dir=str(empty))
    assert native == {"emulated": False, "emulator": None, "evidence": []}
    assert not machine.detect_emulation("aarch64", PI5_CPUINFO, env={},
                                      binfmt_dir=str(empty))["emulated"]
    # the runner's variable
    r = machine.detect_emulation("aarch64", PI5_CPUINFO,
                               env={"EDGEMPIR_EMULATED": "qemu-aarch64 -cpu cortex-a76"},
                               binfmt_dir=str(empty))
    assert r["emulated"] and r["emulator"] == "qemu-aarch64 -cpu cortex-a76"
    # qemu-user shows the host's x86 cpuinfo to an aarch64 guest
    r = machine.detect_emulation("aarch64", X86_CPUINFO, env={}, binfmt_dir=str(empty))
    assert r["emulated"] and "x86" in r["evidence"][0]
    # a qemu handler registered for the interpreter's own architecture
    (empty / "qemu-aarch64").write_text("enabled\ninterpreter /usr/bin/qemu-aarch64-static\n")
    r = machine.detect_emulation("aarch64", PI5_CPUINFO, env={}, binfmt_dir=str(empty))
    assert r["emulated"] and "binfmt" in r["evidence"][0]


def test_machine_info_on_this_machine(monkeypatch):
    monkeypatch.setenv("EDGEMPIR_EMULATED", "qemu-aarch64 -cpu cortex-a76")
    m = machine.machine_info()
    assert m["arch"] and m["cores_logical"] >= 1 and m["memory_total_bytes"] > 0
    assert m["emulation"]["emulated"] and m["emulation"]["emulator"].startswith("qemu")
    monkeypatch.delenv("EDGEMPIR_EMULATED")
    assert report.validate_report(m, report.SCHEMA_SPEC["machine"], "machine") == []


# ----------------------------------------------------------------- schema
def test_validator_finds_missing_extra_and_mistyped_fields():
    spec = {"a": int, "b": (str, None), "c": [{"d": float}], "e": ({"f": bool}, None)}
    assert report.validate_report({"a": 1, "b": None, "c": [{"d": 1.0}], "e": None}, spec,
                                 "r") == []
    errs = report.validate_report({"a": True, "c": [{"d": "x"}], "e": {"f": 1}, "z": 0}, spec,
                                 "r")
    assert "r.b: missing" in errs and "r.z: not in the schema" in errs
    assert any(e.startswith("r.a: expected int, got bool") for e in errs)
    assert any(e.startswith("r.c[0].d") for e in errs)
    assert any(e.startswith("r.e.f") for e in errs)
    assert report.validate_report({"schema": "other"})[0].startswith("report: schema is")


def test_every_report_field_is_documented():
    doc = (REPO / "docs" / "BENCH.md").read_text()
    documented = set(re.findall(r"`([A-Za-z0-9_\[\].-]+)`", doc))
    # objects that appear twice (ensemble and baseline) are documented once, by type name
    shared = {"latency[].ensemble.": "LatencyStats.", "latency[].fp32_member.": "LatencyStats.",
              "latency[].ensemble_adversarial.": "LatencyStats.",
              "latency[].ensemble_worst_case.": "LatencyStats.",
              "memory.ensemble.": "MemoryRun.", "memory.fp32_member.": "MemoryRun.",
              "square.ensemble.": "SquareResult.", "square.fp32_member.": "SquareResult."}

    def doc_name(key):
        for prefix, name in shared.items():
            if key.startswith(prefix):
                return name + key[len(prefix):]
        return key

    missing = [k for k in report.schema_keys() if doc_name(k) not in documented]
    assert not missing, f"docs/BENCH.md does not describe: {missing}"


def test_every_warning_code_has_a_docs_section():
    doc = (REPO / "docs" / "BENCH.md").read_text()
    src = (REPO / "targets" / "device" / "bench.py").read_text()
    codes = set(re.findall(r'_warning\("([a-z0-9-]+)"', src))
    assert codes >= {"emulated", "accuracy-drift", "no-fp32-member", "soak-rss-growth"}
    headings = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', doc))
    assert codes <= headings, f"undocumented warnings: {codes - headings}"


def test_busy_machine_is_judged_per_usable_core():
    assert machine.busy({"load_average": [3.0, 1, 1], "cores_usable": 2})
    assert not machine.busy({"load_average": [0.9, 1, 1], "cores_usable": 2})
    assert not machine.busy({"load_average": [3.0, 1, 1], "cores_usable": 8})
    assert not machine.busy({"load_average": None, "cores_usable": 2})
