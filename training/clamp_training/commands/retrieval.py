"""`python -m clamp_training retrieval --run RUN [--data DATASET...] [--episodes held-out|all]
[--max-samples 256] [--out DIR]`: retrieval accuracy of a CLAMP pretraining run's embeddings
(clamp_training.retrieval) on its held-out episodes (the run's own split) or on every episode.
Prints one JSON line; writes retrieval.json and embeddings.png."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_training retrieval", description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="CLAMP pretraining run dir (RUN or RUN/clamp)")
    ap.add_argument("--data", nargs="+", default=None, help="converted dataset dir(s) (default: the run's own)")
    ap.add_argument(
        "--episodes",
        choices=("held-out", "all"),
        default="held-out",
        help="held-out: the run's validation split (its val_episodes / val_fraction); all: every episode",
    )
    ap.add_argument("--max-samples", type=int, default=256)
    ap.add_argument("--out", default=None, help="where retrieval.json and embeddings.png go (default: RUN)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    from clamp_training.clamp_checkpoint import load_clamp
    from clamp_training.contrastive_data import ClampDataset, open_clamp_data
    from clamp_training.dataset import split_episodes
    from clamp_training.retrieval import evaluate

    model, cfg, meta = load_clamp(args.run, device=args.device)
    data = args.data or meta.get("data")
    if not data:
        ap.error("the run does not record its datasets; pass --data DATASET...")
    pcfg = model.policy.cfg
    base = open_clamp_data(data, pcfg.chunk_length, model.history, pcfg.image_encoder.view_size)
    ds = ClampDataset(
        base, None, {"position_bins": cfg.prompt.position_bins, "progress_bins": cfg.prompt.progress_bins}
    )
    if args.episodes == "held-out":
        _, rows = split_episodes(base, cfg.val_episodes, cfg.val_fraction)
        if len(rows):
            ds = torch.utils.data.Subset(ds, rows.tolist())
        else:
            print("note: the run has no held-out episodes; using all episodes", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.run)
    res = evaluate(model, ds, out, max_samples=args.max_samples)
    print(json.dumps({"retrieval": res, "embeddings_png": str(out / "embeddings.png")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
