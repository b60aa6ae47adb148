"""An evaluation sharded over torchrun's ranks (docs/DISTRIBUTED.md, "Evaluation").

Every rank holds the whole evaluation state (subset, per-sample worst case, cascade masks)
and takes the same decisions; only the expensive per-image work is split: each attack run,
each masking check's and reject policy's attack, the scoring and the slow-path
measurement run on a part of the images on each rank, and the parts are joined on every
rank (all-gather). The per-image results do not depend on the split because

- every random draw of an attack is seeded per image (``Attack.__call__(ids=...)``);
- an attack that couples the images of a batch anyway (``Attack.batch_coupled``:
  torchattacks' APGD, FAB, Square; CW with early abort) runs on batches that depend on the
  attacked rows and ``--batch-size`` alone (:func:`coupled_batches`), never on the number
  of ranks, dealt to the ranks round-robin;
- torch's CPU kernels give each row of a batch the same bits whatever the other rows,
  except for batches of fewer than 4 rows (measured with torch 2.13/MKL, AVX2: a linear
  layer on 1-3 rows takes another path, logits differ by ~1e-6), so every member's
  forward pass gets at least :data:`MIN_ROWS` rows (:func:`batch_independent`).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgempir.eval.store import array_digest, digest, load_partial, progress_bar, save_partial

#: smallest batch a member's forward pass sees in eval (padded with zero images)
MIN_ROWS = 16

#: a batch-coupled attack run is cut into this many batches when it has the rows for them
#: (at least MIN_ROWS each), so that up to this many ranks share it: one batch would leave
#: a cascade's last attacks (APGD-CE, Square) to one rank while the others wait
COUPLED_PARTS = 8


@dataclass
class Shard:
    """This process's place: rank ``rank`` of ``world`` (0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    # seconds this rank spent in collectives, mostly waiting for slower ranks: the
    # report's rank_wait_seconds, which shows how evenly the work was shared
    waited: float = field(default=0.0, compare=False)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @classmethod
    def of(cls, group) -> Shard:
        return cls() if group is None else cls(group.rank, group.world)

    def part(self, rows: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of ``rows`` (sizes differ by at most one)."""
        return np.array_split(np.asarray(rows), self.world)[self.rank]

    def all_gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        t0 = time.perf_counter()
        dist.all_gather_object(out, obj)
        self.waited += time.perf_counter() - t0
        return out

    def from_leader(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.leader else None]
        t0 = time.perf_counter()
        dist.broadcast_object_list(box, src=0)
        self.waited += time.perf_counter() - t0
        return box[0]

    def map_rows(self, fn: Callable[[np.ndarray], tuple], n: int) -> tuple:
        """``fn(rows)`` on this rank's share of ``range(n)``: per-row arrays (first axis
        the rows), joined over the ranks in row order."""
        mine = tuple(np.asarray(a) for a in fn(self.part(np.arange(n))))
        parts = self.all_gather(mine)
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(mine)))


def coupled_batches(rows: np.ndarray, step: int, min_rows: int = MIN_ROWS
                    ) -> list[np.ndarray]:
    """The batches of a batch-coupled attack run over ``rows``: at most ``step`` rows each,
    and :data:`COUPLED_PARTS` of them where every one gets ``min_rows`` rows; sizes differ
    by at most one. ``min_rows >= step`` keeps batches of exactly ``step`` rows in order,
    the last one smaller (Square; CW as the reference ran it). They depend on ``rows``,
    ``step`` and ``min_rows`` only, so one process and any number of ranks attack the same
    batches."""
    rows = np.asarray(rows)
    if min_rows >= step:
        return [rows[s:s + step] for s in range(0, len(rows), step)] or [rows]
    parts = max(-(-len(rows) // step), min(COUPLED_PARTS, len(rows) // min_rows), 1)
    return np.array_split(rows, parts)


def chunks_of(shard: Shard, rows: np.ndarray, step: int, coupled: bool,
              min_rows: int = MIN_ROWS) -> list[np.ndarray]:
    """This rank's batches of ``rows``: of its contiguous share, or (``coupled``) of
    :func:`coupled_batches`, dealt round-robin."""
    if coupled:
        return coupled_batches(rows, step, min_rows)[shard.rank::shard.world]
    mine = shard.part(rows)
    return [mine[s:s + step] for s in range(0, len(mine), step)]


@dataclass(frozen=True)
class Crafting:
    """One resumable crafting of adversarial rows: kept at ``path`` (the whole run, rank 0)
    and, while it runs, per batch next to it (``<stem>.rows-<first>-<count>.npz``)."""

    path: Path
    fingerprint: str
    shape: tuple[int, ...]          # of one image
    step: int                       # rows per batch
    coupled: bool                   # the attack couples a batch's images
    coupled_min_rows: int           # ... and is cut into batches of at least this many
    desc: str                       # progress bar label
    progress: bool


def craft_rows(shard: Shard, job: Crafting, rows: np.ndarray,
               craft: Callable[[np.ndarray], np.ndarray]
               ) -> tuple[np.ndarray, float, bool]:
    """(examples of ``rows`` in order, attack seconds summed over the ranks, resumed),
    the same on every rank: rank 0's finished file if it has one, else every rank crafts
    its batches (``craft(batch_rows)``), each kept as soon as done, and rank 0 keeps the
    joined run."""
    shape = (len(rows),) + job.shape
    cached = load_partial(job.path, job.fingerprint, shape) if shard.leader else None
    cached = shard.from_leader(cached)
    if cached is not None:
        return cached[0], cached[1], True
    mine = chunks_of(shard, rows, job.step, job.coupled, job.coupled_min_rows)
    bar = progress_bar(sum(len(c) for c in mine), job.desc, job.progress and shard.leader)
    done, files = {}, []
    for batch in mine:
        if not len(batch):
            continue
        file = job.path.with_name(f"{job.path.stem}.rows-{batch[0]}-{len(batch)}.npz")
        files.append(file)
        fingerprint = digest({"run": job.fingerprint, "rows": array_digest(batch)})
        kept = load_partial(file, fingerprint, (len(batch),) + job.shape)
        if kept is None:
            t0 = time.perf_counter()
            adv = np.asarray(craft(batch), dtype=np.float32)
            kept = (adv, time.perf_counter() - t0)
            save_partial(file, fingerprint, *kept)
        done[int(batch[0])] = kept
        bar.update(len(batch))
    bar.close()
    joined: dict[int, tuple] = {}
    for part in shard.all_gather(done):
        joined.update(part)
    order = sorted(joined)
    x_adv = (np.concatenate([joined[k][0] for k in order]) if order
             else np.zeros(shape, np.float32))
    seconds = float(sum(joined[k][1] for k in order))
    if shard.leader:
        save_partial(job.path, job.fingerprint, x_adv, seconds)
    for file in files:  # the joined run replaces this rank's batches
        file.unlink(missing_ok=True)
    return x_adv, seconds, False


@contextlib.contextmanager
def batch_independent(members) -> Iterator[None]:
    """Every forward pass of ``members`` sees at least :data:`MIN_ROWS` rows (zero images
    appended, their outputs dropped): torch's CPU kernels compute batches of 1-3 rows
    differently from larger ones, which would tie an image's result to its batch."""
    import torch

    sizes: list[int] = []

    def pad(module, args):
        x = args[0]
        sizes.append(len(x))
        if 0 < len(x) < MIN_ROWS:
            fill = x.new_zeros((MIN_ROWS - len(x),) + tuple(x.shape[1:]))
            return (torch.cat([x, fill]), *args[1:])
        return None

    def unpad(module, args, out):
        return out[:sizes.pop()]

    handles = [h for m in members for h in (m.register_forward_pre_hook(pad),
                                            m.register_forward_hook(unpad))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
