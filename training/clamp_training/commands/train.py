"""`python -m clamp_training train --data DATASET_OR_BAGS... --out RUN [--preset P] [--config FILE] [--stage S]`

The one training command (clamp_training.train): the diffusion policy from scratch (stage
`diffusion`), CLAMP pretraining (`pretrain`) or fine-tuning with the frozen CLAMP encoders
(`finetune`); `pretrain` and `finetune` are this command with their stage preset. Config: the preset
(default: the stage's), then --config FILE (YAML, TrainConfig keys; unknown keys are refused), then
the flags. Re-running the same command resumes from RUN/checkpoint. Prints one JSON line (summary).

Scale out: `torchrun --nproc_per_node N -m clamp_training train ...` (DDP; gloo on CPU, NCCL on GPU);
--batch-size is the global batch, split across processes; bf16 autocast on GPU with --amp.
"""

from __future__ import annotations

import sys

from clamp_training.commands.common import parser, run


def main(argv: list[str] | None = None) -> int:
    from clamp_training.config import STAGES

    ap = parser("python -m clamp_training train", __doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=STAGES, default=None, help="default: the config's (else diffusion)")
    args = ap.parse_args(argv)
    return run(args, {"stage": args.stage})


if __name__ == "__main__":
    sys.exit(main())
