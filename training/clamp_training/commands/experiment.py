"""`python -m clamp_training experiment [--config training/configs/experiment_cpu.yaml] [--out DIR]`:
the CLAMP few-demonstration experiment end to end on clamp_sim (clamp_training.experiment).

Finished runs are cached in OUT, so more cells add to a finished experiment: `--demos 5 10 20` after
the config's 5 and 10 trains only the 20-demonstration runs and reports all three."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from clamp_training.experiment import ExperimentError, load_config, run_experiment

    ap = argparse.ArgumentParser(prog="python -m clamp_training experiment", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="experiment YAML (training/configs/experiment_cpu.yaml, _gpu.yaml)")
    ap.add_argument("--out", default=None, help="results directory (default: the config's `out`)")
    ap.add_argument("--cache", default=None, help="cache of episodes and pretraining runs (default: the config's)")
    ap.add_argument("--demos", type=int, nargs="+", default=None, help="demonstration counts (default: the config's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: the config's)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in (("out", args.out), ("cache", args.cache)) if v}
    cells = {k: v for k, v in (("demos", args.demos), ("seeds", args.seeds)) if v}
    if cells:
        overrides["finetune"] = cells
    try:
        cfg = load_config(args.config, overrides)
    except ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc = run_experiment(cfg, progress=not args.no_progress)
    out = Path(cfg["out"])
    print((out / "results.md").read_text())
    print(json.dumps({"experiment": str(out), "aggregate": doc["aggregate"], "seconds": round(doc["total_seconds"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
