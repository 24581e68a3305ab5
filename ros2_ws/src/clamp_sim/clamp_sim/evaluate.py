"""`python -m clamp_sim.evaluate`: success rate of a policy in clamp_sim (see clamp_sim.evaluation).

python -m clamp_sim.evaluate --task transfer_cube insertion place_cube --episodes 10 --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clamp_sim.evaluation import evaluate


def main(argv: list[str] | None = None) -> None:
    from clamp_sim.scripted import make_scripted_policy
    from clamp_sim.tasks import TASKS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", nargs="+", default=sorted(TASKS), choices=sorted(TASKS))
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("sim_eval"))
    ap.add_argument("--policy", default="scripted", help="'scripted' or 'module:factory' (factory(task) -> policy)")
    ap.add_argument("--execute-steps", type=int, default=10)
    ap.add_argument("--image-size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    args = ap.parse_args(argv)
    if args.policy == "scripted":
        factory = make_scripted_policy
    else:
        import importlib

        mod, _, fn = args.policy.partition(":")
        if not fn:
            raise SystemExit(f"--policy {args.policy!r}: expected 'scripted' or 'package.module:factory'")
        factory = getattr(importlib.import_module(mod), fn)
    summary, _ = evaluate(
        factory,
        args.task,
        args.episodes,
        args.seed,
        args.out,
        tuple(args.image_size),
        args.execute_steps,
        policy_name=args.policy,
    )
    print(json.dumps({"evaluate": args.policy, "out": str(args.out), **summary}))


if __name__ == "__main__":
    main()
