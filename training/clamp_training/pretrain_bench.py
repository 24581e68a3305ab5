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

    from .contrastive_data import ClampDataset, dataset_stats, open_clamp_data, split_episodes, write_synthetic_dataset
    from .dataset import policy_stats
    from .pretrain import pretrain
    from .pretrain_common import build_model, load_config
    from .retrieval import evaluate

    out = Path(args.out)
    train = {"steps": args.steps, "batch_size": args.batch_size, "threads": args.threads}
    base_cfg = load_config(args.config, {"train": train})
    size = int(base_cfg["policy"]["image_encoder"]["view_size"])
    data = [str(write_synthetic_dataset(out / "data", args.episodes, size=size))]
    result = {"episodes": args.episodes, "steps": args.steps, "batch_size": args.batch_size, "device": args.device}
    result["threads"] = args.threads

    # untrained baseline: same architecture, same held-out samples, no step taken
    torch.manual_seed(int(base_cfg["train"]["seed"]))
    model, pcfg = build_model(base_cfg)
    bdata = open_clamp_data(data, pcfg.chunk_length, model.history, pcfg.image_encoder.view_size)
    train_eps, val_eps = split_episodes(
        len(bdata.episodes), float(base_cfg["train"]["val_fraction"]), int(base_cfg["train"]["seed"])
    )
    model.policy.set_normalization(policy_stats(dataset_stats(data)))
    model.text.fit_standardisation(ClampDataset(bdata, train_eps, base_cfg["prompt"]).all_prompts())
    val = ClampDataset(bdata, val_eps, base_cfg["prompt"])
    with torch.no_grad():
        untrained = evaluate(model.eval(), val, None, int(base_cfg["train"]["retrieval_samples"]))
    result["untrained"] = {"retrieval": untrained}

    for variant, pos in (("string", "string"), ("learned", "learned")):
        cfg = load_config(
            args.config,
            {
                "train": train,
                "policy": {"image_encoder": {"options": {"pos_encoding": pos}}},
            },
        )
        summary = pretrain(cfg, data, out / variant, device=args.device, progress=True)
        result[variant] = {k: summary.get(k) for k in ("samples_per_s", "final", "retrieval")}
    print(json.dumps({"clamp_pretrain_bench": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
