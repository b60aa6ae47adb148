"""The quantizers of preset ``edge`` (the default), in one place (Brevitas).

Preset ``paper`` uses the EMPIR reference's DoReFa quantizers instead (models/dorefa.py).
Choices, and why:
- The input is quantized by the first layer with a constant 8-bit
  unsigned quantizer of range [0, 1]: scale 1/255, so 8-bit camera images pass exactly and
  ONNX Runtime sees a uint8 QuantizeLinear it can fuse into QLinearConv.
- Weights: signed, narrow range, per output channel, scale learned from its max-abs
  initialisation (PARAMETER_FROM_STATS). Per-channel learned scales keep 2-bit (ternary)
  members trainable; QLinearConv and TensorRT both take per-channel weight scales.
- Activations: QuantReLU, unsigned k bits, scale learned from runtime statistics, and
  ``return_quant_tensor=True`` so the next layer sees a quantized tensor and the QCDQ export
  puts QuantizeLinear -> Clip -> DequantizeLinear right before each integer conv.
- The last fully connected layer stays full precision (paper).
"""
from __future__ import annotations

from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant.scaled_int import Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
from torch import nn

from edgempir.members import MemberSpec
from edgempir.models.fused_quant import FusedIntQuant


class InputQuant(Uint8ActPerTensorFloat):
    scaling_impl_type = ScalingImplType.CONST
    max_val = 1.0
    bit_width = 8


class WeightQuant(Int8WeightPerChannelFloat):
    scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS
    int_quant = FusedIntQuant  # training computes with fused kernels: models/fused_quant.py


class ActQuant(Uint8ActPerTensorFloat):
    # Brevitas collects 300 batches of statistics before the scale becomes a parameter by
    # default. 30 is enough for a percentile estimate, and a checkpoint taken after the
    # first epoch then always holds the learned parameter, so resuming is exact.
    collect_stats_steps = 30
    int_quant = FusedIntQuant


def input_quant(spec: MemberSpec) -> nn.Module:
    if spec.is_float:
        return nn.Identity()
    return QuantIdentity(act_quant=InputQuant, return_quant_tensor=True)


def conv(spec: MemberSpec, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0
         ) -> nn.Module:
    if spec.is_float:
        return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
    return QuantConv2d(cin, cout, k, stride=stride, padding=padding, bias=False,
                       weight_quant=WeightQuant, weight_bit_width=spec.weight_bits)


def linear(spec: MemberSpec, cin: int, cout: int) -> nn.Module:
    """A hidden (quantized) fully connected layer."""
    if spec.is_float:
        return nn.Linear(cin, cout, bias=False)
    return QuantLinear(cin, cout, bias=False, weight_quant=WeightQuant,
                       weight_bit_width=spec.weight_bits)


def relu(spec: MemberSpec, *, quant_out: bool = True) -> nn.Module:
    """ReLU; for a quantized member a k-bit QuantReLU.

    ``quant_out=False`` before the full-precision classifier: the value is still quantized
    but handed on as a float tensor.
    """
    if spec.is_float:
        return nn.ReLU()
    return QuantReLU(act_quant=ActQuant, bit_width=spec.act_bits, return_quant_tensor=quant_out)


def requant(spec: MemberSpec) -> nn.Module:
    """Re-quantize after an op that leaves the grid (average pooling, residual add)."""
    if spec.is_float:
        return nn.Identity()
    return QuantIdentity(act_quant=ActQuant, bit_width=spec.act_bits, return_quant_tensor=True)


def value(x):
    """The float value of a tensor or Brevitas QuantTensor."""
    return getattr(x, "value", x)
