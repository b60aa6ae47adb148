"""Finished work kept under ``eval/partial/`` so that a killed eval resumes where it stopped
and gives identical results (docs/EVAL.md#resume): every file carries a fingerprint of
everything that determines it and is written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np


def digest(obj: Any) -> str:
    """sha256 of ``obj`` as sorted JSON: the fingerprint of what determines a result."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def array_digest(values: np.ndarray) -> str:
    return hashlib.sha256(values.tobytes()).hexdigest()


def eps_tag(eps: float | None) -> str:
    """The folder of one eps under ``partial/<protocol>-<config>/``."""
    return "unbounded" if eps is None else f"eps-{eps:.6g}".replace("/", "_")


def load_partial(path: Path, fingerprint: str, shape: tuple[int, ...]):
    """A finished attack kept by an earlier eval, or None (recompute it): also when the
    file's fingerprint matches but its array has the wrong shape or values outside [0, 1]."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint or z["x_adv"].shape != shape:
                return None
            x_adv, seconds = z["x_adv"].astype(np.float32), float(z["seconds"])
    except (OSError, KeyError, ValueError, EOFError, zlib.error):
        return None
    if not (np.isfinite(x_adv).all() and x_adv.min(initial=0) >= 0 and x_adv.max(initial=1) <= 1
            and np.isfinite(seconds)):
        return None
    return x_adv, seconds


def save_partial(path: Path, fingerprint: str, x_adv: np.ndarray, seconds: float) -> None:
    from edgempir.fsutil import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, x_adv=np.ascontiguousarray(x_adv, dtype=np.float32),
             fingerprint=np.array(fingerprint), seconds=np.array(seconds))
    atomic_write_bytes(path, buf.getvalue())


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False,
                dynamic_ncols=True)


def crafted(ev, craft, xs, ys, ids, desc: str, what: dict) -> np.ndarray:
    """``craft``'s examples for ``xs`` (``craft(x_batch, y_batch, positions, ids)``: the
    batch's positions in ``xs`` and the images' ids, for per-image seeds), in batches of
    the evaluator ``ev`` shared over its ranks, kept under partial/checks for resume (the
    masking checks' and the reject policies' attacks)."""
    from edgempir.eval.shard import MIN_ROWS, Crafting, craft_rows

    torch = ev.torch
    fingerprint = digest({"run": ev.run_fingerprint, "subset": ev.subset_digest, "n": len(ys),
                          "seed": ev.seed, "what": what})
    path = ev.partial_dir / "checks" / f"{digest(desc)[:16]}.npz"
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))

    def craft_batch(rows: np.ndarray) -> np.ndarray:
        idx = torch.from_numpy(rows)
        return craft(xs[idx], ys[idx], idx, ids[idx]).detach().numpy()

    crafting = Crafting(path, fingerprint, tuple(xs.shape[1:]), ev.batch_size, False,
                        MIN_ROWS, f"{ev.config.protocol} {desc}", ev.progress)
    return craft_rows(ev.shard, crafting, np.arange(len(ys)), craft_batch)[0]
