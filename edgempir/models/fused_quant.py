"""Brevitas integer quantization computed by PyTorch's fused fake-quant kernels (issue 19).

Brevitas builds every quantizer from small modules; the one that turns a float tensor into
its quantized value is ``IntQuant`` (``y = clamp(round_ste(x / s) + z, qmin, qmax) - z) * s``).
In Python that is ~8 elementwise ops forward (div, add, round, two ``where`` clamps, sub,
mul) and about as many autograd nodes backward, each a full pass over the activation: on the
paper's MNIST net a w2a4 training step cost ~2x the fp32 step. :class:`FusedIntQuant` is a
drop-in ``IntQuant`` (a subclass, injected through the quantizer's ``int_quant`` attribute)
whose training forward is ONE fused kernel and whose backward is ONE fused kernel:

- learned scale (weights, activations): ``torch._fake_quantize_learnable_per_tensor_affine``
  / ``..._per_channel_affine`` with ``grad_factor=1``;
- a scale without gradient (forward passes under ``torch.no_grad()`` in training mode, as
  adversarial training's clean pass): ``torch.fake_quantize_per_tensor_affine``.

It is injected into WeightQuant and ActQuant (edgempir/models/quant.py), not InputQuant: the
8-bit input is small next to the activations, and adversarial training puts pixels on exact
rounding ties of its 1/255 grid (x0 +- eps, docs/BUNDLE.md), where the reciprocal below
could round the other way.

Everything else stays Brevitas: the scale still comes from Brevitas' scaling modules (stats
collection, the learned parameter, ``abs``/clamp restrictions, the division by the integer
threshold), the proxies still return QuantTensors, and export is untouched (the QCDQ handlers
read scale / zero point / bit width from the proxies, not from ``IntQuant``).

Gradients (the same as Brevitas', not LSQ's): with ``q = round(x / s)`` the fused backward
passes ``dL/dy`` to ``x`` where ``qmin <= q <= qmax`` and 0 elsewhere (Brevitas' ``TensorClamp``
clamps without a straight-through estimator), and gives the scale
``sum(dL/dy * (q - x / s))`` in range and ``sum(dL/dy * q_clamped)`` out of range. That is
what autograd derives from Brevitas' ``clamp(round_ste(x / s)) * s``, and it is also the LSQ
formula; LSQ additionally multiplies the scale gradient by ``1 / sqrt(numel * qmax)``. We pass
``grad_factor=1`` (no LSQ scaling) so that training follows today's gradients and accuracy
and schedules stay comparable; tests/edgempir/test_fused_quant.py pins both gradients.

Forward values: the fused kernels multiply by ``1 / s`` where Brevitas divides by ``s``; the
two differ by at most one float ulp, which changes the rounded value only when ``x / s`` lies
within an ulp of a .5 tie (about 1 in 10^7 random values, measured; more often for
averages of grid values, as after the CIFAR net's average pooling, where exact ties occur:
the tie may then go to the other neighbour, test_fused_quant.py). So the fused path is
used in training mode only; in eval mode (evaluation, attacks on a trained member, export's
reference outputs) :class:`FusedIntQuant` runs Brevitas' own code and stays bit-exact with
ONNX Runtime's QuantizeLinear, which also divides.
"""
from __future__ import annotations

import torch
from brevitas.core.function_wrapper import Identity, RoundSte, TensorClamp
from brevitas.core.quant import IntQuant
from torch import Tensor, nn


class FusedIntQuant(IntQuant):
    """``IntQuant`` whose training forward/backward are PyTorch's fused fake-quant kernels.

    Needs what our quantizers have: zero point 0, identity input view, round-to-nearest-even,
    clamping without STE, no quantization delay. Anything else falls back to Brevitas.
    """

    def __init__(self, narrow_range: bool, signed: bool, input_view_impl: nn.Module,
                 float_to_int_impl: nn.Module | None = None,
                 tensor_clamp_impl: nn.Module | None = None, quant_delay_steps: int = 0):
        # IntQuant's own defaults (the injector passes both for our quantizers).
        float_to_int_impl = float_to_int_impl or RoundSte()
        tensor_clamp_impl = tensor_clamp_impl or TensorClamp()
        super().__init__(narrow_range, signed, input_view_impl, float_to_int_impl,
                         tensor_clamp_impl, quant_delay_steps)
        # The fused kernels implement exactly this configuration (zero point: see forward).
        self.fusable = (type(float_to_int_impl) is RoundSte
                        and type(tensor_clamp_impl) is TensorClamp
                        and type(input_view_impl) is Identity and quant_delay_steps == 0)
        self.use_fused = True  # set_fused_quant(model, False) restores Brevitas' code path

    def forward(self, scale: Tensor, zero_point: Tensor, bit_width: Tensor, x: Tensor) -> Tensor:
        # The kernels take no zero point: our quantizers are symmetric (ZeroZeroPoint), and a
        # nonzero one is sent to Brevitas' code rather than silently dropped.
        if (not self.training or not (self.fusable and self.use_fused) or x.dtype != torch.float32
                or bool(zero_point.any())):
            return super().forward(scale, zero_point, bit_width, x)
        qmin, qmax = self._int_range(bit_width)
        zero = torch.zeros_like(scale) if scale.requires_grad else None
        if scale.numel() == 1:
            scale = scale.reshape(1)
            if zero is None:
                return torch.fake_quantize_per_tensor_affine(
                    x, scale, torch.zeros(1, dtype=torch.int32, device=x.device), qmin, qmax)
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, scale, zero.reshape(1), qmin, qmax, 1.0)
        # Per output channel: Brevitas' scale is (C, 1, ..., 1), channel axis 0.
        channels = scale.numel()
        if scale.shape[0] != channels or x.shape[0] != channels:
            return super().forward(scale, zero_point, bit_width, x)
        zero = torch.zeros(channels, device=x.device) if zero is None else zero.reshape(channels)
        return torch._fake_quantize_learnable_per_channel_affine(
            x, scale.reshape(channels), zero, 0, qmin, qmax, 1.0)

    def _int_range(self, bit_width: Tensor) -> tuple[int, int]:
        """(qmin, qmax) as Python ints, cached per bit width (a constant in our quantizers)."""
        bits = float(bit_width)
        cached = getattr(self, "_range_cache", None)
        if cached is None or cached[0] != bits:
            qmin = int(self.min_int(bit_width))
            qmax = int(self.max_int(bit_width))
            self._range_cache = cached = (bits, (qmin, qmax))
        return cached[1]


def set_fused_quant(model: nn.Module, enabled: bool) -> int:
    """Switch every FusedIntQuant in ``model`` to the fused kernels or to Brevitas' reference
    code (benchmarks and tests compare the two on the same weights); returns how many."""
    found = [m for m in model.modules() if isinstance(m, FusedIntQuant)]
    for m in found:
        m.use_fused = enabled
    return len(found)
