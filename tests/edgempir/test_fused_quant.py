"""The fused fake-quant path (edgempir/models/fused_quant.py) against Brevitas' reference.

Forward: identical quantized values (same scale, same bit width). Backward: the same
straight-through gradient for the input and the same learned-scale gradient as Brevitas'
autograd (no LSQ gradient scaling), up to float summation order.
"""
import pytest
import torch
from brevitas.core.function_wrapper import Identity
from brevitas.core.quant import IntQuant

from edgempir.members import parse_spec
from edgempir.models import build_model
from edgempir.models.fused_quant import FusedIntQuant, set_fused_quant

# (signed, narrow_range, bit width, scale shape): ActQuant / InputQuant (unsigned,
# per tensor), WeightQuant (signed, narrow, per output channel).
CASES = [(False, False, 4, ()), (False, False, 8, ()), (False, False, 2, ()),
         (True, True, 2, (16, 1, 1, 1)), (True, True, 4, (16, 1, 1, 1)), (True, True, 3, (16, 1))]


def pair(signed, narrow):
    fused = FusedIntQuant(narrow_range=narrow, signed=signed, input_view_impl=Identity()).train()
    ref = IntQuant(narrow_range=narrow, signed=signed, input_view_impl=Identity()).train()
    return fused, ref


def operands(seed, signed, bits, scale_shape):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(scale_shape, generator=g) * 0.2 + 0.01
    shape = (16, 8, 5, 5) if len(scale_shape) != 2 else (16, 40)
    # Spread over the integer range and well beyond it, so both clamps are exercised.
    x = torch.randn(shape, generator=g) * scale * 2 ** (bits - 1) * 1.5
    if not signed:
        x = x.abs() if seed % 2 else x  # unsigned: post-ReLU inputs, and raw ones
    return x, scale


@pytest.mark.parametrize("signed,narrow,bits,scale_shape", CASES)
@pytest.mark.parametrize("seed", range(5))
def test_fused_forward_values_identical_to_brevitas(signed, narrow, bits, scale_shape, seed):
    fused, ref = pair(signed, narrow)
    x, scale = operands(seed, signed, bits, scale_shape)
    bw, zp = torch.tensor(float(bits)), torch.tensor(0.0)
    for s in (scale, scale.clone().requires_grad_()):   # constant and learned scale kernels
        y_fused = fused(s, zp, bw, x)
        assert y_fused.grad_fn is not None and "FakeQuantize" in y_fused.grad_fn.name() \
            or not s.requires_grad, "the fused kernel was not used"
        assert torch.equal(y_fused, ref(s, zp, bw, x))


@pytest.mark.parametrize("signed,narrow,bits,scale_shape", CASES)
def test_fused_gradients_match_brevitas(signed, narrow, bits, scale_shape):
    fused, ref = pair(signed, narrow)
    x0, s0 = operands(7, signed, bits, scale_shape)
    upstream = torch.randn(x0.shape, generator=torch.Generator().manual_seed(8))
    grads = []
    for quant in (fused, ref):
        x, s = x0.clone().requires_grad_(), s0.clone().requires_grad_()
        (quant(s, torch.tensor(0.0), torch.tensor(float(bits)), x) * upstream).sum().backward()
        grads.append((x.grad, s.grad))
    (gx_f, gs_f), (gx_r, gs_r) = grads
    # Straight-through inside the range, 0 outside: the same mask, and the same values up to
    # Brevitas' (g * s) / s rounding (the fused kernel passes g itself).
    assert torch.equal(gx_f == 0, gx_r == 0)
    assert gx_f.eq(0).any() and gx_f.ne(0).any()
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-6, atol=0)
    # The scale gradient is a sum over the tensor: same terms, different summation order.
    torch.testing.assert_close(gs_f, gs_r, rtol=1e-4, atol=1e-4)


def test_eval_mode_runs_brevitas_code():
    fused, ref = pair(False, False)
    fused.eval()
    x, scale = operands(1, False, 4, ())
    y = fused(scale.requires_grad_(), torch.tensor(0.0), torch.tensor(4.0), x)
    assert "FakeQuantize" not in y.grad_fn.name()
    assert torch.equal(y, ref(scale, torch.tensor(0.0), torch.tensor(4.0), x))


def _assert_same_except_ties(y_fused, y_ref, x, scale):
    """Identical, except where x / s is a .5 tie that the reciprocal rounds the other way."""
    differ = y_fused != y_ref
    if differ.any():
        ratio = (x / scale).expand_as(x)[differ]
        assert torch.allclose(ratio.frac().abs(), torch.tensor(0.5), atol=1e-5), ratio
        assert torch.allclose((y_fused - y_ref)[differ].abs(), scale.expand_as(x)[differ])
    return int(differ.sum())


@pytest.mark.parametrize("arch,shape", [("mnist", (1, 28, 28)), ("cifar", (3, 32, 32))])
def test_member_training_quantizers_match_brevitas(arch, shape):
    """Every quantizer call of a w2a4 member in training steps (Adam updates included),
    through the statistics phase into learned activation scales: the fused output equals
    Brevitas' IntQuant on the same input, except at exact .5 ties. Ties do occur in real
    members: conv outputs of grid values over a percentile scale are ratios of integers
    (statistics phase), and averages of grid values after the CIFAR net's average pooling."""
    torch.manual_seed(0)
    model = build_model(arch, parse_spec("w2a4"), shape, 10).train()
    quants = [m for m in model.modules() if isinstance(m, FusedIntQuant)]
    assert len(quants) == (6 if arch == "mnist" else 10)  # weights + activations, not input
    calls, ties, values = [0], [0], [0]

    def checked(quant):
        fused_forward = quant.forward

        def forward(scale, zero_point, bit_width, x):
            y = fused_forward(scale, zero_point, bit_width, x)
            with torch.no_grad():
                ref = IntQuant.forward(quant, scale, zero_point, bit_width, x)
            ties[0] += _assert_same_except_ties(y.detach(), ref, x.detach(), scale.detach())
            calls[0] += 1
            values[0] += x.numel()
            assert "FakeQuantize" in y.grad_fn.name()
            return y
        return forward

    for q in quants:
        q.forward = checked(q)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(32):  # ActQuant collects statistics for 30 steps
        x = torch.rand(8, *shape, generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (8,), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert calls[0] == 32 * len(quants)
    assert ties[0] < 1e-3 * values[0]


def test_ties_after_average_pooling_may_round_the_other_way():
    """The one documented forward difference: the fused kernels multiply by 1/s where
    Brevitas divides by s. Averages of grid values (the CIFAR net's re-quantizers after
    average pooling) land on exact .5 ties, where the two may round to neighbours; every
    other value is identical. Export and eval use Brevitas' division (eval mode)."""
    fused, ref = pair(False, False)
    scale, bw, zp = torch.tensor(0.0731), torch.tensor(4.0), torch.tensor(0.0)
    grid = torch.randint(0, 16, (64, 32, 16, 16), generator=torch.Generator().manual_seed(0))
    pooled = torch.nn.functional.avg_pool2d(grid.float() * scale, 3, 2, padding=1,
                                            count_include_pad=False)
    y_fused, y_ref = fused(scale, zp, bw, pooled), ref(scale, zp, bw, pooled)
    differ = _assert_same_except_ties(y_fused, y_ref, pooled, scale)
    assert 0 < differ < 0.01 * pooled.numel()


def test_set_fused_quant_switches_a_member_to_brevitas_code():
    model = build_model("mnist", parse_spec("w2a4"), (1, 28, 28), 10).train()
    conv = model.conv2
    assert "FakeQuantize" in conv.quant_weight().value.grad_fn.name()
    assert set_fused_quant(model, False) == 6
    assert "FakeQuantize" not in conv.quant_weight().value.grad_fn.name()
    assert set_fused_quant(build_model("mnist", parse_spec("fp32"), (1, 28, 28), 10), False) == 0
