"""`python -m clamp_training finetune --init RUN --data DATASET... --out RUN2 [--unfreeze]`

The `train` command with stage `finetune` (preset `finetune`, or --preset/--config): the config's policy
trained on a few demonstrations around the image encoder of a CLAMP checkpoint (`--init` =
finetune.clamp_checkpoint: a pretraining run RUN, whose policy/ is used, an exported policy dir, or the
shipped models/clamp_cpu), frozen (no gradient, eval mode, its tokens computed once per camera frame;
`--unfreeze` trains it too). Everything but the encoder is trained from scratch, or with `--init-policy`
(finetune.init_policy) from the checkpoint's pretrained policy, as CLAMP fine-tunes; state statistics and
the action range come from the new data. Data whose views or action layout differ from the checkpoint's
is refused before training.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from clamp_training.commands.common import parser, run

    ap = parser("python -m clamp_training finetune", __doc__.split("\n\n")[0])
    ap.add_argument("--init", required=True, help="CLAMP pretraining run dir (or an exported policy dir)")
    ap.add_argument("--unfreeze", action="store_true", help="also train the CLAMP image encoder")
    ap.add_argument(
        "--init-policy", action="store_true", help="start the policy from the checkpoint's (same architecture)"
    )
    args = ap.parse_args(argv)
    finetune = {"clamp_checkpoint": args.init}
    if args.init_policy:
        finetune["init_policy"] = True
    if args.unfreeze:
        finetune["freeze_encoders"] = False
    return run(args, {"stage": "finetune", "finetune": finetune})


if __name__ == "__main__":
    sys.exit(main())
