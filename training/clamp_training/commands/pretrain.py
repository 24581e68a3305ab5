"""`python -m clamp_training pretrain --data DATASET... --out RUN [--config FILE]`: CLAMP pretraining.

The `train` command with stage `pretrain` (preset `clamp_small`; `--preset clamp_paper` for GPUs):
the 3D-aware image encoder, the action and text encoders with the three-way sigmoid contrastive loss,
jointly with the diffusion policy. Leaves RUN/clamp/ (the CLAMP checkpoint), RUN/policy/ (the
pretrained policy: `finetune --init RUN` starts from it), retrieval.json, embeddings.png. With
`--synthetic N`, N contrastive_synthetic episodes are written to RUN/synthetic_data and used as data.
"""

from __future__ import annotations

import sys
from pathlib import Path

OLD_PRESETS = {"small": "clamp_small", "paper": "clamp_paper"}


def main(argv: list[str] | None = None) -> int:
    from clamp_training.commands.common import parser, run

    argv = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(argv[:-1]):  # the preset names this command had before it was `train --stage pretrain`
        if a == "--preset" and argv[i + 1] in OLD_PRESETS:
            argv[i + 1] = OLD_PRESETS[argv[i + 1]]
    ap = parser("python -m clamp_training pretrain", __doc__.split("\n\n")[0], data_required=False)
    ap.add_argument("--synthetic", type=int, default=0, metavar="EPISODES", help="train on synthetic episodes")
    args = ap.parse_args(argv)
    data = list(args.data or [])
    if args.synthetic:
        from clamp_core.config import ConfigError

        from clamp_training.config import build_config
        from clamp_training.contrastive_data import write_synthetic_dataset

        try:
            size = build_config(args.preset, args.config, {"stage": "pretrain"}).policy.image_encoder.view_size
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        data.append(str(write_synthetic_dataset(Path(args.out) / "synthetic_data", args.synthetic, size=size)))
    if not data:
        ap.error("give --data DATASET... (datasets or episode bags) or --synthetic EPISODES")
    args.data = data
    return run(args, {"stage": "pretrain"})


if __name__ == "__main__":
    sys.exit(main())
