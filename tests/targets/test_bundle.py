"""Bundles: what export writes, what verify_bundle accepts, and what it refuses."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import testkit as H

from edgempir.calib import read_set
from edgempir.errors import BundleError
from edgempir.fsutil import sha256_file
from edgempir.targets.device.bundle import verify_bundle
from edgempir.targets.device.runtime import open_model
from edgempir.targets.host.onnx_export import ExportError
from edgempir.targets.host.tensorrt_rules import check_rules


def test_arm_bundle_layout_and_manifest(arm_bundle, evaluated_run):
    b = verify_bundle(arm_bundle)
    m = b.manifest
    assert b.target == "arm" and b.runtime == "onnxruntime" and b.input_name == "input"
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10 == len(b.class_names)
    assert [x["spec"] for x in b.members] == ["w2a4", "w4a4", "fp32"]
    assert b.reference_member == 2 and b.fp32_member == 2
    assert m["profile"]["name"] == "arm" and m["profile"]["runtime"] == "onnxruntime"
    # every file but the manifest is hashed, and the hashes are right
    on_disk = sorted(p.relative_to(arm_bundle).as_posix() for p in arm_bundle.rglob("*")
                     if p.is_file() and p.name != "manifest.json")
    assert sorted(m["files"]) == on_disk
    assert all(sha256_file(arm_bundle / f) == h for f, h in m["files"].items())
    for name in ("calibration", "clean", "adv-adaptive"):
        s = read_set(b.calib_file(name), b.input_shape, b.num_classes)
        assert len(s["label"]) == m["calib"][name]["n"] > 0
    clean, adv = read_set(b.calib_file("clean")), read_set(b.calib_file("adv-adaptive"))
    np.testing.assert_array_equal(clean["index"], adv["index"])  # same test images
    np.testing.assert_array_equal(clean["label"], adv["label"])
    assert b.eval_info["protocol"] == "adaptive" and b.eval_info["norm"] == "Linf"
    # weight bytes: true bits < stored (packed 2/4-bit, tests/targets/test_packing.py)
    # < int8 containers < float32 for the low-bit members
    for mem in b.members[:2]:
        wb = mem["weight_bytes"]
        assert wb["true_bits"] < wb["stored"] < wb["int8_initializers"] < wb["float32"]
        assert wb["storage"] == f"packed-int{mem['weight_bits']}"
        packed = arm_bundle / mem["file"].replace(".onnx", ".packed.bin")
        assert wb["stored"] == packed.stat().st_size + sum(
            onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(
                b.member_file(mem["index"]), load_external_data=False).graph.initializer
            if t.data_location != onnx.TensorProto.EXTERNAL)
    w2, w4 = b.members[0]["weight_bytes"], b.members[1]["weight_bytes"]
    assert w4["true_bits"] - w2["true_bits"] == w2["quantized_parameters"] * 2 // 8
    assert b.members[2]["weight_bytes"]["true_bits"] == b.members[2]["weight_bytes"]["float32"]
    v = m["validation"]
    for s in ("clean", "adv-adaptive"):
        for rep in (v[s]["member_files"], v[s]["ensemble_graph"]):
            assert rep["ensemble"]["agreement"] >= 0.995
            assert all(x["agreement"] >= 0.995 for x in rep["members"])
        assert v[s]["graph_vote_matches_numpy"]


def test_bundle_runs_and_reproduces_host_accuracy(arm_bundle):
    b = verify_bundle(arm_bundle)
    model = open_model(b, "ensemble", threads=1)
    for name in ("clean", "adv-adaptive"):
        s = read_set(b.calib_file(name))
        ids, logits = model.run(s["input"])
        assert logits.shape == (3, len(ids), 10)
        assert abs((ids == s["label"]).mean() - b.host_accuracy[name]) <= 0.005
    ids, logits = open_model(b, 0).run(s["input"][:5])
    assert ids.shape == (5,) and logits.shape == (5, 10)
    info = model.info()
    assert info["runtime"] == "onnxruntime" and info["providers"] == ["CPUExecutionProvider"]


def test_tampered_file_is_refused(arm_bundle, tmp_path):
    b = H.copy_tree(arm_bundle, tmp_path)
    with open(b / "members" / "0-w2a4.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="members/0-w2a4.onnx does not match its sha256"):
        verify_bundle(b)


@pytest.mark.parametrize("bad", ["../outside.onnx", "/etc/passwd", "members/../../x.onnx",
                                 "members\\0.onnx"])
def test_paths_outside_the_bundle_are_refused(arm_bundle, tmp_path, bad):
    b = H.copy_tree(arm_bundle, tmp_path)
    H.edit_manifest(b, lambda m: m["files"].__setitem__(bad, "0" * 64))
    with pytest.raises(BundleError, match="outside the bundle|plain relative path"):
        verify_bundle(b)


def test_symlink_out_of_the_bundle_is_refused(arm_bundle, tmp_path):
    b = H.copy_tree(arm_bundle, tmp_path)
    target = b / "members" / "0-w2a4.onnx"
    outside = tmp_path / "outside.onnx"
    shutil.move(target, outside)
    target.symlink_to(outside)
    with pytest.raises(BundleError, match="symlink"):
        verify_bundle(b)


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.update(schema_version=99), "schema version 99"),
    (lambda m: m.update(schema="something.else"), "not an edgempir bundle manifest"),
    (lambda m: m.update(num_classes="10"), "num_classes"),
    (lambda m: m["members"][0].update(weight_bits=True), "weight_bits"),
    (lambda m: m["files"].pop("ensemble.onnx"), "ensemble.onnx is used but has no sha256"),
    (lambda m: m.update(runtime="tflite"), "runtime 'tflite' is unknown"),
])
def test_bad_manifests_are_refused(arm_bundle, tmp_path, edit, needle):
    b = H.copy_tree(arm_bundle, tmp_path)
    H.edit_manifest(b, edit)
    with pytest.raises(BundleError, match=needle) as e:
        verify_bundle(b)
    assert "\n" not in str(e.value)


def test_missing_file_and_missing_bundle(arm_bundle, tmp_path):
    b = H.copy_tree(arm_bundle, tmp_path)
    (b / "calib" / "clean.npz").unlink()
    with pytest.raises(BundleError, match="calib/clean.npz is missing"):
        verify_bundle(b)
    with pytest.raises(BundleError, match="does not exist"):
        verify_bundle(tmp_path / "nope")


def test_jetson_bundle_meets_tensorrt_rules(jetson_bundle):
    b = verify_bundle(jetson_bundle)
    assert b.runtime == "tensorrt" and b.profile["tensorrt"]["versions"] == [10, 11]
    for path in [b.ensemble_file] + [b.member_file(i) for i in range(len(b.members))]:
        assert check_rules(onnx.load(path)) == [], path.name
    assert b.manifest["validation"]["clean"]["ensemble_graph"]["ensemble"]["agreement"] >= 0.995
    passes = b.members[0]["passes"][0]
    assert passes["pass"] == "tensorrt-qdq" and passes["retyped_int8"] == 3
    assert passes["rule_violations_before"] > 0 == passes["rule_violations_after"]  # needed
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BundleError, match="targets TensorRT, which is not installed here"):
            open_model(b)
    else:  # TensorRT here: the bundle is accepted for it (the engine: test_tensorrt_engine_*)
        from edgempir.targets.device.bench import check_runtime_present

        check_runtime_present(b)


@pytest.mark.gpu
def test_tensorrt_engine_builds_and_matches_host(jetson_bundle):
    pytest.importorskip("tensorrt", reason="needs TensorRT 10/11 and an NVIDIA GPU (Jetson)")
    from edgempir.targets.device import tensorrt as T

    b = verify_bundle(jetson_bundle)
    plans = T.build_all(b)
    assert all(p.is_file() for p in plans)
    assert T.build_engine(b, b.ensemble_file) == plans[0]  # cached while TRT and GPU match
    model = open_model(b)
    s = read_set(b.calib_file("clean"))
    ids, _ = model.run(s["input"])
    assert abs((ids == s["label"]).mean() - b.host_accuracy["clean"]) <= 0.005


def test_perturbed_model_is_rejected(evaluated_run, tmp_path):
    """Validation is real: a model that no longer matches its export fails, nothing written."""
    import torch

    from edgempir.targets.host.export import export_bundle

    def perturb(ens):
        with torch.no_grad():
            for m in ens.members:
                m.fc.weight.mul_(-1.0)  # every member now votes differently

    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match="validation failed.*agrees with PyTorch on") as e:
        export_bundle(evaluated_run, "x86", out, n_calib=16, progress=False, perturb=perturb)
    assert "\n" not in str(e.value)
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no OUT.tmp-<pid> left behind


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edgempir.cli", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_build_command_without_tensorrt(jetson_bundle, arm_bundle):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; this checks the message where it is absent")
    except ImportError:
        pass
    proc = _cli("build", str(jetson_bundle))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "which is not installed here" in proc.stderr
    proc = _cli("build", str(arm_bundle))
    assert proc.returncode == 2 and "only TensorRT bundles have engines" in proc.stderr


def test_device_modules_import_no_host_libraries():
    """bundle, runtime, the runtimes and build run on the device: no torch, onnx or brevitas."""
    code = ("import sys; import edgempir.targets.device.bundle, edgempir.targets.device.runtime, "
            "edgempir.targets.device.onnxruntime, edgempir.targets.device.tensorrt, edgempir.cli.build_cmd; "
            "bad = [m for m in ('torch', 'onnx', 'brevitas', 'tomllib') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
