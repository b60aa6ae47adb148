"""Packed 2/4-bit weight storage: the bit layout, and bundles that store weights packed.

The packed bundle is the shared ``arm_bundle`` (ONNX Runtime targets pack by default); the
int8 bundle is the same run exported with ``weight_storage="int8"``, the storage before
packing. Both must compute exactly the same numbers.
"""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import testkit as H
from onnx import TensorProto

from edgempir.calib import read_set
from edgempir.errors import BundleError, EdgempirError
from edgempir.fsutil import sha256_file
from edgempir.targets.device import packing
from edgempir.targets.device.bundle import verify_bundle
from edgempir.targets.device.onnxruntime import make_session
from edgempir.targets.device.runtime import open_model
from edgempir.targets.host.onnx_export import INTEGER_OPS, inline_bytes, optimized_graph
from edgempir.targets.host.pack import pack


# ----------------------------------------------------------------- the bit layout
def test_layout_is_offset_binary_little_endian_within_a_byte():
    # 2 bits: -2..1 stored as 0..3, first value in the lowest bits
    assert pack(np.array([-2, -1, 0, 1], np.int8), 2).tolist() == [
        0b11_10_01_00]
    # an odd count: the last byte is padded with zero bits
    assert pack(np.array([1, -2, -1], np.int8), 2).tolist() == [0b01_00_11]
    # 4 bits: -8..7 stored as 0..15
    assert pack(np.array([-8, 7, 1], np.int8), 4).tolist() == [0xF0, 0x09]
    assert pack(np.zeros(0, np.int8), 4).size == 0


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 7, 8, 9, 63, 1001])
def test_pack_unpack_round_trip(bits, count):
    lo, hi = packing.value_range(bits)
    rng = np.random.default_rng(count * 10 + bits)
    v = rng.integers(lo, hi + 1, count).astype(np.int8)
    if count >= 2:
        v[0], v[-1] = lo, hi            # both extremes, negative included
    data = pack(v, bits)
    assert data.dtype == np.uint8 and data.size == packing.packed_nbytes(count, bits)
    assert data.size == math.ceil(count * bits / 8)
    back = packing.unpack(data, bits, count)
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, v)
    np.testing.assert_array_equal(packing.unpack(data.tobytes(), bits, count), v)


def test_pack_refuses_what_does_not_fit():
    with pytest.raises(packing.PackingError, match="do not fit 2 signed bits"):
        pack(np.array([0, 2], np.int8), 2)
    with pytest.raises(packing.PackingError, match="do not fit 4 signed bits"):
        pack(np.array([-9], np.int8), 4)
    with pytest.raises(packing.PackingError, match="packed widths"):
        pack(np.array([0], np.int8), 3)
    with pytest.raises(packing.PackingError, match="need 2 bytes, got 1"):
        packing.unpack(np.zeros(1, np.uint8), 2, 5)
    assert [packing.container_bits(b) for b in (1, 2, 3, 4, 5, 8, None)] == \
        [2, 2, 4, 4, None, None, None]


# ----------------------------------------------------------------- bundles
@pytest.fixture(scope="module")
def int8_bundle(evaluated_run, tmp_path_factory):
    from edgempir.targets.host.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "syn-arm-int8"
    export_bundle(evaluated_run, "arm", out, n_calib=64, progress=False, weight_storage="int8")
    return out




def test_packed_bundle_manifest_lists_and_hashes_the_packed_files(arm_bundle):
    b = verify_bundle(arm_bundle)
    m = b.manifest
    st = m["weight_storage"]
    assert st["format"] == "packed-int2-int4" and st["unpacked_at"] == "load"
    assert packing.check_storage(st, m["files"]) == []
    assert sorted(st["packed_files"]) == ["members/0-w2a4.packed.bin",
                                          "members/1-w4a4.packed.bin"]
    for rel, entry in st["packed_files"].items():
        assert m["files"][rel] == sha256_file(arm_bundle / rel)     # hashed like every file
        assert (arm_bundle / rel).stat().st_size == entry["bytes"]
        member = b.members[entry["member"]]
        assert {t["bits"] for t in entry["tensors"]} == {member["weight_bits"]}
        # the conv weights of the paper's net: three tensors, packed at the member's bits
        n = sum(math.prod(t["shape"]) for t in entry["tensors"])
        assert len(entry["tensors"]) == 3
        assert entry["bytes"] == sum(math.ceil(math.prod(t["shape"]) * t["bits"] / 8)
                                     for t in entry["tensors"])
        assert entry["bytes"] * 8 // member["weight_bits"] >= n
    assert st["graphs"]["ensemble.onnx"] == [
        {"file": "members/0-w2a4.packed.bin", "prefix": "m0/"},
        {"file": "members/1-w4a4.packed.bin", "prefix": "m1/"}]
    assert "members/2-fp32.onnx" not in st["graphs"]


def test_onnx_files_no_longer_hold_the_packed_weights(arm_bundle, int8_bundle):
    b, b8 = verify_bundle(arm_bundle), verify_bundle(int8_bundle)
    st = b.manifest["weight_storage"]
    for mem, mem8 in zip(b.members, b8.members):
        wb, wb8 = mem["weight_bytes"], mem8["weight_bytes"]
        proto = onnx.load(str(b.member_file(mem["index"])), load_external_data=False)
        external = {t.name: t for t in proto.graph.initializer
                    if t.data_location == TensorProto.EXTERNAL}
        if mem["spec"] == "fp32":
            assert not external and wb["storage"] == "float32" and wb == wb8
            continue
        rel = mem["file"][:-len(".onnx")] + ".packed.bin"
        rows = st["packed_files"][rel]["tensors"]
        assert sorted(external) == sorted(r["name"] for r in rows)
        for t in external.values():
            assert not t.raw_data and {e.key: e.value for e in t.external_data}["location"] \
                == rel.split("/")[-1]
        # stored = what stays in the ONNX file + the packed file; int8 = the old storage
        assert wb["storage"] == f"packed-int{mem['weight_bits']}"
        assert wb8["storage"] == "int8-initializers"
        assert wb["stored"] == inline_bytes(proto) + (arm_bundle / rel).stat().st_size
        assert wb["int8_initializers"] == wb8["stored"] == wb8["int8_initializers"]
        assert wb["true_bits"] < wb["stored"] < wb8["stored"]
        assert b.member_file(mem["index"]).stat().st_size < \
            b8.member_file(mem["index"]).stat().st_size - (wb8["stored"] - wb["stored"])
    # the ensemble graph references the same packed files instead of holding the weights
    ens = onnx.load(str(b.ensemble_file), load_external_data=False)
    n_ext = sum(t.data_location == TensorProto.EXTERNAL for t in ens.graph.initializer)
    assert n_ext == sum(len(e["tensors"]) for e in st["packed_files"].values())
    assert b8.manifest["weight_storage"]["format"] == "int8"
    fp = b.fp32_member
    ratio = sum(x["weight_bytes"]["stored"] for x in b.members) / \
        b.members[fp]["weight_bytes"]["stored"]
    ratio8 = sum(x["weight_bytes"]["stored"] for x in b8.members) / \
        b8.members[fp]["weight_bytes"]["stored"]
    assert ratio < 1.25 < ratio8     # w2 + w4 + fp32: 1.19 packed, 1.75 as int8


def test_packed_and_int8_bundles_give_identical_outputs(arm_bundle, int8_bundle):
    b, b8 = verify_bundle(arm_bundle), verify_bundle(int8_bundle)
    for which in ["ensemble", 0, 1, 2]:
        packed, plain = open_model(b, which, threads=1), open_model(b8, which, threads=1)
        assert packed.info()["packed_initializers"] == {"ensemble": 6, 0: 3, 1: 3, 2: 0}[which]
        assert plain.info()["packed_initializers"] == 0
        for name in ("clean", "adv-adaptive"):
            x = read_set(b.calib_file(name))["input"]
            ids, logits = packed.run(x)
            ids8, logits8 = plain.run(x)
            np.testing.assert_array_equal(ids, ids8)
            np.testing.assert_array_equal(logits, logits8)
    for name in ("clean", "adv-adaptive"):
        assert b.manifest["validation"][name] == b8.manifest["validation"][name]


def test_integer_kernels_with_external_initializers(arm_bundle):
    """ORT still fuses the packed (externally supplied) weights into QLinearConv."""
    b = verify_bundle(arm_bundle)
    for mem in b.members[:2]:
        path = b.member_file(mem["index"])
        # found through the bundle's manifest, unpacked, passed as external initializers
        ops = [n.op_type for n in optimized_graph(path, b.profile["onnxruntime"]).graph.node]
        assert sum(op in INTEGER_OPS for op in ops) == mem["layers"]["quantized"] == 3
        assert "Conv" not in ops and "FusedConv" not in ops
        assert mem["optimized_ops"]["QLinearConv"] == 3
        # without them the file is not loadable: the weights really left the ONNX file
        with pytest.raises(BundleError, match="cannot load"):
            make_session(path, external_initializers={})
    assert b.manifest["ensemble_optimized_ops"]["QLinearConv"] == 6


def test_materialize_gives_back_the_int8_graph(arm_bundle, int8_bundle):
    from onnx import numpy_helper

    from edgempir.targets.host.onnx_export import materialize

    b, b8 = verify_bundle(arm_bundle), verify_bundle(int8_bundle)
    st = b.manifest["weight_storage"]
    for rel in ("members/0-w2a4.onnx", "members/1-w4a4.onnx", "ensemble.onnx"):
        proto = onnx.load(str(arm_bundle / rel), load_external_data=False)
        materialize(proto, packing.external_initializers(arm_bundle, st, rel))
        ref = {t.name: numpy_helper.to_array(t) for t in
               onnx.load(str(int8_bundle / rel)).graph.initializer}
        got = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        assert got.keys() == ref.keys()
        for name, a in ref.items():
            assert got[name].dtype == a.dtype
            np.testing.assert_array_equal(got[name], a)
    assert b8.manifest["files"]["ensemble.onnx"] != b.manifest["files"]["ensemble.onnx"]


def test_tampered_packed_file_is_refused(arm_bundle, tmp_path):
    b = H.copy_tree(arm_bundle, tmp_path)
    p = b / "members" / "0-w2a4.packed.bin"
    data = bytearray(p.read_bytes())
    data[10] ^= 0x01                     # one weight changes by one level
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="members/0-w2a4.packed.bin does not match its sha256"):
        verify_bundle(b)


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["files"].pop("members/0-w2a4.packed.bin"),
     "members/0-w2a4.packed.bin is used but has no sha256"),
    (lambda m: m["weight_storage"]["packed_files"]["members/1-w4a4.packed.bin"]["tensors"][0]
     .update(nbytes=3), "nbytes 3 is not what shape"),
    (lambda m: m["weight_storage"].update(format="packed-int3"), "format 'packed-int3'"),
    (lambda m: m["weight_storage"]["graphs"]["ensemble.onnx"][0].update(file="x.bin"),
     "names a packed file the manifest does not describe"),
])
def test_inconsistent_storage_tables_are_refused(arm_bundle, tmp_path, edit, needle):
    b = H.copy_tree(arm_bundle, tmp_path)
    H.edit_manifest(b, edit)
    with pytest.raises(BundleError, match=needle) as e:
        verify_bundle(b)
    assert "\n" not in str(e.value)


def test_tensorrt_keeps_int8_storage(arm_bundle):
    from edgempir.targets.host.export import storage_choice
    from edgempir.targets.host.profiles import load_profile

    assert storage_choice(load_profile("jetson"), None) == "int8"
    assert storage_choice(load_profile("x86"), None) == "packed"
    assert storage_choice(load_profile("x86"), "int8") == "int8"
    with pytest.raises(EdgempirError, match="packed weight storage is for ONNX Runtime"):
        storage_choice(load_profile("jetson"), "packed")
    b = verify_bundle(arm_bundle)
    b.runtime = "tensorrt"               # as if a TensorRT bundle carried packed weights
    with pytest.raises(BundleError, match="stores packed weights, which TensorRT cannot"):
        open_model(b, "ensemble")


# ----------------------------------------------------------------- parallel member branches
def test_branch_streams_keep_each_member_on_one_stream():
    from edgempir.targets.device.onnxruntime import branch_streams

    nodes = ["m2/conv", "ReorderOutput", "m2/fc", "vote/unsqueeze_2", "m1/q", "Transpose",
             "m1/conv", "m0/q", "Transpose_token_1", "m0/conv", "vote/concat", "vote/decide"]
    assert branch_streams(nodes, 2, lead=2) == [
        ["m2/conv", "ReorderOutput", "m2/fc", "vote/unsqueeze_2", "vote/concat",
         "vote/decide"],
        ["m1/q", "Transpose", "m1/conv", "m0/q", "Transpose_token_1", "m0/conv"]]
    three = branch_streams(nodes, 3, lead=2)
    assert three[1] == ["m0/q", "Transpose_token_1", "m0/conv"]
    assert three[2] == ["m1/q", "Transpose", "m1/conv"]
    assert branch_streams(["Flatten", "MatMul"], 2) == [["Flatten", "MatMul"]]  # no members


def test_parallel_branches_give_identical_outputs_and_print_nothing(arm_bundle):
    """inter_op_threads > 1: the members run on their own streams (ORT_PARALLEL alone would
    keep one stream), with the same numbers as the sequential session, and ORT's planner
    output does not reach stdout (bench --json prints JSON only)."""
    import subprocess
    import sys

    code = f"""
import json, numpy as np
from edgempir.calib import read_set
from edgempir.targets.device.bundle import verify_bundle
from edgempir.targets.device.runtime import open_model
b = verify_bundle({str(arm_bundle)!r})
b.profile["onnxruntime"].update(intra_op_threads=1, inter_op_threads=2)
par = open_model(b, "ensemble")
member = open_model(b, 2)
b.profile["onnxruntime"].update(inter_op_threads=1)
seq = open_model(b, "ensemble")
x = read_set(b.calib_file("adv-adaptive"))["input"]
(i1, l1), (i2, l2) = par.run(x), seq.run(x)
ok = bool(np.array_equal(i1, i2) and np.array_equal(l1, l2, equal_nan=True))  # NaN: not run
print(json.dumps({{"ok": ok, "par": par.info(), "seq": seq.info(), "member": member.info()}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("\n") == 1, proc.stdout[:500]      # the JSON line, nothing else
    r = json.loads(proc.stdout)
    assert r["ok"]
    assert r["par"]["execution_mode"] == "parallel" and r["par"]["streams"] == 2
    assert r["seq"]["execution_mode"] == "sequential" and r["seq"]["streams"] == 1
    assert r["member"]["streams"] == 1          # one branch: nothing to split
