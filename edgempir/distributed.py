"""Training past one process: torch.distributed, launched by ``torchrun``.

``torchrun`` starts one process per rank and hands each its place in environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); ``edgempir train`` sees them and
joins the process group (gloo on CPUs, nccl for ``ddp`` on GPUs). docs/DISTRIBUTED.md
has the commands, one node and several.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from edgempir.errors import EdgempirError, TrainingError

T = TypeVar("T")

STRATEGIES = ("none", "members", "ddp")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun() -> bool:
    """True in a process that torchrun (or torch.distributed.run) started."""
    return all(k in os.environ for k in TORCHRUN_ENV)


def default_strategy() -> str:
    """``members`` under torchrun (the ensemble's natural parallelism), else ``none``."""
    return "members" if under_torchrun() else "none"


# A rank waits at a barrier while the others train their members: hours, not gloo's
# default 30 minutes. A rank that dies is noticed by torchrun, which stops the others.
TIMEOUT_S = 48 * 3600.0


@dataclass(frozen=True)
class Group:
    rank: int
    world: int

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def owns_member(self, index: int) -> bool:
        """Strategy members: member i is trained by rank i mod world (round-robin)."""
        return index % self.world == self.rank


@contextmanager
def process_group(strategy: str) -> Iterator[Group | None]:
    """Join torchrun's process group for ``strategy`` (None for ``none``)."""
    if strategy not in STRATEGIES:
        raise EdgempirError(f"--distributed {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if strategy == "none":
        yield None
        return
    if not under_torchrun():
        raise EdgempirError(f"--distributed {strategy} runs under torchrun (it sets "
                            f"{', '.join(TORCHRUN_ENV)}): torchrun --nproc-per-node N -m "
                            "edgempir.cli train ... (docs/DISTRIBUTED.md)")
    import torch.distributed as dist

    # training runs on CPUs (the trainer has no device placement yet): gloo, for both
    # strategies; nccl would need CUDA tensors
    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
    try:
        yield Group(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


def decided_by_leader(group: Group | None, decide: Callable[[], T]) -> T:
    """Run ``decide`` on rank 0 only and hand its result to every rank; an EdgempirError
    there is raised on every rank with the same one-line message (so that no rank waits
    for a run that rank 0 refused)."""
    if group is None:
        return decide()
    import torch.distributed as dist

    box: list = [None]
    if group.leader:
        try:
            box[0] = ("ok", decide())
        except EdgempirError as e:
            box[0] = ("error", type(e).__name__, str(e))
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        raise _error_class(box[0][1])(box[0][2])
    return box[0][1]


def _error_class(name: str) -> type[EdgempirError]:
    from edgempir import errors

    cls = getattr(errors, name, EdgempirError)
    return cls if isinstance(cls, type) and issubclass(cls, EdgempirError) else EdgempirError


def take_rank_zero_state(ddp_model) -> None:
    """Strategy ddp, after every step: every rank takes rank 0's weights and buffers.

    DDP averages gradients, which keeps the gradient-trained weights equal; but Brevitas
    initialises some quantizer scales from statistics of the first batches each rank sees
    (ParameterFromRuntimeStats), so without this the ranks would drift apart from step 1
    (measured: check_in_sync failed after epoch 1). The cost is one broadcast of the
    model per step, as much traffic again as DDP's own all-reduce."""
    import torch.distributed as dist

    net = ddp_model.module
    # the module's own tensors: Brevitas' state_dict computes some scales afresh (copies)
    for t in [*net.parameters(), *net.buffers()]:
        dist.broadcast(t.data, src=0)


def check_in_sync(model, what: str) -> None:
    """Strategy ddp: every rank must hold the very weights rank 0 saved (DDP averages the
    gradients, Adam is deterministic); a rank that drifted is a bug, not a result."""
    import hashlib

    import torch.distributed as dist

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    digests: list = [None] * dist.get_world_size()
    dist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise TrainingError(f"{what}: the ranks' weights differ under --distributed ddp "
                            "(out of sync)")


def sum_over_ranks(stats) -> None:
    """Strategy ddp: the epoch's loss and accuracies over every rank's share."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([stats.seen, stats.correct, stats.adv_correct, stats.loss_sum],
                     dtype=torch.float64)
    dist.all_reduce(t)
    stats.seen, stats.correct, stats.adv_correct = (int(v) for v in t[:3].tolist())
    stats.loss_sum = float(t[3])


@contextmanager
def eval_group() -> Iterator[Group | None]:
    """``edgempir eval`` under torchrun: join the process group (gloo: eval computes on
    CPUs, and nccl would need CUDA tensors); None in a plain process. docs/DISTRIBUTED.md,
    "Evaluation"."""
    if not under_torchrun():
        yield None
        return
    import torch.distributed as dist

    # a rank waits in a collective while another runs a long batch (Square at 5000 queries
    # on a batch of 250): the same generous timeout as training
    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
    try:
        yield Group(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


def launch_local(nproc: int, cli_args: list[str], n_images: int | None) -> int:
    """``edgempir CMD --nproc N``: torchrun's launcher (torch.distributed.launcher) with N
    ranks on 127.0.0.1 running ``edgempir CLI_ARGS``; returns the exit status (a rank's
    one-line error keeps its status 2; torchrun's own report of failed ranks is left out).
    More ranks than ``n_images`` is refused before anything starts."""
    import logging
    import socket
    import sys

    if under_torchrun():
        raise EdgempirError(f"--nproc {nproc} starts torchrun itself; under torchrun leave "
                            "it out (torchrun's --nproc-per-node says how many ranks)")
    if n_images is not None and nproc > n_images:
        raise EdgempirError(f"--nproc {nproc} for {n_images} test images: every rank needs "
                            f"at least one; use at most {n_images} ranks or a larger --n")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its banner
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: the loopback
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=f"edgempir-{os.getpid()}", rdzv_backend="c10d",
                          rdzv_endpoint=f"127.0.0.1:{port}", max_restarts=0,
                          monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)("-m", "edgempir.cli", *cli_args)
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values()]
        return 2 if 2 in codes else max(1, *codes)
    return 0
