"""DoReFa quantizers as the EMPIR reference code ran them, inside Brevitas (preset ``paper``).

The reference (github sancharisen/EMPIR, ``cleverhans_tutorials/tutorial_models.py``,
``Conv2D_lowprecision.quantizeWt`` / ``quantizeAct`` / ``quantize``), with n = 2**k - 1:

- weights: ``t = tanh(w)``; ``u = t / max|t| * 0.5 + 0.5`` (one max per tensor);
  ``w_q = 2 * round(u * n) / n - 1``. 2 bits give {-1, -1/3, 1/3, 1}: four levels, no zero,
  no learned scale.
- activations: ``a_q = round(clip(a, 0, 1) * n) / n``.
- rounding is a straight-through estimator (``tf.custom_gradient`` with identity gradient);
  tanh, the max and the clip keep their own gradients, as in TensorFlow.
- every low-precision conv applies ``quantizeAct`` to its *input*: the first one cuts the
  image itself to the member's activation bits (:func:`input_quant`).

The forward values are computed exactly with the reference's arithmetic (``round(x * n) /
n``, not Brevitas' ``round(x / scale) * scale``, which differs in the last bit), so
``tests/edgempir/test_dorefa.py`` can pin them against a numpy transcription.

Export: the quantizers report constant grids to Brevitas, which is all QCDQ export needs.
Activations: unsigned k bits, scale 1/n, zero point 0. Weights: the integers ``2 * round(u *
n) - n`` are the odd numbers in [-n, n], i.e. a signed narrow-range grid of k + 1 bits with
scale 1/n (DoReFa's k-bit weight grid has no zero, so it does not fit k signed bits); the
per-tensor max normalisation happens before rounding, so after training it is folded into
the stored integers.
"""
from __future__ import annotations

import torch
from brevitas.inject import ExtendedInjector
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.proxy import ActQuantProxyFromInjector, WeightQuantProxyFromInjector
from torch import nn

QUANTIZER = "dorefa"


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward (the reference's ``_quantize`` custom gradient).

    torch.round and tf.round both round half to even.
    """
    return x + (torch.round(x) - x).detach()


def levels(bits: int) -> float:
    return float(2 ** int(bits) - 1)


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``quantizeWt``: tanh, divide by the tensor's max |tanh|, k bits on [0, 1], to [-1, 1]."""
    n = levels(bits)
    t = torch.tanh(w)
    u = t / t.abs().max() * 0.5 + 0.5
    return 2 * (round_ste(u * n) / n) - 1


def dorefa_act(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``quantizeAct``: clip to [0, 1], k bits."""
    n = levels(bits)
    return round_ste(torch.clamp(x, 0.0, 1.0) * n) / n


class _NoInputView(nn.Module):
    """Brevitas' proxies ask every tensor quantizer for ``int_quant.input_view_impl``."""

    def __init__(self):
        super().__init__()
        self.input_view_impl = nn.Identity()


class _ConstantGrid(nn.Module):
    """A tensor quantizer with a fixed grid: forward returns (value, scale, zero point,
    bit width), Brevitas' contract for ``tensor_quant``."""

    def __init__(self, bits: int, stored_bits: int):
        super().__init__()
        self.bits = int(bits)
        self.int_quant = _NoInputView()
        # not in the state dict: the grid follows from the spec, runs stay loadable
        self.register_buffer("scale", torch.tensor(1.0 / levels(bits)), persistent=False)
        self.register_buffer("zero_point", torch.tensor(0.0), persistent=False)
        self.register_buffer("bit_width", torch.tensor(float(stored_bits)), persistent=False)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        return self.quantize(x), self.scale, self.zero_point, self.bit_width


class DoReFaWeightGrid(_ConstantGrid):
    def __init__(self, bit_width: int):
        super().__init__(bit_width, int(bit_width) + 1)  # odd integers in [-n, n]

    def quantize(self, x):
        return dorefa_weight(x, self.bits)


class DoReFaActGrid(_ConstantGrid):
    def __init__(self, bit_width: int):
        super().__init__(bit_width, bit_width)

    def quantize(self, x):
        return dorefa_act(x, self.bits)


class DoReFaWeightQuant(ExtendedInjector):
    proxy_class = WeightQuantProxyFromInjector
    tensor_quant = DoReFaWeightGrid
    signed = True
    narrow_range = True
    float_to_int_impl_type = "round"


class DoReFaActQuant(ExtendedInjector):
    proxy_class = ActQuantProxyFromInjector
    tensor_quant = DoReFaActGrid
    signed = False
    narrow_range = False
    float_to_int_impl_type = "round"


# ------------------------------------------------------------------ layers (spec-aware)
def input_quant(spec) -> nn.Module:
    """The first low-precision conv's ``quantizeAct`` on the image: k activation bits."""
    if spec.is_float:
        return nn.Identity()
    return QuantIdentity(act_quant=DoReFaActQuant, bit_width=spec.act_bits,
                         return_quant_tensor=True)


def conv(spec, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> nn.Module:
    if spec.is_float:
        return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
    return QuantConv2d(cin, cout, k, stride=stride, padding=padding, bias=False,
                       weight_quant=DoReFaWeightQuant, weight_bit_width=spec.weight_bits)


def relu_then_quant(spec) -> nn.Module:
    """ReLU followed by the next conv's ``quantizeAct`` (clip to [0, 1], k bits)."""
    if spec.is_float:
        return nn.ReLU()
    return QuantReLU(act_quant=DoReFaActQuant, bit_width=spec.act_bits,
                     return_quant_tensor=True)


def requant(spec) -> nn.Module:
    """The next conv's ``quantizeAct`` on a float tensor (after an average pool)."""
    if spec.is_float:
        return nn.Identity()
    return QuantIdentity(act_quant=DoReFaActQuant, bit_width=spec.act_bits,
                         return_quant_tensor=True)


def linear(spec, cin: int, cout: int) -> nn.Module:
    """A hidden fully connected layer with DoReFa weights (AlexNet's fc1/fc2)."""
    if spec.is_float:
        return nn.Linear(cin, cout, bias=False)
    return QuantLinear(cin, cout, bias=False, weight_quant=DoReFaWeightQuant,
                       weight_bit_width=spec.weight_bits)
