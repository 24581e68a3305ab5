"""`python -m clamp_sim.generate`: scripted demonstrations as episode bags (see clamp_sim.demonstrations).

python -m clamp_sim.generate --task transfer_cube --episodes 10 --seed 0 --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from clamp_sim.demonstrations import generate


def main(argv: list[str] | None = None) -> None:
    from clamp_sim.tasks import TASKS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(240, 320),
        metavar=("H", "W"),
        help="camera resolution in the bags (K is derived for it)",
    )
    ap.add_argument("--camera-hz", type=float, default=10.0, help="camera frame rate in sim time")
    ap.add_argument("--workers", type=int, default=1, help="recording processes (one per free core)")
    args = ap.parse_args(argv)
    if args.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    res = generate(
        args.task, args.episodes, args.seed, args.out, tuple(args.image_size), args.camera_hz, workers=args.workers
    )
    rate = float(np.mean([r["success"] for r in res]))
    summary = {"task": args.task, "episodes": len(res), "success_rate": rate, "out": str(args.out)}
    # cpu_s: CPU time of this process and its workers, incl. the renderer's threads (wall time
    # depends on the machine's load)
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu0 + children.ru_utime + children.ru_stime
    summary.update(wall_s=round(time.perf_counter() - wall0, 1), cpu_s=round(cpu, 1))
    summary["steps_mean"] = round(float(np.mean([r["steps"] for r in res])), 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
