"""Data-parallel training under torchrun: the one place that knows about ranks.

`torchrun --nproc_per_node=K -m trainer ...` sets RANK, LOCAL_RANK and WORLD_SIZE; the trainer then
wraps the model in DistributedDataParallel (NCCL on GPUs, gloo on CPU), each rank on its own GPU
(`cuda:LOCAL_RANK`). Tokens per iteration stay as configured: the gradient accumulation is divided
across the ranks, each rank taking its own share of the iteration's micro-batches (all ranks draw
the same micro-batches from the iteration's generator, so K ranks train on exactly the batches one
process would), and DDP's average over ranks of gradients divided by the local accumulation is the
single process's mean over all micro-batches. Rank 0 alone prints, writes metrics and checkpoints;
every rank evaluates the same batches (so all agree on the val loss), and what rank 0 decides
(stop, diverged) is broadcast so all ranks leave the loop together. Without torchrun nothing here
does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def micro_batches(self, accumulation: int) -> range:
        """This rank's share of an iteration's `accumulation` micro-batches (their indices)."""
        share = accumulation // self.world_size
        return range(self.rank * share, (self.rank + 1) * share)


def ranks_from_env() -> Ranks:
    """The ranks torchrun set (one rank, 0, without it)."""
    return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("WORLD_SIZE", 1)))


def is_main_process() -> bool:
    """Whether this process is the one that writes (rank 0, or the only one)."""
    return ranks_from_env().main


def start(ranks: Ranks, device_type: str) -> None:
    if ranks.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def stop(ranks: Ranks) -> None:
    if ranks.enabled and dist.is_initialized():
        dist.barrier()  # no rank tears the group down while another still talks to it
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.enabled:
        dist.barrier()


def from_main(ranks: Ranks, value: Any) -> Any:
    """`value` as rank 0 has it, on every rank."""
    if not ranks.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
