"""Every warning bench can give, seen in its "on" state, each caused the way it happens in the
field (not by patching the warning itself):

- ``accuracy-drift``: the manifest's host figure is 10 points above what the engine scores;
- ``vote-mismatch``: the engine's vote graph breaks ties with the wrong member;
- ``no-fp32-member``: a bundle without fp32 member;
- ``memory-unavailable``: the child process that measures peak RSS cannot start;
- ``busy-machine``: the 1-minute load average is high; ``emulated``: EDGEMPIR_EMULATED set;
- ``soak-latency-drift`` / ``soak-rss-growth``: an engine that slows down and keeps memory
  after the first soak window;
- ``subset``: ``--n`` below the set's size (and then drift is not judged).

The last test lists bench.py's warning codes, so a new warning must be added here.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from edgempir.targets.device import bench
from edgempir.targets.device.bench import BenchConfig, run_bench, validate_report

FAST = {"batch_sizes": (2,), "repeats": 5, "warmup": 1, "square_queries": 10, "square_n": 6}
ALL_ON = {"accuracy-drift", "vote-mismatch", "no-fp32-member", "memory-unavailable",
          "busy-machine", "emulated", "soak-latency-drift", "soak-rss-growth"}


def _rewrite(bundle: Path, edit_manifest=None, tie_breaker: int | None = None) -> None:
    """Edit a bundle the way a faulty export would, then re-seal its sha256 manifest."""
    import onnx
    from onnx import numpy_helper

    from edgempir.targets.device.bundle import write_manifest

    manifest = json.loads((bundle / "manifest.json").read_text())
    if tie_breaker is not None:
        graph = onnx.load(bundle / "ensemble.onnx")
        node = next(n for n in graph.graph.node if n.output[0] == "ref")
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(tie_breaker, np.int64)))
        onnx.save(graph, bundle / "ensemble.onnx")
    if edit_manifest:
        edit_manifest(manifest)
    manifest.pop("files", None)
    write_manifest(bundle, manifest)


def _degrading_soak(real_soak):
    """bench.soak over an engine that, once the first window is recorded, takes 3 ms more per
    call and keeps 64 MiB in use (the flag is at 8 MiB; 24 MiB once went unseen under load),
    touching each kept page on every call as an engine's live buffers are. The switch follows
    the soak's own window tick, not a clock of ours: on a loaded machine a clock started
    outside the soak let the allocation land inside the first window, and then no growth was
    seen (CI, 2026-11-30)."""
    from contextlib import contextmanager

    def soak(run, x, duration_s, window_s=None, progress=bench.no_progress):
        state = {"windows_done": 0, "kept": []}

        @contextmanager
        def counting(label, total):
            with progress(label, total) as tick:
                def counted(n=1):
                    state["windows_done"] += n
                    tick(n)
                yield counted

        def worse(batch):
            if state["windows_done"] >= 1:
                time.sleep(0.003)
                if not state["kept"]:
                    state["kept"].append(np.ones(64 << 20, np.uint8))
                state["kept"][0][::4096] += 1   # every page in use: real, resident RSS
            return run(batch)
        return real_soak(worse, x, duration_s, window_s=1.0, progress=counting)
    return soak


def _codes(report) -> set[str]:
    return {w["code"] for w in report["warnings"]}


def test_every_warning_fires_on_a_bundle_and_machine_built_for_it(tiny_bundle_factory, tmp_path,
                                                                   monkeypatch):
    b = tmp_path / "faulty"
    shutil.copytree(tiny_bundle_factory(fp32=False), b)

    def host_ten_points_high(m):
        m["host_accuracy"]["clean"] = min(1.0, m["host_accuracy"]["clean"] + 0.10)
    _rewrite(b, host_ten_points_high, tie_breaker=0)   # the manifest still says member 2
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    monkeypatch.setattr("os.getloadavg", lambda: (64.0, 64.0, 64.0))
    monkeypatch.setenv("EDGEMPIR_EMULATED", "qemu-aarch64")
    monkeypatch.setattr(bench, "soak", _degrading_soak(bench.soak))
    r = run_bench(b, BenchConfig(**FAST, duration_s=2.0))
    assert validate_report(r) == []
    assert _codes(r) == ALL_ON, r["warnings"]
    clean = next(s for s in r["accuracy"]["sets"] if s["name"] == "clean")
    assert clean["drift"] and clean["drift_points"] <= -9.0
    assert clean["vote_agreement"] < 1.0
    assert r["soak"]["rss_growth_bytes"] > bench.SOAK_RSS_GROWTH_FLAG
    assert r["soak"]["latency_drift"] > bench.SOAK_LATENCY_DRIFT_FLAG
    text = bench.format_report(r)
    for code in ALL_ON:
        assert f"warning [{code}]" in text


def test_a_subset_is_flagged_and_not_judged_for_drift(tiny_bundle_factory, tmp_path,
                                                      monkeypatch):
    b = tmp_path / "drifting"
    shutil.copytree(tiny_bundle_factory(), b)
    _rewrite(b, lambda m: m["host_accuracy"].update(clean=0.0))   # a 100-point gap
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.delenv("EDGEMPIR_EMULATED", raising=False)
    r = run_bench(b, BenchConfig(**FAST, n=10, memory=False))
    assert _codes(r) == {"subset"}, r["warnings"]
    assert all(not s["drift"] for s in r["accuracy"]["sets"])
    # the whole set: the same gap is a drift
    full = run_bench(b, BenchConfig(**{**FAST, "square_n": 0}, memory=False))
    assert _codes(full) == {"accuracy-drift"}, full["warnings"]


def test_the_on_states_above_cover_every_warning_code():
    src = Path(bench.__file__).read_text()
    codes = set(re.findall(r'_warning\("([a-z0-9-]+)"', src))
    tested = ALL_ON | {"subset", "rejection-drift", "early-exit-mismatch"}
    assert codes == tested, f"warnings without an 'on' test: {codes - tested}"



def test_rejection_drift_and_early_exit_mismatch_fire(bundle, tmp_path, monkeypatch):
    """The two warnings of the reject option and the early exit: a host rejection rate 10
    points off the engine's, and member files whose full vote differs from the graph's."""
    b = tmp_path / "x86"
    shutil.copytree(bundle, b)
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["vote_execution"]["mode"] == "early-exit"

    def host_rejects_more(m):
        m["host_rejection"]["clean"] = min(1.0, m["host_rejection"]["clean"] + 0.10)
    _rewrite(b, host_rejects_more)
    classes = manifest["num_classes"]
    real = bench.EE.full_vote
    monkeypatch.setattr(bench.EE, "full_vote",
                        lambda *a, **k: (real(*a, **k) + 1) % classes)  # files vote otherwise
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.delenv("EDGEMPIR_EMULATED", raising=False)
    r = run_bench(b, BenchConfig(**FAST, memory=False))
    assert {"rejection-drift", "early-exit-mismatch"} <= _codes(r), r["warnings"]
    assert not any(s["decisions_identical"] for s in r["early_exit"]["sets"])
