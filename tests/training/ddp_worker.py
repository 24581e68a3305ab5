"""Run under `torchrun --nproc_per_node 2 ddp_worker.py OUT [COMMAND ARGS...]`: one DDP (gloo) step of
the tiny policy on this rank's half of a fixed batch; rank 0 saves the averaged gradients to OUT
(safetensors). With a COMMAND, the worker then runs `python -m clamp_training COMMAND ARGS...` in the
same process, inside the same process group (clamp_training.distributed uses a group that is already
up), and destroys the group after it: test_train.py's two torchrun tests share one launch of the two
processes. (Destroying the group and letting the command start a second one in the same processes
hangs in the command's first barrier now and then: the second rendezvous on torchrun's store is not
reliable.)"""

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


def main(out: str, keep_group: bool = False) -> None:
    """The DDP step in a new process group, destroyed afterwards unless `keep_group`."""
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
    if not keep_group:
        dist.destroy_process_group()
    print(f"ddp_worker rank {rank}/{world}: DDP step done", flush=True)


if __name__ == "__main__":
    command = sys.argv[2:]
    main(sys.argv[1], keep_group=bool(command))
    if command:
        from clamp_training.__main__ import main as clamp_training_main

        rc = clamp_training_main(command)
        dist.destroy_process_group()
        sys.exit(rc)
