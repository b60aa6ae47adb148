"""Training past one process: torch.distributed, launched by ``torchrun``.

``torchrun`` starts one process per rank and hands each its place in environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); ``edgempir train`` sees them and
joins the process group (gloo on CPUs, nccl for ``ddp`` on GPUs). docs/DISTRIBUTED.md
has the commands, one node and several.
"""
from __future__ import annotations

import os

STRATEGIES = ("none", "members", "ddp")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun() -> bool:
    """True in a process that torchrun (or torch.distributed.run) started."""
    return all(k in os.environ for k in TORCHRUN_ENV)


def default_strategy() -> str:
    """``members`` under torchrun (the ensemble's natural parallelism), else ``none``."""
    return "members" if under_torchrun() else "none"
