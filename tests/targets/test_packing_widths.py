"""Packing of 1- and 3-bit weights: they go into the 2- and 4-bit containers
(``container_bits``) and keep their own narrower range. A 3-bit member unpacks to the very
int8 values its ONNX file held and computes exactly the same logits from the packed weights.
A 1-bit member cannot be exported at all (Brevitas' QCDQ export refuses binary quantizers):
a one-line ExportError says so; its values still round-trip through the 2-bit container."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgempir.targets.device import packing
from edgempir.targets.device.onnxruntime import make_session
from edgempir.targets.host.onnx_export import (
    ExportError,
    export_member,
    make_external,
    pack_weights,
)


@pytest.mark.parametrize("bits, container", [(1, 2), (2, 2), (3, 4), (4, 4), (5, None),
                                             (8, None), (None, None)])
def test_container_widths(bits, container):
    assert packing.container_bits(bits) == container


def _member(weight_bits: int, act_bits: int):
    from edgempir.members import MemberSpec
    from edgempir.models import build_model

    torch.manual_seed(weight_bits)
    model = build_model("mnist", MemberSpec(weight_bits, act_bits), (1, 28, 28), 10).train()
    with torch.no_grad():  # give the activation quantizers a runtime scale
        model(torch.rand(8, 1, 28, 28))
    return model.eval()


def test_one_bit_values_round_trip_through_the_two_bit_container():
    from edgempir.targets.host.pack import pack

    values = np.array([-1, 0, 0, -1, -1, 0, -1], np.int8)          # int1's whole range
    assert packing.value_range(1) == (-1, 0)
    data = pack(values, packing.container_bits(1))
    np.testing.assert_array_equal(packing.unpack(data, 2, len(values)), values)


def test_a_one_bit_member_is_a_one_line_export_error(tmp_path):
    with pytest.raises(ExportError) as e:
        export_member(_member(1, 2), tmp_path / "w1.onnx", (1, 28, 28))
    assert "does not support 1-bit" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("weight_bits, act_bits", [(3, 3), (3, 8)])
def test_three_bit_members_pack_and_compute_the_same(tmp_path, weight_bits, act_bits):
    path = tmp_path / "member.onnx"
    export_member(_member(weight_bits, act_bits), path, (1, 28, 28))
    proto = onnx.load(path)
    container = packing.container_bits(weight_bits)
    blob, rows = pack_weights(proto, container)
    assert len(rows) == 3 and all(r["bits"] == container for r in rows)   # three conv layers
    lo, hi = packing.value_range(weight_bits)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    unpacked = {}
    for r in rows:
        data = np.frombuffer(blob, np.uint8, r["nbytes"], r["offset"])
        values = packing.unpack(data, container, int(np.prod(r["shape"]))).reshape(r["shape"])
        np.testing.assert_array_equal(values, inits[r["name"]])
        assert lo <= values.min() and values.max() <= hi            # the member's own range
        assert r["nbytes"] == packing.packed_nbytes(values.size, container)
        unpacked[r["name"]] = values
    make_external(proto, rows, "member.packed")
    packed_path = tmp_path / "packed.onnx"
    onnx.save(proto, packed_path)
    assert packed_path.stat().st_size < path.stat().st_size / 2       # the weights left
    x = np.random.default_rng(0).random((16, 1, 28, 28)).astype(np.float32)
    want = make_session(path).run(None, {"input": x})[0]
    got = make_session(packed_path, external_initializers=unpacked).run(None, {"input": x})[0]
    np.testing.assert_array_equal(got, want)
