"""A training run -> a deployable policy (the `export` command is clamp_training.commands.export).

Writes the EMA weights (or the raw weights) of RUN/checkpoint with their config, version and sha256
(clamp_policy.models.checkpoint), then loads the result back and checks that every tensor
round-tripped bit-exactly. Works for every stage: a pretraining run exports the policy inside the
CLAMP model.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path

import torch


class ExportError(RuntimeError):
    pass


def export_run(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, use_ema: bool = True, metadata: dict | None = None
) -> Path:
    from clamp_policy.models import DiffusionPolicy, PolicyConfig, load_policy, save_policy

    from .run_state import CHECKPOINT_DIR, _sub, load_train_state

    run = Path(run_dir)
    state = load_train_state(run)
    if state is None:
        raise ExportError(
            f"{run / CHECKPOINT_DIR} holds no training checkpoint; train first "
            f"(`python -m clamp_training train --data ... --out {run}`)"
        )
    tensors, meta = state
    tc = meta["train_config"]
    cfg = PolicyConfig.from_dict(tc["policy"])
    policy = DiffusionPolicy(cfg)
    prefix = ("ema." if use_ema else "model.") + ("policy." if tc.get("stage") == "pretrain" else "")
    policy.load_state_dict(_sub(tensors, prefix), strict=True)
    info = {
        "run": str(run.resolve()),
        "stage": tc.get("stage", "diffusion"),
        "step": meta["step"],
        "weights": "ema" if use_ema else "raw",
        "ema_decay": meta["ema"]["decay"],
        "datasets": meta.get("datasets", []),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "train_config": {k: v for k, v in tc.items() if k != "policy"},
        **(metadata or {}),
    }
    out = save_policy(policy, out_dir, info)
    loaded = load_policy(out)
    ref = policy.state_dict()
    bad = [k for k, v in loaded.state_dict().items() if not torch.equal(v, ref[k])]
    if bad:
        raise ExportError(f"exported weights differ from the run's after reloading: {bad[:5]}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Kept for callers of `clamp_training.export.main`: the command is clamp_training.commands.export."""
    from .__main__ import main as dispatch

    return dispatch(["export", *(argv if argv is not None else sys.argv[1:])])
