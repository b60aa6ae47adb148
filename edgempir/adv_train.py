"""Adversarial training losses: Madry PGD and TRADES, through Brevitas' straight-through
quantizers (the attack sees the quantized member exactly as it is trained).

Both craft the attack with ``torch.autograd.grad`` on the input only, so no gradient leaks
into the parameters while the examples are made.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

ADV_TRAIN = ("none", "pgd", "trades")


def default_step_size(eps: float, steps: int) -> float:
    # Madry et al. use 2.5 * eps / steps: enough to reach the boundary of the ball from any
    # random start, small enough to follow the loss surface.
    return 2.5 * eps / max(steps, 1)


def pgd_examples(model, x, y, eps: float, steps: int, step_size: float):
    """L-inf PGD with a random start, maximising cross-entropy."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp_(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step_size * grad.sign(), x - eps), x + eps)
        x_adv = x_adv.clamp_(0, 1)
    return x_adv.detach()


def trades_examples(model, x, clean_logits, eps: float, steps: int, step_size: float):
    """TRADES' inner maximisation: KL(f(x) || f(x_adv)) from a small random start."""
    target = F.softmax(clean_logits.detach(), dim=1)
    x_adv = (x + 0.001 * torch.randn_like(x)).clamp_(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step_size * grad.sign(), x - eps), x + eps)
        x_adv = x_adv.clamp_(0, 1)
    return x_adv.detach()


def training_step_loss(model, xb, yb, mode: str, eps: float, steps: int, step_size: float,
                       beta: float, label_smoothing: float = 0.0):
    """Return (loss, clean logits, adversarial logits or None).

    ``label_smoothing`` (preset paper on CIFAR-10) applies to standard training only.
    Under DistributedDataParallel (``train --distributed ddp``) the attack and the clean
    logits use the wrapped network: only the one forward that the loss's gradient flows
    through goes through DDP, whose backward averages the gradients over the ranks."""
    net = getattr(model, "module", model)
    if mode == "none":
        out = model(xb)
        return F.cross_entropy(out, yb, label_smoothing=label_smoothing), out, None
    if mode == "pgd":
        x_adv = pgd_examples(net, xb, yb, eps, steps, step_size)
        out_adv = model(x_adv)
        with torch.no_grad():
            out = net(xb)
        return F.cross_entropy(out_adv, yb), out, out_adv
    if mode == "trades":
        out = net(xb)
        x_adv = trades_examples(net, xb, out, eps, steps, step_size)
        out_adv = model(x_adv)
        robust = F.kl_div(F.log_softmax(out_adv, dim=1), F.softmax(out, dim=1),
                          reduction="batchmean")
        return F.cross_entropy(out, yb) + beta * robust, out, out_adv
    raise ValueError(f"unknown adversarial training {mode!r}; known: {', '.join(ADV_TRAIN)}")
