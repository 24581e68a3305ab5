"""What the training commands share (train, pretrain, finetune): their flags and running them."""

from __future__ import annotations

import argparse
import json
import os
import sys


def parser(prog: str, description: str, data_required: bool = True) -> argparse.ArgumentParser:
    from clamp_training.config import PRESETS

    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--data", nargs="+", required=data_required, help="converted dataset dirs and/or episode bag dirs")
    ap.add_argument("--out", required=True, help="run directory (resumed when it holds a checkpoint)")
    ap.add_argument("--preset", default=None, choices=sorted(PRESETS), help="default: the stage's preset")
    ap.add_argument("--config", default=None, help="YAML/JSON with TrainConfig keys (policy: {...}, clamp: {...})")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch-size", type=int, dest="batch_size")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--device")
    ap.add_argument("--num-workers", type=int, dest="num_workers")
    ap.add_argument("--threads", type=int, help="torch threads per process (0: torch default)")
    ap.add_argument("--amp", action="store_true", default=None, help="bf16 autocast on CUDA")
    ap.add_argument("--no-cache-views", dest="cache_views", action="store_false", default=None)
    ap.add_argument("--no-resume", action="store_true", help="ignore RUN/checkpoint and start over")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument(
        "--until", type=int, default=None, help="stop after this step (checkpointed; run again to continue)"
    )
    ap.add_argument("--convert-workers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--no-progress", action="store_true")
    return ap


OVERRIDE_FLAGS = ("steps", "batch_size", "lr", "seed", "device", "num_workers", "amp", "cache_views", "threads")


def run(args: argparse.Namespace, overrides: dict) -> int:
    """Build the config from the parsed flags (+ stage-specific overrides), train, print the summary."""
    from clamp_core.config import ConfigError

    from clamp_training.convert import ConvertError
    from clamp_training.dataset import DatasetError
    from clamp_training.stages import StageError
    from clamp_training.train import TrainError, build_config, train

    over = {k: getattr(args, k) for k in OVERRIDE_FLAGS}
    over.update(overrides)
    try:
        cfg = build_config(args.preset, args.config, over)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = train(
            cfg,
            list(args.data),
            args.out,
            resume=not args.no_resume,
            export=not args.no_export,
            progress=not args.no_progress,
            convert_workers=args.convert_workers,
            until=args.until,
        )
    except (ConvertError, DatasetError, ConfigError, StageError, TrainError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, default=str))
    return 0
