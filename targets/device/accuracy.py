"""What ``edgempir bench`` measures of the engine's decisions (device side, numpy only):
accuracy on the sets the host evaluated, the rejection rate, and the black-box Square
attack's query function.

Accuracy is measured with the engine's own decision (the vote inside the graph) on the
exact sets the host evaluated before export, so any difference is drift caused by export
or by the device's runtime, not by sampling.
"""
from __future__ import annotations

import time

import numpy as np

from edgempir.contract import ACCEPTED
from edgempir.errors import BundleError
from edgempir.targets.device.timing import Progress, no_progress
from edgempir.vote import member_ran

DRIFT_THRESHOLD_POINTS = 0.5      # DESIGN.md: host vs device accuracy must agree within this
EVAL_SETS = ("clean", "adv-adaptive")


# --------------------------------------------------------------------------- accuracy
def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def ensemble_scores(logits: np.ndarray) -> np.ndarray:
    """Log of the mean of the members' softmax: [M, B, C] -> [B, C] (the host's surrogate).
    An early-exit graph's NaN rows (members it did not run) are left out of the mean."""
    p = _softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    ran = member_ran(logits)[..., None]
    p = np.where(ran, p, 0.0).sum(axis=0) / np.maximum(ran.sum(axis=0), 1)
    return np.log(np.maximum(p, 1e-30))


def member_scores(logits: np.ndarray) -> np.ndarray:
    p = _softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    return np.log(np.maximum(p, 1e-30))


def predict_all(model, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    ids, logits = [], []
    for i in range(0, len(x), batch_size):
        a, b = model.run(np.ascontiguousarray(x[i:i + batch_size]))
        ids.append(np.asarray(a))
        logits.append(np.asarray(b))
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0,), np.float32)
    axis = 1 if logits[0].ndim == 3 else 0   # ensemble logits are [M, B, C]
    return np.concatenate(ids), np.concatenate(logits, axis=axis)


def set_description(bundle, name: str) -> str:
    info = bundle.eval_info or {}
    if name == "clean":
        return "clean images of the host's evaluation subset, no attack"
    protocol = info.get("protocol", "adaptive")
    config = info.get("config")
    norm = info.get("norm", "Linf")
    try:
        eps = f"{square_eps(bundle):g}"
    except BundleError:
        eps = "?"
    return (f"adversarial examples from the host eval, protocol {protocol}"
            f"{f' ({config})' if config else ''}, {norm} eps {eps}, replayed on the device "
            "(transfer, no new attack)")


def read_eval_sets(bundle) -> dict[str, dict]:
    """The bundle's evaluation sets, checked (shape, labels, range) before any measuring."""
    from edgempir.calib import read_set

    listed = bundle.manifest.get("calib", {})
    out = {}
    for name in EVAL_SETS:
        if name == "clean" or name in listed:
            out[name] = read_set(bundle.calib_file(name), bundle.input_shape, bundle.num_classes)
    return out


def evaluate_set(model, bundle, name: str, arrays: dict, n: int | None, batch_size: int
                 ) -> dict:
    from edgempir.calib import INPUT_NAME, LABEL_NAME
    from edgempir.vote import member_preds, vote

    x, y = arrays[INPUT_NAME], arrays[LABEL_NAME]
    n_set = len(y)
    if n is not None and n < n_set:
        x, y = x[:n], y[:n]
    ids, logits = predict_all(model, x, batch_size)
    acc = float((ids == y).mean()) if len(y) else None
    host = (bundle.host_accuracy or {}).get(name)
    same_set = len(y) == n_set
    drift = None if host is None or acc is None else 100.0 * (acc - host)
    # a member an early-exit graph skipped on a row has no prediction there: its accuracy
    # is over the rows it ran on (early_exit's member_ran_fraction says how many)
    preds, ran = member_preds(logits), member_ran(logits)
    members = [float((preds[i][ran[i]] == y[ran[i]]).mean()) if ran[i].any() else None
               for i in range(logits.shape[0])] if len(y) else []
    vote_agreement = float((vote(logits, bundle.reference_member) == ids).mean()) \
        if len(y) else None
    return {**rejection_figures(model, bundle, name, x, batch_size, same_set),
        "name": name,
        "description": set_description(bundle, name),
        "n": len(y),
        "n_set": int(n_set),
        "same_set_as_host": bool(same_set),
        "deployed_accuracy": acc,
        "host_accuracy": host,
        "drift_points": drift,
        "drift": bool(same_set and drift is not None and abs(drift) > DRIFT_THRESHOLD_POINTS),
        "member_accuracy": members,
        "vote_agreement": vote_agreement,
    }


def rejection_figures(model, bundle, name: str, x: np.ndarray, batch_size: int,
                      same_set: bool) -> dict:
    """The deployed engine's rejection rate (its ``accepted`` output) next to the host's,
    drift flagged like accuracy's; nothing for bundles without the output or a member."""
    if bundle.reject_policy is None or not hasattr(model, "run_outputs") or not len(x):
        return {"reject_policy": bundle.reject_policy, "deployed_rejection_rate": None,
                "host_rejection_rate": None, "rejection_drift_points": None,
                "rejection_drift": False}
    acc = np.concatenate([np.asarray(model.run_outputs(x[i:i + batch_size])[ACCEPTED])
                          for i in range(0, len(x), batch_size)]).astype(bool)
    deployed = float(1 - acc.mean())
    host = bundle.host_rejection.get(name)
    drift = None if host is None else 100.0 * (deployed - host)
    return {"reject_policy": bundle.reject_policy, "deployed_rejection_rate": deployed,
            "host_rejection_rate": host, "rejection_drift_points": drift,
            "rejection_drift": bool(same_set and drift is not None
                                    and abs(drift) > DRIFT_THRESHOLD_POINTS)}


# --------------------------------------------------------------------------- square
def square_eps(bundle) -> float:
    """The eps of the host's adversarial set (``adv_eps``), else the eval's first eps."""
    info = bundle.eval_info or {}
    eps = info.get("adv_eps")
    if eps is None:
        eps = info.get("eps")
        if isinstance(eps, (list, tuple)):
            eps = eps[0] if eps else None
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 <= eps <= 1:
        raise BundleError(f"{bundle.path}: manifest has no usable eval eps for the Square "
                          f"attack ({eps!r}); re-export the bundle from an evaluated run")
    return float(np.float32(eps))   # the host's eps went through float32; print it as such


def run_square(model, which: str, x: np.ndarray, y: np.ndarray, eps: float, queries: int,
               p_init: float, seed: int, progress: Progress = no_progress,
               label: str = "square") -> dict:
    from edgempir.targets.device.square import square_linf

    score = ensemble_scores if which == "ensemble" else member_scores

    def query(batch: np.ndarray):
        ids, logits = model.run(np.ascontiguousarray(batch))
        return ids, score(logits)

    t0 = time.perf_counter()
    with progress(label, max(queries - 2, 0)) as tick:
        res = square_linf(query, x, y, eps, n_queries=queries, p_init=p_init, seed=seed,
                          on_iteration=lambda i, left: tick(1))
    out = res.summary()
    out["seconds"] = time.perf_counter() - t0
    return out
