"""Square attack, L-inf, score-based black box, in numpy only (device side).

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020 (reference code: max-andr/square-attack,
``square_attack_linf``). It needs only the scores a deployed engine returns, so ``bench``
runs it against the engine itself, not against a PyTorch copy of it: if export changed what
the model computes, this attack sees the change.

Differences from the reference code, each for the ensemble with a vote:
- the loss is the margin on the *scores* the caller gives (``bench`` passes the log of the
  mean of the members' softmax, the same surrogate the host's adaptive protocol uses);
- success is judged by the engine's *decision* (the vote's class ids), not by the scores'
  argmax: an image counts as broken only when the deployed decision is wrong, and it stops
  being attacked (and stops costing queries) at that moment.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# query(x float32 [B, C, H, W]) -> (class ids int [B], scores float [B, classes])
QueryFn = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]

MAX_QUERY_BATCH = 256   # keeps one call's activations small on a device with little memory


@dataclass
class SquareResult:
    x: np.ndarray              # float32 [N, C, H, W], the clean inputs
    x_adv: np.ndarray          # float32 [N, C, H, W], within eps of x and in [0, 1]
    clean_correct: np.ndarray  # bool [N]: the engine's decision on x was right
    robust: np.ndarray         # bool [N]: still right after the attack (implies clean_correct)
    queries: np.ndarray        # int [N]: engine queries spent on each image (clean query included)
    iterations: int            # attack iterations run (<= n_queries - 1)

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean()) if self.clean_correct.size else 0.0

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.mean()) if self.robust.size else 0.0

    def summary(self) -> dict:
        broken = self.clean_correct & ~self.robust
        q = self.queries[broken]
        return {
            "n": int(self.robust.size),
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "success_rate": float(broken.sum() / max(int(self.clean_correct.sum()), 1)),
            "queries_mean_success": float(q.mean()) if q.size else None,
            "queries_median_success": float(np.median(q)) if q.size else None,
            "queries_total": int(self.queries.sum()),
            "iterations": int(self.iterations),
            "max_perturbation": float(np.abs(self.x_adv - self.x).max()) if self.x.size else 0.0,
        }


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels a square covers at iteration ``it`` (reference schedule).

    The reference code's schedule is written for 10 000 iterations and rescaled to the
    budget, so a few hundred queries still go from large squares to small ones.
    """
    it = int(it / n_iters * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                       (4000, 64), (6000, 128), (8000, 256), (10000, 512)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def margin(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Score of the true class minus the best other score: > 0 while the scores are right."""
    s = np.asarray(scores, dtype=np.float64)
    idx = np.arange(len(y))
    true = s[idx, y]
    other = s.copy()
    other[idx, y] = -np.inf
    return true - other.max(axis=1)


def _query(query: QueryFn, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, scores = [], []
    for i in range(0, len(x), MAX_QUERY_BATCH):
        a, b = query(x[i:i + MAX_QUERY_BATCH])
        ids.append(np.asarray(a))
        scores.append(np.asarray(b))
    return np.concatenate(ids), np.concatenate(scores)


def square_linf(query: QueryFn, x: np.ndarray, y: np.ndarray, eps: float,
                n_queries: int = 300, p_init: float = 0.8, seed: int = 0,
                on_iteration: Callable[[int, int], None] | None = None) -> SquareResult:
    """Untargeted L-inf Square attack on ``query`` within ``eps`` of ``x`` (inputs in [0, 1]).

    ``n_queries`` is the budget per image, the clean query included (as in the reference
    code). ``on_iteration(i, n_left)`` is called after each iteration (progress bars).
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    ids, _ = _query(query, x)
    clean_correct = ids == y
    result = SquareResult(x, x.copy(), clean_correct, clean_correct.copy(),
                          np.ones(len(x), dtype=np.int64), 0)
    att = np.flatnonzero(clean_correct)      # images still being attacked
    if att.size == 0 or n_queries == 1 or eps == 0:
        return result

    # vertical stripes: each column of the image moves by +eps or -eps
    c, w = x.shape[1], x.shape[3]
    stripes = rng.choice(np.array([-eps, eps], dtype=np.float32), size=(att.size, c, 1, w))
    x_best = np.clip(x[att] + stripes, 0.0, 1.0).astype(np.float32)
    fooled, m_best = _try(query, result, y, att, x_best)
    iterations = 1
    for i_iter in range(1, n_queries - 1):
        keep = ~fooled
        att, x_best, m_best = att[keep], x_best[keep], m_best[keep]
        if att.size == 0:
            break
        x_clean = x[att]
        deltas = _square_deltas(rng, x_clean, x_best, p_selection(p_init, i_iter, n_queries),
                                eps)
        x_new = np.clip(x_clean + deltas, 0.0, 1.0).astype(np.float32)
        fooled, m_new = _try(query, result, y, att, x_new, update=False)
        improved = (m_new < m_best) | fooled   # a fooling image is kept even if its margin rose
        x_best = np.where(improved[:, None, None, None], x_new, x_best)
        m_best = np.where(improved, m_new, m_best)
        result.x_adv[att] = x_best
        result.robust[att[fooled]] = False
        iterations = i_iter + 1
        if on_iteration is not None:
            on_iteration(i_iter, int((~fooled).sum()))
    result.iterations = iterations
    return result


def _try(query: QueryFn, result: SquareResult, y: np.ndarray, att: np.ndarray,
         x_try: np.ndarray, update: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Query the engine on candidates for the images ``att``: (fooled, margins). Counts the
    query; ``update``: also keep the candidates as the images' adversarial examples."""
    ids, scores = _query(query, x_try)
    result.queries[att] += 1
    fooled = ids != y[att]
    if update:
        result.x_adv[att] = x_try
        result.robust[att[fooled]] = False
    return fooled, margin(scores, y[att])


def _square_deltas(rng: np.random.Generator, x_clean: np.ndarray, x_best: np.ndarray,
                   p: float, eps: float) -> np.ndarray:
    """The perturbations of ``x_best`` with one s x s square per image (s from the pixel
    fraction ``p``), at a random place, set to +eps or -eps per channel; a square that
    would not change its image is drawn again (up to 16 times): it would waste a query."""
    n, c, h, w = x_clean.shape
    n_features = c * h * w
    deltas = x_best - x_clean
    s = round(float(np.sqrt(p * n_features / c)))
    s = min(max(s, 1), h - 1)            # at least 1x1, at most (h-1)x(h-1)
    ch = rng.integers(0, h - s + 1, size=n)
    cw = rng.integers(0, w - s + 1, size=n)
    rows = (ch[:, None] + np.arange(s))[:, :, None]           # [n, s, 1]
    cols = (cw[:, None] + np.arange(s))[:, None, :]           # [n, 1, s]
    img = np.arange(n)[:, None, None]
    todo = np.arange(n)
    for _ in range(16):
        # advanced indices around the channel slice put it last: [n, s, s, c]
        signs = rng.choice(np.array([-eps, eps], dtype=np.float32), size=(todo.size, 1, 1, c))
        deltas[img[todo], :, rows[todo], cols[todo]] = signs
        win_new = np.clip(x_clean[img[todo], :, rows[todo], cols[todo]]
                          + deltas[img[todo], :, rows[todo], cols[todo]], 0, 1)
        unchanged = np.all(np.abs(win_new - x_best[img[todo], :, rows[todo], cols[todo]])
                           < 1e-7, axis=(1, 2, 3))
        todo = todo[unchanged]
        if todo.size == 0:
            break
    return deltas
