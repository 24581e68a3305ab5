"""`python -m clamp_training export RUN --out POLICY_DIR [--raw]`: a training run -> a deployable policy.

Writes the EMA weights (or the raw weights with --raw) of RUN/checkpoint with their config, version
and sha256 (clamp_policy.models.checkpoint), then loads the result back and checks that every tensor
round-tripped bit-exactly before reporting success.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path

import torch


class ExportError(RuntimeError):
    pass


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, use_ema: bool = True) -> Path:
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
    cfg = PolicyConfig.from_dict(meta["train_config"]["policy"])
    policy = DiffusionPolicy(cfg)
    policy.load_state_dict(_sub(tensors, "ema." if use_ema else "model."), strict=True)
    metadata = {
        "run": str(run.resolve()),
        "step": meta["step"],
        "weights": "ema" if use_ema else "raw",
        "ema_decay": meta["ema"]["decay"],
        "datasets": meta.get("datasets", []),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "train_config": {k: v for k, v in meta["train_config"].items() if k != "policy"},
    }
    out = save_policy(policy, out_dir, metadata)
    loaded = load_policy(out)
    ref = policy.state_dict()
    bad = [k for k, v in loaded.state_dict().items() if not torch.equal(v, ref[k])]
    if bad:
        raise ExportError(f"exported weights differ from the run's after reloading: {bad[:5]}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_training export", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="training run directory (holds checkpoint/)")
    ap.add_argument("--out", required=True, help="policy directory to write")
    ap.add_argument("--raw", action="store_true", help="export the raw instead of the EMA weights")
    args = ap.parse_args(argv)
    try:
        out = export_run(args.run, args.out, use_ema=not args.raw)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    doc = json.loads((out / "config.json").read_text())
    print(json.dumps({"policy": str(out), "sha256": doc["weights_sha256"], "step": doc["metadata"]["step"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
