"""verify_bundle's field checks at their boundaries (targets/device/bundle.py), on the tiny
bundle with one field changed (files and hashes untouched), and the Bundle accessors.
Written for the survivors of the mutation run of 2026-12-01 (docs/TESTING.md)."""
from __future__ import annotations

import hashlib
import json

import pytest
import testkit as H

from edgempir.errors import BundleError
from edgempir.targets.device.bundle import (
    check_onnx_size,
    hash_files,
    read_manifest,
    verify_bundle,
)

# the documented limits, written out: a test that imported the constants would move with them
MAX_INPUT_ELEMENTS = 1 << 24
MAX_MANIFEST_BYTES = 16 << 20
MAX_ONNX_BYTES = 256 << 20


def _with(bundle, edit):
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    H.write_raw_manifest(bundle, manifest)


REFUSED = {
    "one-class": (lambda m: m.update(num_classes=1, class_names=["c0"]), "num_classes"),
    "class-names-short": (H.set_field("class_names", [f"c{i}" for i in range(9)]), "class_names"),
    "class-name-not-text": (H.set_field("class_names.3", 3), "class_names"),
    "shape-2d": (H.set_field("input.shape", [28, 28]), "is not [C, H, W]"),
    "shape-4d": (H.set_field("input.shape", [1, 1, 28, 28]), "is not [C, H, W]"),
    "shape-zero": (H.set_field("input.shape", [1, 0, 28]), "is not [C, H, W]"),
    "shape-bool": (H.set_field("input.shape", [True, 28, 28]), "is not [C, H, W]"),
    "shape-one-too-many": (H.set_field("input.shape", [1, 1, MAX_INPUT_ELEMENTS + 1]), "elements"),
    "shape-twice-the-limit": (H.set_field("input.shape", [2, 2, MAX_INPUT_ELEMENTS // 2]), "elements"),
    "shape-one-and-a-half": (H.set_field("input.shape", [3, 1, MAX_INPUT_ELEMENTS // 2]), "elements"),
    "shape-negative": (H.set_field("input.shape", [1, -28, 28]), "is not [C, H, W]"),
    "digest-not-text": (lambda m: m["files"].update({next(iter(m["files"])): 123}), "sha256"),
    "no-members": (H.set_field("members", []), "no members"),
    "index-off": (H.set_field("members.1.index", 2), "members[1].index is not 1"),
    "bits-zero": (H.set_field("members.0.weight_bits", 0), "bit width"),
    "bits-too-many": (H.set_field("members.2.act_bits", 33), "bit width"),
    "weight-bytes-missing": (lambda m: m["members"][0]["weight_bytes"].pop("stored"),
                             "weight_bytes.'stored'"),
    "reference-negative": (H.set_field("reference_member", -1), "reference_member -1"),
    "reference-past-the-end": (H.set_field("reference_member", 3), "reference_member 3"),
    "reference-far-past": (H.set_field("reference_member", 4), "reference_member 4"),
    "index-below": (H.set_field("members.2.index", 1), "members[2].index is not 2"),
    "schema-other": (H.set_field("schema", "edgempir.bundlf"), "not an edgempir bundle manifest"),
    "schema-before": (H.set_field("schema", "edgempir.bundld"), "not an edgempir bundle manifest"),
    "version-older": (H.set_field("schema_version", 0), "schema version 0"),
    "version-newer": (H.set_field("schema_version", 2), "schema version 2"),
    "fp32-bool": (H.set_field("fp32_member", True), "fp32_member"),
    "fp32-negative": (H.set_field("fp32_member", -1), "fp32_member"),
    "fp32-past-the-end": (H.set_field("fp32_member", 3), "fp32_member"),
    "fp32-far-past": (H.set_field("fp32_member", 4), "fp32_member"),
    "class-names-long": (H.set_field("class_names", [f"c{i}" for i in range(11)]), "class_names"),
    "fp32-text": (H.set_field("fp32_member", "2"), "fp32_member"),
    "accuracy-above-one": (H.set_field("host_accuracy.clean", 1.01), "host_accuracy.clean"),
    "accuracy-negative": (H.set_field("host_accuracy.clean", -0.01), "host_accuracy.clean"),
    "accuracy-bool": (H.set_field("host_accuracy.clean", True), "host_accuracy.clean"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_field_past_its_boundary_is_refused(tiny_copy, case):
    edit, needle = REFUSED[case]
    _with(tiny_copy, edit)
    with pytest.raises(BundleError) as info:
        verify_bundle(tiny_copy)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("edit", [
    H.set_field("input.shape", [1, 1, MAX_INPUT_ELEMENTS // 28 // 28 * 28 * 28]),  # within the limit
    H.set_field("host_accuracy.clean", 0), H.set_field("host_accuracy.clean", 1),
    H.set_field("host_accuracy.adv-adaptive", None), H.set_field("fp32_member", None), H.set_field("num_classes", 10),
    H.set_field("fp32_member", 0), H.set_field("input.shape", [2, 1, MAX_INPUT_ELEMENTS // 2]),
    lambda m: m.update(num_classes=2, class_names=["a", "b"]),
], ids=["shape-at-limit", "accuracy-0", "accuracy-1", "accuracy-none", "no-fp32", "classes",
        "fp32-first", "shape-exactly-the-limit", "two-classes"])
def test_values_at_the_boundary_pass(tiny_copy, edit):
    _with(tiny_copy, edit)
    verify_bundle(tiny_copy)


def test_members_and_sets_by_index_and_name(tiny_copy):
    b = verify_bundle(tiny_copy)
    assert b.member_file(0) == tiny_copy / "members" / "0-w2a4.onnx"
    assert b.member_file(2).is_file()
    for bad in (-1, 3, "0", 1.0):
        with pytest.raises(BundleError, match=r"has members 0\.\.2, not"):
            b.member_file(bad)
    assert b.calib_file("clean") == tiny_copy / "calib" / "clean.npz"
    with pytest.raises(BundleError, match="no calibration set 'train'; it has adv-adaptive, "
                                          "calibration, clean"):
        b.calib_file("train")


def test_the_manifest_size_limit_is_exact(tiny_copy):
    text = (tiny_copy / "manifest.json").read_text()
    (tiny_copy / "manifest.json").write_text(text + " " * (MAX_MANIFEST_BYTES - len(text)))
    assert read_manifest(tiny_copy)["schema"] == "edgempir.bundle"   # exactly the limit
    with open(tiny_copy / "manifest.json", "a") as f:
        f.write(" ")
    with pytest.raises(BundleError):
        read_manifest(tiny_copy)


def test_the_onnx_size_limit_is_exact(tmp_path):
    onnx = tmp_path / "m.onnx"
    with open(onnx, "wb") as f:  # sparse: nothing is written but the size
        f.truncate(MAX_ONNX_BYTES)
    check_onnx_size(tmp_path, "m.onnx", onnx)
    with open(onnx, "r+b") as f:
        f.truncate(MAX_ONNX_BYTES + 1)
    with pytest.raises(BundleError, match=f"{MAX_ONNX_BYTES + 1} bytes, more than the "
                                          f"{MAX_ONNX_BYTES}"):
        check_onnx_size(tmp_path, "m.onnx", onnx)


def test_an_oversized_onnx_file_is_refused_by_its_size_before_it_is_hashed(tiny_copy):
    """Any listed .onnx file, not only the graphs the manifest names: its size is checked
    before its sha256 (a wrong digest here is never reached)."""
    with open(tiny_copy / "extra.onnx", "wb") as f:  # sparse: nothing is written but the size
        f.truncate(MAX_ONNX_BYTES + 1)
    _with(tiny_copy, lambda m: m["files"].update({"extra.onnx": "0" * 64}))
    with pytest.raises(BundleError, match=f"extra.onnx is {MAX_ONNX_BYTES + 1} bytes, more "
                                          f"than the {MAX_ONNX_BYTES}"):
        verify_bundle(tiny_copy)


def test_hash_files_leaves_out_only_the_top_level_manifest_and_engines(tmp_path):
    """What export lists: everything but manifest.json and engines/ at the top (engine
    files are built on the device); the same names deeper down are ordinary files, and the
    walk goes on past both."""
    files = {"manifest.json": b"{}", "engines/ensemble.engine": b"e", "b.onnx": b"o",
             "x.npz": b"x", "a/manifest.json": b"m", "a/engines/k": b"k", "z/y": b"y"}
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    got = hash_files(tmp_path)
    assert list(got) == ["a/engines/k", "a/manifest.json", "b.onnx", "x.npz", "z/y"]
    assert got["z/y"] == hashlib.sha256(b"y").hexdigest()
