"""A training run's resumable state: RUN/checkpoint/ (model, EMA and optimizer tensors and the torch
RNG state in safetensors, the rest as JSON; never pickle). Written by train, read by train (resume)
and export."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

CHECKPOINT_DIR = "checkpoint"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(run: Path, step: int, model, ema, opt, cfg, extra: dict) -> None:
    from safetensors.torch import save_file

    tmp = run / (CHECKPOINT_DIR + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.model.state_dict().items()})
    opt_t, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()  # a resumed run draws the noise an uninterrupted one would
    save_file(tensors, str(tmp / "train_state.safetensors"))
    meta = {
        "step": step,
        "ema": {"decay": ema.decay, "steps": ema.steps},
        "optimizer": opt_meta,
        "train_config": cfg.to_dict(),
        **extra,
    }
    (tmp / "train_state.json").write_text(json.dumps(meta, indent=1, default=float))
    final = run / CHECKPOINT_DIR
    old = run / (CHECKPOINT_DIR + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_train_state(run: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    from safetensors.torch import load_file

    ck = run / CHECKPOINT_DIR
    if not (ck / "train_state.json").is_file():
        return None
    return load_file(str(ck / "train_state.safetensors")), json.loads((ck / "train_state.json").read_text())


def _sub(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
