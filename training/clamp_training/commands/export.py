"""`python -m clamp_training export RUN --out POLICY_DIR [--raw]`: a training run -> a deployable policy.

The EMA weights (or the raw ones with --raw) of RUN/checkpoint with their config, version and sha256,
reloaded and checked bit-exactly (clamp_training.export). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from clamp_training.export import ExportError, export_run

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
