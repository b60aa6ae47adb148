"""The paper's vote rule in numpy, for the device side and for checks (no torch).

Rule (EMPIR): each member votes its argmax; a class with a strict majority of the votes
(at least 2 of 3) wins; with no majority, the reference member (the full-precision one, or
else the highest-precision one) decides. ``edgempir.ensemble`` implements the same rule in
torch and the exported ONNX graph implements it with ONNX ops; tests pin all three.

Reject policies (``accepted``; docs/BUNDLE.md, output ``accepted``): ``majority`` accepts
every vote; ``unanimous`` accepts it only when every member votes the same class. The same
rule is in ``edgempir.ensemble.accepted`` (torch) and ``targets.graph.add_accepted`` (ONNX).
"""
from __future__ import annotations

import numpy as np


def vote(member_logits: np.ndarray, reference: int) -> np.ndarray:
    """``member_logits``: [members, batch, classes] -> class ids [batch] (int64)."""
    logits = np.asarray(member_logits)
    m, _, c = logits.shape
    preds = logits.argmax(axis=2)  # [M, B]
    counts = np.zeros((logits.shape[1], c), dtype=np.int64)
    for row in preds:
        counts[np.arange(len(row)), row] += 1
    top = counts.argmax(axis=1)
    has_majority = counts.max(axis=1) * 2 > m
    return np.where(has_majority, top, preds[reference]).astype(np.int64)


REJECT_POLICIES = ("majority", "unanimous")


def accepted(member_logits: np.ndarray, policy: str) -> np.ndarray:
    """``member_logits``: [members, batch, classes] -> [batch] bool: is the vote accepted."""
    preds = np.asarray(member_logits).argmax(axis=2)
    if policy == "majority":
        return np.ones(preds.shape[1], dtype=bool)
    if policy == "unanimous":
        return (preds == preds[:1]).all(axis=0)
    raise ValueError(f"unknown reject policy {policy!r}; known: {', '.join(REJECT_POLICIES)}")
