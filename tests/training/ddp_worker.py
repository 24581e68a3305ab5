"""Run under `torchrun --nproc_per_node 2 ddp_worker.py OUT`: one DDP (gloo) step of the tiny policy
on this rank's half of a fixed batch; rank 0 saves the averaged gradients to OUT (safetensors)."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from clamp_policy.models import DiffusionPolicy, tiny_config
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel as DDP


def fixed_batch(b: int = 4):
    g = torch.Generator().manual_seed(123)
    obs = {"views": torch.rand(b, 5, 4, 32, 32, generator=g), "state": torch.rand(b, 14, generator=g)}
    actions = torch.rand(b, 50, 14, generator=g)
    noise = torch.randn(b, 50, 14, generator=g)
    timesteps = torch.randint(0, 50, (b,), generator=g)
    return obs, actions, noise, timesteps


def fresh_policy() -> DiffusionPolicy:
    torch.manual_seed(0)
    return DiffusionPolicy(tiny_config())


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    obs, actions, noise, t = fixed_batch()
    half = slice(rank * 4 // world, (rank + 1) * 4 // world)
    net = DDP(fresh_policy())
    loss = net({k: v[half] for k, v in obs.items()}, actions[half], noise=noise[half], timesteps=t[half])
    loss.backward()
    if rank == 0:
        grads = {n: p.grad.contiguous() for n, p in net.module.named_parameters() if p.grad is not None}
        save_file(grads, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
