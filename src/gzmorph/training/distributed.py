"""Process groups for multi-GPU (or multi-process CPU) training with DDP.

Two ways in: ``torchrun --nproc_per_node=K -m gzmorph train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address, and :func:`setup` joins
that group; ``gzmorph train --gpus K`` (or ``train(..., processes=K)``) starts the K
processes itself with :func:`launch`.  NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gzmorph.errors import GzmorphError

__all__ = ["Dist", "setup", "launch", "all_sum"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device_type: str) -> Dist:
    """Join the process group described by the environment, if there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def all_sum(values: list[float] | torch.Tensor, d: Dist, device: torch.device) -> torch.Tensor:
    """Sum a small vector or a device tensor over all processes (identity when not distributed)."""
    if isinstance(values, torch.Tensor):
        t = values.to(device=device, dtype=torch.float64)  # no host round trip for device tensors
    else:
        t = torch.as_tensor(values, dtype=torch.float64, device=device)
    if d.enabled:
        if t.device.type == "cuda":
            dist.all_reduce(t)
        else:  # gloo reduces CPU tensors
            t = t.cpu()
            dist.all_reduce(t)
    return t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, kwargs: dict,
            errors: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    try:
        fn(*args, **kwargs)
    except GzmorphError as exc:
        # A user error (a refused resume...): handed to the parent, which raises it as the
        # one-line error it is; a traceback from a child would bury the message.
        errors.put(exc)
        sys.exit(2)  # SystemExit passes torch's wrapper without a printed traceback
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(fn: Callable[..., Any], world: int, *args: Any, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` in ``world`` processes on this machine, one group.

    A :class:`~gzmorph.errors.GzmorphError` raised in a process is raised here, as it is.
    """
    if world < 2:
        raise ValueError(f"launch needs at least 2 processes, got {world}")
    errors = mp.get_context("spawn").SimpleQueue()
    try:
        mp.start_processes(_worker, args=(world, _free_port(), fn, args, kwargs, errors), nprocs=world, join=True,
                           start_method="spawn")
    except (mp.ProcessExitedException, mp.ProcessRaisedException):  # a user error queued wins
        if errors.empty():
            raise
        raise errors.get() from None
