"""torchrun support: process group setup, rank helpers, collective reductions.

Under ``torchrun`` the environment carries RANK, LOCAL_RANK and WORLD_SIZE; `setup` starts the process group
(NCCL on GPUs, gloo on CPU) and everything else asks `rank()` / `world_size()`. A single process needs none
of it and every helper degrades to the identity.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "all_reduce_sum",
    "broadcast_object",
    "is_distributed",
    "local_rank",
    "rank",
    "setup",
    "teardown",
    "world_size",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def setup(device: str) -> bool:
    """Start the process group when launched by torchrun with WORLD_SIZE > 1; True when distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    return True


def teardown() -> None:
    """End the process group after a run every rank finished: a barrier first, so that no rank closes its Gloo
    connections while another still writes its files (a rank that left early could abort with SIGABRT under load)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks (in place; returns it)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
