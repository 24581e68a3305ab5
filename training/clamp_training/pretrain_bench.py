"""CLAMP pretraining benchmark: throughput and held-out retrieval, against baselines in the same run.

    python -m clamp_training.pretrain_bench [--episodes 24] [--steps 300] [--out DIR]

Variants, all on the same contrastive_synthetic data and held-out episodes:
  string      the 3D-aware encoder (STRING relative 3D attention), jointly with the diffusion policy
  learned     the ablation: learned absolute position embeddings, raw xyz in the patches
  untrained   the string model's architecture before any step (what retrieval gives for free)
Prints one JSON line: samples/s, final losses and retrieval per variant; each variant's run dir (loss
curves, embedding plot) is under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_training.pretrain_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=24)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--config", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    ap.add_argument("--out", default="/tmp/pretrain_bench")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    import numpy as np

    from .clamp_checkpoint import build_clamp_model
    from .config import build_config
    from .contrastive_data import ClampDataset, open_clamp_data, write_synthetic_dataset
    from .dataset import dataset_stats, policy_stats, split_episodes
    from .retrieval import evaluate
    from .train import train

    out = Path(args.out)
    over = {"stage": "pretrain", "steps": args.steps, "batch_size": args.batch_size, "threads": args.threads}
    over["device"] = args.device
    base_cfg = build_config(None, args.config, over)
    size = base_cfg.policy.image_encoder.view_size
    data = [str(write_synthetic_dataset(out / "data", args.episodes, size=size))]
    result = {"episodes": args.episodes, "steps": args.steps, "batch_size": args.batch_size, "device": args.device}
    result["threads"] = args.threads

    # untrained baseline: same architecture, same held-out samples, no step taken
    torch.manual_seed(base_cfg.seed)
    model, pcfg = build_clamp_model(base_cfg)
    bdata = open_clamp_data(data, pcfg.chunk_length, model.history, pcfg.image_encoder.view_size)
    train_rows, val_rows = split_episodes(bdata, base_cfg.val_episodes, base_cfg.val_fraction)
    prompt = {"position_bins": base_cfg.prompt.position_bins, "progress_bins": base_cfg.prompt.progress_bins}
    model.policy.set_normalization(policy_stats(dataset_stats(data)))
    everything = ClampDataset(bdata, None, prompt)
    model.text.fit_standardisation([everything.prompt(int(i)) for i in train_rows])
    val = torch.utils.data.Subset(everything, np.asarray(val_rows).tolist())
    with torch.no_grad():
        untrained = evaluate(model.eval(), val, None, base_cfg.retrieval_samples)
    result["untrained"] = {"retrieval": untrained}

    for variant, pos in (("string", "string"), ("learned", "learned")):
        enc = {"options": {**base_cfg.policy.image_encoder.options, "pos_encoding": pos}}
        cfg = build_config(None, args.config, {**over, "policy": {"image_encoder": enc}})
        summary = train(cfg, data, out / variant, resume=False, progress=True)
        result[variant] = {k: summary.get(k) for k in ("samples_per_s", "final_loss", "retrieval")}
    print(json.dumps({"clamp_pretrain_bench": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
