"""edgempir/models/weight_cache.py: quantized weights computed once while they cannot change,
bit for bit what Brevitas computes at every call, recomputed after an in-place update."""
from __future__ import annotations

import pytest
import torch

from edgempir.members import MemberSpec
from edgempir.models import build_model
from edgempir.models.weight_cache import _weight_proxies, cached_quant_weights


def _member(quantizer: str, seed: int = 0):
    torch.manual_seed(seed)
    spec = MemberSpec(weight_bits=2, act_bits=4)
    return build_model("mnist", spec, (1, 28, 28), 10, quantizer=quantizer).eval()


def _logits_and_input_grad(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


class _Counter:
    """Counts the calls of every weight quantizer's own quantization (``tensor_quant``)."""

    def __init__(self, model, monkeypatch):
        self.calls = 0
        for proxy in _weight_proxies([model]):
            real = proxy.tensor_quant.forward

            def counted(*a, real=real):
                self.calls += 1
                return real(*a)
            monkeypatch.setattr(proxy.tensor_quant, "forward", counted)


@pytest.mark.parametrize("quantizer", ["edge", "dorefa"])
def test_cached_weights_give_the_same_bits_and_are_quantized_once(quantizer, monkeypatch):
    model = _member(quantizer)
    layers = len(_weight_proxies([model]))
    assert layers >= 3
    xs = [torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n)) for n in (1, 5, 16)]
    plain = [_logits_and_input_grad(model, x) for x in xs]
    count = _Counter(model, monkeypatch)
    with cached_quant_weights([model]):
        cached = [_logits_and_input_grad(model, x) for x in xs]
        with torch.no_grad():
            model(xs[0])
    assert count.calls == layers  # once per layer for 4 forward passes (3 with backward)
    for (a, ga), (b, gb) in zip(plain, cached):
        assert torch.equal(a, b) and torch.equal(ga, gb)
    assert not any("forward" in vars(p) for p in _weight_proxies([model]))  # restored
    model(xs[0])
    assert count.calls == 2 * layers  # outside the context: quantized at every call again


def test_an_in_place_weight_update_is_seen(monkeypatch):
    model = _member("edge")
    x = torch.rand(4, 1, 28, 28)
    count = _Counter(model, monkeypatch)
    with cached_quant_weights([model]):
        before = model(x).detach()
        with torch.no_grad():  # as an optimizer step updates a parameter
            model.conv3.weight.mul_(-1.0)
        after = model(x).detach()
        assert count.calls == len(_weight_proxies([model])) + 1  # conv3 quantized again
    assert torch.equal(after, model(x).detach())
    assert not torch.equal(before, after)


def test_training_mode_is_never_cached_and_weights_get_gradients(monkeypatch):
    model = _member("edge").train()
    count = _Counter(model, monkeypatch)
    with cached_quant_weights([model]):
        for _ in range(2):
            model(torch.rand(4, 1, 28, 28)).sum().backward()
    assert count.calls == 2 * len(_weight_proxies([model]))
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_nested_contexts_restore_the_outer_one(monkeypatch):
    model = _member("edge")
    x = torch.rand(2, 1, 28, 28)
    count = _Counter(model, monkeypatch)
    layers = len(_weight_proxies([model]))
    with torch.no_grad(), cached_quant_weights([model]):
        model(x)
        with cached_quant_weights([model]):
            model(x)
        model(x)  # the outer cache again, still filled
        assert count.calls == layers  # the inner wrapper asked the outer one
    assert not any("forward" in vars(p) for p in _weight_proxies([model]))
