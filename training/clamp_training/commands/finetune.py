"""`python -m clamp_training finetune --init RUN --data DATASET... --out RUN2 [--unfreeze]`

The `train` command with stage `finetune` (preset `finetune`): the policy of a CLAMP pretraining run
(`--init` = finetune.clamp_checkpoint: RUN, whose policy/ is used, or an exported policy dir) trained
on a few demonstrations with its CLAMP image encoder frozen (no gradient, eval mode; `--unfreeze`
trains it too). State statistics come from the new data, the action range is widened to cover it.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from clamp_training.commands.common import parser, run

    ap = parser("python -m clamp_training finetune", __doc__.split("\n\n")[0])
    ap.add_argument("--init", required=True, help="CLAMP pretraining run dir (or an exported policy dir)")
    ap.add_argument("--unfreeze", action="store_true", help="also train the CLAMP image encoder")
    args = ap.parse_args(argv)
    finetune = {"clamp_checkpoint": args.init}
    if args.unfreeze:
        finetune["freeze_encoders"] = False
    return run(args, {"stage": "finetune", "finetune": finetune})


if __name__ == "__main__":
    sys.exit(main())
