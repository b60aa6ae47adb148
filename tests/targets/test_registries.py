"""The registries that replace if/elif on names: graph passes and rule sets (host), runtimes
(device), export's stages, and the one reader of eval's report. Each test changes a
registry and watches every reader follow it, so a second list of names cannot creep back."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from edgempir.errors import BundleError, RunDirError
from edgempir.targets.device import runtime as R
from edgempir.targets.device.profile import ProfileError
from edgempir.targets.host import passes as P
from edgempir.targets.host.onnx_export import ExportError
from edgempir.targets.host.profiles import load_profile

PROFILE = """
name = "board"
runtime = "onnxruntime"
[export]
passes = ["{p}"]
graph_rules = ["{r}"]
"""


def _profile(tmp_path, p: str, r: str):
    f = tmp_path / "board.toml"
    f.write_text(PROFILE.format(p=p, r=r))
    return f


def test_profile_accepts_exactly_the_registered_passes_and_rules(tmp_path, monkeypatch):
    with pytest.raises(ProfileError, match="export.passes .* from: tensorrt-qdq"):
        load_profile(_profile(tmp_path, "fold", "tensorrt"))
    with pytest.raises(ProfileError, match="export.graph_rules .* from: tensorrt"):
        load_profile(_profile(tmp_path, "tensorrt-qdq", "strict"))
    monkeypatch.setitem(P.PASSES, "fold", lambda proto, what: (proto, {"pass": "fold"}))
    monkeypatch.setitem(P.RULES, "strict", lambda proto, what: None)
    p = load_profile(_profile(tmp_path, "fold", "strict"))
    assert p["export"]["passes"] == ["fold"] and p["export"]["graph_rules"] == ["strict"]


def test_export_applies_what_the_registry_holds(monkeypatch):
    seen = []
    monkeypatch.setitem(P.PASSES, "tag", lambda proto, what: (proto + [what], {"pass": "tag"}))
    monkeypatch.setitem(P.RULES, "seen", lambda proto, what: seen.append((proto, what)))
    proto, reports = P.apply_passes([], ["tag", "tag"], "member 0")
    assert proto == ["member 0", "member 0"] and reports == [{"pass": "tag"}] * 2
    P.check_graph_rules(proto, ["seen"], "member 0")
    assert seen == [(proto, "member 0")]
    with pytest.raises(ExportError, match="unknown graph pass 'nope'"):
        P.apply_passes([], ["nope"], "member 0")


def test_runtime_names_come_from_the_registry():
    from edgempir.targets.device import bundle as B
    from edgempir.targets.device import profile

    assert B.RUNTIMES == tuple(R.RUNTIMES) == ("onnxruntime", "tensorrt")
    check, what, _ = profile.SCHEMA[None]["runtime"]
    assert all(check(name) for name in R.RUNTIMES) and not check("tflite")
    assert "onnxruntime, tensorrt" in what


def test_installed_check_and_storage_follow_the_registry(monkeypatch):
    from edgempir.targets.host.export import storage_choice

    bundle = SimpleNamespace(runtime="onnxruntime", path="b", target="x86")
    R.check_runtime_present(bundle)  # onnxruntime is installed here
    monkeypatch.setitem(R.RUNTIMES, "onnxruntime",
                        replace(R.RUNTIMES["onnxruntime"], package="no_such_runtime_xyz",
                                packed_weights=False))
    with pytest.raises(BundleError, match="b needs ONNX Runtime, which is not installed"):
        R.check_runtime_present(bundle)
    assert storage_choice({"runtime": "onnxruntime", "name": "x86"}, None) == "int8"
    with pytest.raises(BundleError, match="names runtime 'tflite'"):
        R.runtime_of(SimpleNamespace(runtime="tflite", path="b", target="t"))


def test_export_stages_in_order():
    from edgempir.targets.host.export import STAGES

    assert [name for name, _ in STAGES] == ["sets", "export members", "passes", "rules",
                                            "merge", "pack", "kernels", "validate", "write"]


def _report(path, protocol="adaptive", config="quick", **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": "edgempir.eval", "protocol": protocol,
                                "config": config, "eps": [0.1], "n_examples": 8, "seed": 0,
                                "results": [{"eps": 0.1, "clean": 0.9, "worst_case": 0.2,
                                             "per_attack": {}}, "junk"],
                                "worst_case_over": ["pgd"], **extra}))
    return path


def test_eval_report_reader(tmp_path):
    from edgempir.rundir import read_eval_report

    assert read_eval_report(tmp_path, "adaptive") is None
    old = _report(tmp_path / "eval" / "adaptive-quick.json")
    new = _report(tmp_path / "eval" / "adaptive-full.json", config="full", norm="L2")
    os.utime(old, (1, 1))
    _report(tmp_path / "eval" / "paper-quick.json", protocol="paper")
    path, summary = read_eval_report(tmp_path, "adaptive")        # the newest one
    assert path == new and summary["config"] == "full" and summary["norm"] == "L2"
    path, summary = read_eval_report(tmp_path, "adaptive", "quick")
    assert path == old and summary["norm"] == "Linf"               # eval's default norm
    assert summary["results"] == [{"eps": 0.1, "clean": 0.9, "worst_case": 0.2}]
    assert summary["worst_case_over"] == ["pgd"] and summary["n_examples"] == 8
    assert read_eval_report(tmp_path, "paper", "quick")[1]["protocol"] == "paper"
    (tmp_path / "eval" / "adaptive-bad.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(RunDirError, match="is not an edgempir eval report"):
        read_eval_report(tmp_path, "adaptive", "bad")


def test_find_eval_is_provenance_from_the_reader(tmp_path):
    from edgempir.targets.host.export import find_eval

    _report(tmp_path / "eval" / "adaptive-quick.json")
    (tmp_path / "eval" / "adv-adaptive.npz").write_bytes(b"x")
    info = find_eval(tmp_path, {"config": np.array("quick"), "eps": np.array([0.1])})
    assert info["report_file"] == "eval/adaptive-quick.json" and info["adv_eps"] == 0.1
    assert info["report"] == {"results": [{"eps": 0.1, "clean": 0.9, "worst_case": 0.2}],
                              "worst_case_over": ["pgd"]}
    with pytest.raises(RunDirError, match="no adaptive eval report"):
        find_eval(tmp_path, {"config": np.array("full")})
