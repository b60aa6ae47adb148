"""A linear member ``x.flatten(1) @ w`` for the attack and vote tests that write an attack
out by hand: small enough to follow, with gradients everywhere."""
from __future__ import annotations

import torch
from torch import nn


class LinearMember(nn.Module):
    """Logits ``x.flatten(1) @ w`` for a weight ``w`` [pixels, classes]."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return x.flatten(1) @ self.w


def seeded_linear(pixels: int, classes: int, seed: int, scale: float = 1.0) -> LinearMember:
    """A LinearMember with weights ``scale * N(0, 1)`` drawn from ``seed`` alone."""
    g = torch.Generator().manual_seed(seed)
    return LinearMember(torch.randn(pixels, classes, generator=g) * scale)
