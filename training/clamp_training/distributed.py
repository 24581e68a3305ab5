"""The one DDP setup of the training loop: `torchrun --nproc_per_node N -m clamp_training train ...`
(gloo on CPU, NCCL on GPU). Without torchrun (WORLD_SIZE unset or 1) everything is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    owns_group: bool = False  # this process started the process group (and ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def init_distributed(device: str = "auto") -> Dist:
    """The process group when started by torchrun (once per process), and this rank's device."""
    import torch.distributed as dist

    device = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if device == "cuda":
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    return Dist(rank, world, local, device, owns)


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.owns_group:
        import torch.distributed as dist

        dist.destroy_process_group()
