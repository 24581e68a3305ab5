"""`python -m clamp_training convert BAGS... --out DATASET`: episode bags -> a converted dataset
(clamp_training.convert: views through the perception pipeline, state, action, colour, task)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from clamp_training.convert import ConvertError, ConvertOptions, convert
    from clamp_training.dataset import EPISODES_DIR, open_episode

    ap = argparse.ArgumentParser(prog="python -m clamp_training convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("bags", nargs="+", help="episode bag dirs, or folders holding them")
    ap.add_argument("--out", required=True, help="dataset directory (created; resumed if it exists)")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="episodes in parallel")
    ap.add_argument("--no-views", action="store_true", help="skip rendering the CLAMP views")
    ap.add_argument("--rgb-scale", type=float, default=0.25, help="colour image scale (0: do not store)")
    ap.add_argument("--control-hz", type=float, default=50.0)
    ap.add_argument(
        "--sync-tolerance",
        type=float,
        default=None,
        help="s between the cameras' depth frames of "
        "one observation (default: the perception config's sync.tolerance_ms)",
    )
    ap.add_argument("--perception-config", default=None, help="YAML for clamp_perception's pipeline")
    ap.add_argument("--overwrite", action="store_true", help="discard an existing dataset at --out")
    args = ap.parse_args(argv)
    opts = ConvertOptions(
        control_hz=args.control_hz,
        views=not args.no_views,
        rgb_scale=args.rgb_scale,
        sync_tolerance_s=args.sync_tolerance,
        perception_config=args.perception_config,
    )
    t = time.perf_counter()
    try:
        doc = convert(args.bags, args.out, opts, workers=args.workers, overwrite=args.overwrite)
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    dur = sum(
        float(open_episode(Path(args.out) / EPISODES_DIR / f"{e['name']}.zarr").attrs["duration_s"])
        for e in doc["episodes"]
    )
    print(
        f"{len(doc['episodes'])} episodes, {doc['num_steps']} steps, {dur:.1f} episode-s in "
        f"{time.perf_counter() - t:.1f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
