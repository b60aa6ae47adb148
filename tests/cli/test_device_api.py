"""The device Python API (edgempir.targets.device.load_bundle), as a service embeds it."""
from __future__ import annotations

import numpy as np
import pytest

from edgempir.calib import read_set
from edgempir.errors import BundleError, InputError
from edgempir.targets.device import load_bundle
from edgempir.targets.device.runtime import open_model


def test_predict_is_the_engine_bench_measures(bundle):
    ens = load_bundle(bundle)
    s = read_set(ens.bundle.calib_file("clean"))
    x = s["input"][:20]  # fewer rows than the set holds: a cut the API must keep
    ids, logits = open_model(ens.bundle, "ensemble").run(x)
    np.testing.assert_array_equal(ens.predict(x), ids)
    np.testing.assert_array_equal(ens.member_logits(x), logits)
    out = ens.run(x)
    assert {"class_ids", "member_logits", "accepted"} <= set(out)
    assert ens.accepted(x).dtype == bool and ens.accepted(x).shape == (20,)
    assert [s.name for s in ens.specs] == [m["spec"] for m in ens.bundle.members]
    # one image without the batch axis is one row
    np.testing.assert_array_equal(ens.predict(x[0]), ids[:1])


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3, 28, 28), np.float32), "does not fit this bundle"),
    (np.full((1, 1, 28, 28), np.nan, np.float32), "NaN or infinite"),
    (np.array([["a"]]), "does not fit"),
])
def test_bad_input_is_one_line(bundle, bad, message):
    ens = load_bundle(bundle)
    with pytest.raises(InputError, match=message) as e:
        ens.predict(bad)
    assert "\n" not in str(e.value)


def test_a_tampered_bundle_is_refused_before_loading(tiny_copy):
    member = next((tiny_copy / "members").glob("*.onnx"))
    member.write_bytes(member.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tiny_copy)
