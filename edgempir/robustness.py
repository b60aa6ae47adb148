"""Compatibility shim: eval's code lives in the package :mod:`edgempir.eval` (one module per
concern, docs/ARCHITECTURE.md). This module re-exports its public API under the old name,
so ``from edgempir.robustness import evaluate`` keeps working."""
from __future__ import annotations

import edgempir.eval as _eval
from edgempir.eval import *

__all__ = list(_eval.__all__)
