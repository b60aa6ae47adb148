"""Bench's measurements of the early-exit vote (device side; numpy and the runtime only).

An early-exit ``ensemble.onnx`` (manifest ``vote_execution.mode``, docs/BUNDLE.md) runs the
reference member only on the rows where the low-bit members leave the vote open, so its
latency depends on the input. ``bench`` therefore times it on three inputs, side by side
with the fp32 member (:func:`latency_runners`):

1. the clean set; 2. the shipped adversarial set; 3. the worst case: batches made only of
   rows that took the deployed graph's slowest path (the most members run, for three
   members every row where the reference ran), found by running the graph itself on both
   sets (:func:`check_sets`); each runner cycles through its set (:class:`Rotating`). An attacker who can perturb inputs can push them there
   (``edgempir eval`` measures how often, docs/EVAL.md), so the worst case is the figure a
   deadline must budget for.

:func:`check_sets` checks that the engine's decisions equal the full vote of every member
file on every row (the member files are in the bundle) and measures the slow-path fraction.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgempir.vote import member_ran, vote

WORST_CASE_NOTE = ("the early exit's latency depends on the input: an attacker can push "
                   "inputs onto the slow path (every member run); budget deadlines on the "
                   "worst case")


def mode(bundle) -> str:
    return ((bundle.manifest.get("vote_execution") or {}).get("mode")) or "full"


def predict_masked(model, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(class ids [N], member_ran [M, N]) of the ensemble engine over ``x`` in batches."""
    ids, ran = [], []
    for s in range(0, len(x), batch_size):
        a, logits = model.run(np.ascontiguousarray(x[s:s + batch_size]))
        ids.append(np.asarray(a))
        ran.append(member_ran(logits))
    return np.concatenate(ids), np.concatenate(ran, axis=1)


def full_vote(members: list, x: np.ndarray, reference: int, batch_size: int) -> np.ndarray:
    """The full vote: every member file on every row, voted in numpy."""
    logits = []
    for m in members:
        logits.append(np.concatenate([m.run(np.ascontiguousarray(x[s:s + batch_size]))[1]
                                      for s in range(0, len(x), batch_size)]))
    return vote(np.stack(logits), reference)


def check_sets(ens, open_member: Callable[[int], Any], bundle, sets: dict[str, np.ndarray],
               batch_size: int) -> tuple[list[dict], np.ndarray]:
    """Per set: slow-path fraction and decisions vs the full vote. Returns the rows and the
    slowest-path rows of all sets together (the worst-case pool)."""
    members = [open_member(i) for i in range(len(bundle.members))]
    ref = bundle.reference_member
    out, slow = [], []
    for name, x in sets.items():
        ids, ran = predict_masked(ens, x, batch_size)
        full = full_vote(members, x, ref, batch_size)
        n_run = ran.sum(axis=0)
        out.append({
            "name": name, "n": len(x),
            "slow_path_fraction": float(ran[ref].mean()) if len(x) else 0.0,
            "members_run_mean": float(n_run.mean()) if len(x) else 0.0,
            "member_ran_fraction": [float(r.mean()) if len(x) else 0.0 for r in ran],
            "full_vote_mismatches": int((ids != full).sum()),
            "decisions_identical": bool(np.array_equal(ids, full)),
        })
        slow.append(x[n_run == len(members)])
    return out, np.concatenate(slow) if slow else np.zeros((0,), np.float32)


class Rotating:
    """A runner that ignores bench's batch and runs ``model`` on the next ``b`` rows of its
    own pool at each call (cycling; at most ``MAX_WINDOWS`` distinct batches, built once per
    batch size outside the timed calls). An early-exit graph's cost depends on the rows, so
    timing one fixed batch (at batch 1: one image, fast or slow) would not be the set's."""

    MAX_WINDOWS = 512

    def __init__(self, model, pool: np.ndarray):
        self.model, self.pool = model, pool
        self.windows: dict[int, list[np.ndarray]] = {}
        self.next: dict[int, int] = {}

    def __call__(self, x: np.ndarray):
        b = len(x)
        windows = self.windows.get(b)
        if windows is None:
            n = min(max(len(self.pool) // b, 1), self.MAX_WINDOWS)
            windows = self.windows[b] = [
                np.ascontiguousarray(self.pool[(k * b + np.arange(b)) % len(self.pool)],
                                     dtype=np.float32) for k in range(n)]
            self.next[b] = 0
        k = self.next[b]
        self.next[b] = (k + 1) % len(windows)
        return self.model.run(windows[k])


def latency_runners(ens, base, base_name: str, clean: np.ndarray, adv_pool: np.ndarray | None,
                    worst_pool: np.ndarray | None) -> dict[str, Callable]:
    """bench's side-by-side runners for an early-exit graph: the ensemble on the clean set,
    the adversarial set and the worst case, and the baseline on the clean set, each cycling
    through its pool."""
    runners: dict[str, Callable] = {"ensemble": Rotating(ens, clean),
                                    base_name: Rotating(base, clean)}
    if adv_pool is not None and len(adv_pool):
        runners["ensemble_adversarial"] = Rotating(ens, adv_pool)
    if worst_pool is not None and len(worst_pool):
        runners["ensemble_worst_case"] = Rotating(ens, worst_pool)
    return runners


def overheads(row: dict, base_name: str) -> None:
    """p50 ratios of the adversarial and worst-case runs to the baseline, in place."""
    f = row[base_name]["p50_ms"]
    for name in ("adversarial", "worst_case"):
        s = row.get(f"ensemble_{name}")
        row.setdefault(f"ensemble_{name}", None)
        row[f"overhead_p50_{name}"] = s["p50_ms"] / f if s and f > 0 else None


def section(bundle, ens, eval_sets: dict, n: int | None, threads: int | None,
            batch_size: int) -> dict | None:
    """bench's report section ``early_exit`` (None for a full-vote graph), with the
    worst-case pool under ``_worst_pool`` (bench takes it out before writing the report)."""
    from edgempir.calib import INPUT_NAME
    from edgempir.targets.device.runtime import open_model

    if mode(bundle) != "early-exit":
        return None
    sets = {name: a[INPUT_NAME][:n] if n else a[INPUT_NAME] for name, a in eval_sets.items()}
    rows, worst = check_sets(ens, lambda i: open_model(bundle, i, threads=threads), bundle,
                             sets, batch_size)
    execution = bundle.manifest["vote_execution"]
    return {"mode": "early-exit", "order": list(execution.get("order", [])),
            "reference_member": bundle.reference_member, "sets": rows,
            "worst_case_rows": len(worst),
            "worst_case_from": "rows of the clean and adversarial sets on which the deployed "
                               "graph ran every member (its slowest path), cycled through in "
                               "batches",
            "note": WORST_CASE_NOTE, "_worst_pool": worst}
