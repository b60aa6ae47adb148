"""One epoch of one member: the data order, the batches (in memory or streamed from an
image folder), the optimizer steps, and the test-split predictions (edgempir.train runs
the epochs, checkpoints and the run directory)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edgempir.data import DEFAULT_EPS
from edgempir.errors import TrainingError
from edgempir.members import MemberSpec

if TYPE_CHECKING:
    from edgempir.train import TrainConfig


def lr_at(step: int, total: int, base: float, schedule: str = "cosine") -> float:
    if schedule == "constant":
        return base
    return 0.5 * base * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def member_seed(seed: int, index: int) -> int:
    return seed * 1009 + index


@dataclass
class Member:
    index: int
    spec: MemberSpec


def predict_logits(model, x_uint8: np.ndarray, batch_size: int = 1000):
    """All logits of a model on uint8 images, in eval mode, without gradients."""
    import torch

    outs = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(x_uint8), batch_size):
            xb = torch.from_numpy(x_uint8[s:s + batch_size]).float().div_(255.0)
            outs.append(model(xb))
    return torch.cat(outs)


@dataclass
class EpochStats:
    seen: int = 0
    correct: int = 0
    adv_correct: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0
    skipped: dict = field(default_factory=dict)   # path -> why it did not decode

    def add(self, loss: float, out, out_adv, yb) -> None:
        self.seen += len(yb)
        self.correct += int((out.argmax(1) == yb).sum())
        if out_adv is not None:
            self.adv_correct += int((out_adv.argmax(1) == yb).sum())
        self.loss_sum += loss * len(yb)

    def postfix(self, adversarial: bool, t0: float) -> dict:
        post = {"loss": f"{self.loss_sum / self.seen:.3f}", "acc": f"{self.correct / self.seen:.3f}"}
        if adversarial:
            post["adv_acc"] = f"{self.adv_correct / self.seen:.3f}"
        post["img_s"] = f"{self.seen / (time.perf_counter() - t0):.0f}"
        return post


def epoch_batches(cfg: TrainConfig, data, order: np.ndarray, bs: int, stats: EpochStats):
    """Per step of one epoch: (images as floats in [0, 1], labels, the positions in
    ``order`` of the batch's images). In-memory data sets index their arrays; an image
    folder streams through a DataLoader's workers, and images that do not decode are left
    out of their batch (recorded in ``stats.skipped``)."""
    import torch

    from edgempir.datasets.folder import LazyImages, loader

    if not isinstance(data.x_train, LazyImages):
        x_all, y_all = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
        for start in range(0, len(order), bs):
            idx = torch.from_numpy(order[start:start + bs])
            yield x_all[idx].float().div_(255.0), y_all[idx], slice(start, start + bs)
        return
    split = data.x_train.split
    batches = [order[s:s + bs] for s in range(0, len(order), bs)]
    for k, (xb, yb, ok, reasons) in enumerate(loader(split, batches, cfg.workers)):
        for i, good, why in zip(batches[k], ok.tolist(), reasons):
            if not good:
                stats.skipped[split.entries[int(i)].path] = why
        rows = np.arange(k * bs, k * bs + len(yb))[ok.numpy()]
        yield xb[ok].float().div_(255.0), yb[ok], rows


def epoch_order(cfg: TrainConfig, m: Member, epoch: int, n: int, group=None
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """The epoch's image order, flips and batch size. One process: a permutation seeded by
    (seed, member, epoch). Strategy ddp: this rank's share of a DistributedSampler seeded
    by the member and set to the epoch, in batches of batch_size / world (the ranks'
    batches together make one batch of the recipe's size)."""
    if group is None:
        rng = np.random.default_rng([cfg.seed, m.index, epoch])
        return rng.permutation(n), rng.random(n) < 0.5, cfg.batch_size
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=group.world, rank=group.rank,
                                 shuffle=True, seed=member_seed(cfg.seed, m.index))
    sampler.set_epoch(epoch)
    order = np.fromiter(iter(sampler), dtype=np.int64)
    flips = np.random.default_rng([cfg.seed, m.index, epoch, group.rank]).random(len(order))
    return order, flips < 0.5, math.ceil(cfg.batch_size / group.world)


def train_epoch(cfg: TrainConfig, data, model, opt, m: Member, epoch: int,
                progress: bool, group=None) -> EpochStats:
    """One epoch of optimizer steps; ``group``: strategy ddp's process group (``model``
    is then the DistributedDataParallel wrapper)."""
    import torch
    from tqdm import tqdm

    from edgempir.adv_train import default_step_size, training_step_loss
    from edgempir.distributed import take_rank_zero_state

    eps = cfg.adv_eps if cfg.adv_eps is not None else DEFAULT_EPS[cfg.dataset]
    step_size = cfg.adv_step_size or default_step_size(eps, cfg.adv_steps)
    order, flips, bs = epoch_order(cfg, m, epoch, len(data.y_train), group)
    steps_per_epoch = math.ceil(len(order) / bs)
    total_steps = steps_per_epoch * cfg.epochs
    torch.manual_seed(member_seed(cfg.seed, m.index) * 100003 + epoch)
    model.train()
    t0 = time.perf_counter()
    stats = EpochStats()
    bar = tqdm(epoch_batches(cfg, data, order, bs, stats), total=steps_per_epoch,
               disable=not progress, leave=False, unit="batch",
               desc=f"member {m.index} ({m.spec}) epoch {epoch + 1}/{cfg.epochs}")
    for step, (xb, yb, rows) in enumerate(bar):
        if not len(yb):  # every image of the batch failed to decode
            continue
        if cfg.augment == "hflip":
            flip = torch.from_numpy(flips[rows])
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch * steps_per_epoch + step, total_steps, cfg.lr, cfg.schedule)
        loss, out, out_adv = training_step_loss(model, xb, yb, cfg.adv_train, eps,
                                                cfg.adv_steps, step_size, cfg.trades_beta,
                                                label_smoothing=cfg.label_smoothing)
        if not math.isfinite(loss.item()):
            raise TrainingError(
                f"member {m.index} ({m.spec}) diverged: its training loss became "
                f"{loss.item()} at epoch {epoch + 1}, step {step + 1} (learning rate "
                f"{opt.param_groups[0]['lr']:.3g}); rerun with a smaller --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if group is not None:
            take_rank_zero_state(model)
        stats.add(loss.item(), out, out_adv, yb)
        if step % 20 == 0 or step == steps_per_epoch - 1:
            bar.set_postfix(stats.postfix(cfg.adv_train != "none", t0))
    bar.close()
    stats.seconds = time.perf_counter() - t0
    if not stats.seen:
        raise TrainingError(f"member {m.index} ({m.spec}): no training image of epoch "
                            f"{epoch + 1} could be decoded")
    return stats


def predict_test_split(model, data, workers: int = 0, batch_size: int = 1000):
    """(logits, labels) of ``model`` on the test split. An image folder is streamed, and
    images that do not decode are left out (the same ones for every member)."""
    import torch

    from edgempir.datasets.folder import LazyImages, loader

    if not isinstance(data.x_test, LazyImages):
        return predict_logits(model, data.x_test, batch_size), torch.from_numpy(data.y_test)
    split = data.x_test.split
    idx = np.arange(len(split))
    outs, ys = [], []
    model.eval()
    with torch.no_grad():
        for xb, yb, ok, _ in loader(split, [idx[s:s + batch_size] for s in
                                            range(0, len(idx), batch_size)], workers):
            outs.append(model(xb[ok].float().div_(255.0)))
            ys.append(yb[ok])
    return torch.cat(outs), torch.cat(ys)
