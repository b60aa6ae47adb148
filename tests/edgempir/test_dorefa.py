"""Preset paper's quantizers pinned against a numpy transcription of the EMPIR reference.

The transcription follows sancharisen/EMPIR ``cleverhans_tutorials/tutorial_models.py``
(``Conv2D_lowprecision``) line by line, in float32 as TensorFlow ran it:

    def quantize(x, k):   n = float(2**k - 1); return tf.round(x * n) / n
    def quantizeWt(x):    x = tf.tanh(x); x = x / tf.reduce_max(abs(x)) * 0.5 + 0.5
                          return 2 * quantize(x, wbits) - 1
    def quantizeAct(x):   x = tf.clip_by_value(x, 0, 1.0); return quantize(x, abits)

and fprop applies quantizeAct to the input of every low-precision conv (the image itself for
the first one). tf.round and numpy.round both round half to even.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from edgempir.members import parse_spec
from edgempir.models import build_model
from edgempir.models.dorefa import DoReFaActQuant, DoReFaWeightQuant


def np_quantize(x: np.ndarray, k: int) -> np.ndarray:
    n = np.float32(2 ** k - 1)
    return np.round(x * n) / n


def np_quantize_wt(x: np.ndarray, k: int) -> np.ndarray:
    x = np.tanh(x)
    x = x / np.max(np.abs(x)) * np.float32(0.5) + np.float32(0.5)
    return np.float32(2) * np_quantize(x, k) - np.float32(1)


def np_quantize_act(x: np.ndarray, k: int) -> np.ndarray:
    return np_quantize(np.clip(x, np.float32(0), np.float32(1.0)), k)


def _value(t):
    return getattr(t, "value", t)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_quantizer_is_quantizeWt(bits, seed):
    from brevitas.nn import QuantConv2d

    conv = QuantConv2d(8, 16, 3, bias=False, weight_quant=DoReFaWeightQuant,
                       weight_bit_width=bits)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(
            np.random.default_rng(seed).normal(0, 0.5, (16, 8, 3, 3)).astype(np.float32)))
    got = conv.quant_weight().value.detach().numpy()
    want = np_quantize_wt(conv.weight.detach().numpy(), bits)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype == np.float32
    # the grid: 2**bits levels in [-1, 1], no zero (2 bits: -1, -1/3, 1/3, 1)
    n = 2 ** bits - 1
    assert set(np.unique(np.rint(got * n)).astype(int)) <= set(range(-n, n + 1, 2))
    ints = conv.quant_weight().int().numpy()
    np.testing.assert_array_equal(ints, np.rint(want * n).astype(ints.dtype))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_activation_quantizer_is_quantizeAct(bits):
    from brevitas.nn import QuantIdentity

    q = QuantIdentity(act_quant=DoReFaActQuant, bit_width=bits, return_quant_tensor=True)
    rng = np.random.default_rng(bits)
    # values below 0, inside, exactly on grid points and half-way between them, above 1
    n = 2 ** bits - 1
    grid = np.arange(-2, 2 * n + 3, dtype=np.float32) / np.float32(2 * n)
    x = np.concatenate([rng.uniform(-0.5, 1.5, 4000).astype(np.float32), grid])
    got = _value(q(torch.from_numpy(x))).detach().numpy()
    np.testing.assert_array_equal(got, np_quantize_act(x, bits))
    # straight-through inside (0, 1), zero gradient where clipped (tf.clip_by_value)
    xt = torch.tensor([-0.2, 0.1, 0.45, 0.9, 1.3], requires_grad=True)
    _value(q(xt)).sum().backward()
    assert xt.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("spec", ["w2a4", "w4a2", "w2a2"])
def test_first_layer_cuts_the_input_to_the_activation_bits(spec):
    """conv1 of a paper member computes conv2d(quantizeAct(image), quantizeWt(kernel))."""
    s = parse_spec(spec)
    model = build_model("mnist", s, (1, 28, 28), 10, "dorefa").eval()
    x = np.random.default_rng(7).random((5, 1, 28, 28), dtype=np.float32)
    x[0, 0, 0, :5] = [0.0, 1.0, 0.5, 1 / 3, 2 / 30]   # edge and tie values
    cut = model.quant_input(torch.from_numpy(x))
    np.testing.assert_array_equal(_value(cut).numpy(), np_quantize_act(x, s.act_bits))
    assert len(np.unique(_value(cut).numpy())) <= 2 ** s.act_bits  # the image has k bits
    with torch.no_grad():
        got = _value(model.conv1(cut))
        want = F.conv2d(torch.from_numpy(np_quantize_act(x, s.act_bits)),
                        torch.from_numpy(np_quantize_wt(model.conv1.weight.numpy(),
                                                        s.weight_bits)),
                        stride=2, padding=3)
    assert torch.equal(got, want)


def test_features_entering_the_classifier_are_neither_quantized_nor_clipped():
    model = build_model("mnist", parse_spec("w2a4"), (1, 28, 28), 10, "dorefa").eval()
    seen = {}
    model.fc.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        model.conv3.weight.mul_(50)  # whatever the scale, tanh/max keeps the grid in [-1, 1]
        model(torch.rand(8, 1, 28, 28))
    feats = seen["x"]
    assert not hasattr(feats, "scale") and feats.max() > 1.0   # unclipped float features
    assert len(torch.unique(feats)) > 2 ** 4 + 1


def test_reference_cifar_net_shapes_and_full_precision_fc():
    from torch import nn

    model = build_model("cifar", parse_spec("w4a2"), (3, 32, 32), 10, "dorefa")
    assert type(model.fc1) is nn.Linear and model.fc1.in_features == 576  # 64 x 3 x 3 VALID
    assert type(model.fc2) is nn.Linear and model.fc1.out_features == 64
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    fp = build_model("cifar", parse_spec("fp32"), (3, 32, 32), 10, "dorefa")
    assert not any(type(m).__module__.startswith("brevitas") for m in fp.modules())


def test_unknown_family_and_arch_without_reference_version():
    from edgempir.errors import SpecError

    with pytest.raises(SpecError, match="quantizer family 'dorefa2'"):
        build_model("mnist", parse_spec("w2a4"), (1, 28, 28), 10, "dorefa2")
    with pytest.raises(SpecError, match="no reference"):
        build_model("resnet8", parse_spec("w2a4"), (3, 32, 32), 10, "dorefa")
