"""The paper's vote rule in numpy, for the device side and for checks (no torch).

Rule (EMPIR): each member votes its argmax; a class with a strict majority of the votes
(at least 2 of 3) wins; with no majority, the reference member (the full-precision one, or
else the highest-precision one) decides. ``edgempir.ensemble`` implements the same rule in
torch and the exported ONNX graph implements it with ONNX ops; tests pin all three.

Reject policies (``accepted``; docs/BUNDLE.md, output ``accepted``): ``majority`` accepts
every vote; ``unanimous`` accepts it only when every member votes the same class. The same
rule is in ``edgempir.ensemble.accepted`` (torch) and ``targets.graph.add_accepted`` (ONNX).

Early exit (:func:`cascade`): the same decisions while running fewer members. Members run
in :func:`edgempir.contract.cascade_order` (cheapest first, the reference last), and a
member runs on a row only where its vote can still change the decision:

- a row stops as soon as one class holds a strict majority of all M votes (no remaining
  member can take it away);
- without a majority, the reference decides whatever the others say (its vote either makes
  a majority for its own class or leaves none); so a non-reference member is skipped where
  no class can reach a majority even with every remaining non-reference vote, and the row
  goes straight to the reference.

Skipped members count as absent votes (``NOT_RUN``); :func:`vote_preds` of the result is
the full vote. For the paper's three members this is ``m0 if m0 == m1 else m_ref``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

NOT_RUN = -1  # the prediction of a member that did not run on a row


def vote_preds(preds: np.ndarray, reference: int, num_classes: int) -> np.ndarray:
    """Members' argmaxes [M, B] (``NOT_RUN`` where a member was skipped) -> class ids [B]."""
    preds = np.asarray(preds)
    m, b = preds.shape
    counts = np.zeros((b, num_classes), dtype=np.int64)
    for row in preds:
        ran = row != NOT_RUN
        counts[np.arange(b)[ran], row[ran]] += 1
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


def member_ran(member_logits: np.ndarray) -> np.ndarray:
    """[M, B] bool: False where a member's logits row is all NaN (an early-exit graph's mark
    of a member that did not run on that row; its ``member_ran`` output says the same)."""
    return ~np.isnan(np.asarray(member_logits)).all(axis=-1)


def member_preds(member_logits: np.ndarray) -> np.ndarray:
    """[M, B] argmaxes, ``NOT_RUN`` where the member did not run (all-NaN row)."""
    logits = np.asarray(member_logits)
    return np.where(member_ran(logits), np.nan_to_num(logits, nan=-np.inf).argmax(axis=-1),
                    NOT_RUN).astype(np.int64)


def vote(member_logits: np.ndarray, reference: int) -> np.ndarray:
    """``member_logits``: [members, batch, classes] -> class ids [batch] (int64). Rows of
    NaN (a member an early-exit graph did not run) are absent votes."""
    logits = np.asarray(member_logits)
    return vote_preds(member_preds(logits), reference, logits.shape[2])


def always_open(n_members: int) -> int:
    """How many members (in cascade order) run on every row: before the k-th member with
    2k >= M, no row can have a majority or be beyond one."""
    return (n_members + 1) // 2


def cascade(run_member: Callable[[int, np.ndarray], np.ndarray], batch: int, n_members: int,
            order: list[int], reference: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Early-exit vote: ``run_member(i, rows)`` -> logits [len(rows), K] of member i on those
    rows of the batch. Returns (class ids [B], member logits [M, B, K] with NaN where a
    member did not run, member_ran [M, B] bool); decisions equal :func:`vote`'s."""
    if sorted(order) != list(range(n_members)) or order[-1] != reference:
        raise ValueError("order must list every member once, the reference last")
    preds = np.full((n_members, batch), NOT_RUN, dtype=np.int64)
    ran = np.zeros((n_members, batch), dtype=bool)
    outputs: dict[int, np.ndarray] = {}
    num_classes = 1  # known from the first member's output (an empty batch runs none)
    open_rows = np.arange(batch)
    for k, i in enumerate(order):
        if k >= always_open(n_members):
            counts = np.zeros((batch, num_classes), dtype=np.int64)
            for row in preds:
                done = row != NOT_RUN
                counts[np.arange(batch)[done], row[done]] += 1
            top = counts.max(axis=1)
            need = top * 2 <= n_members
            if i != reference:  # members left before the reference, this one included
                need &= (top + (n_members - 1 - k)) * 2 > n_members
            open_rows = np.flatnonzero(need)
        if open_rows.size == 0:
            continue
        outputs[i] = np.asarray(run_member(i, open_rows), dtype=np.float32)
        num_classes = outputs[i].shape[1]
        preds[i, open_rows] = outputs[i].argmax(axis=1)
        ran[i, open_rows] = True
    logits = np.full((n_members, batch, num_classes), np.nan, dtype=np.float32)
    for i, out in outputs.items():
        logits[i, ran[i]] = out
    return vote_preds(preds, reference, num_classes), logits, ran


def cascade_from_logits(member_logits: np.ndarray, order: list[int], reference: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cascade` over precomputed logits [M, B, K]: (class ids, member_ran). It reads
    only the rows a deployed early-exit graph computes."""
    logits = np.asarray(member_logits)
    ids, _, ran = cascade(lambda i, rows: logits[i, rows], logits.shape[1], logits.shape[0],
                          order, reference)
    return ids, ran
