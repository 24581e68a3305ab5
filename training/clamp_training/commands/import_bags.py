"""`python -m clamp_training import-bags BAG... --task TEXT --out DATASET`: plain `ros2 bag record` bags
-> a dataset (clamp_training.import_bags)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from clamp_training.convert import ConvertError, ConvertOptions
    from clamp_training.import_bags import ImportBagError, import_bags, parse_split, parse_success

    ap = argparse.ArgumentParser(
        prog="python -m clamp_training import-bags", description="plain `ros2 bag record` bags -> dataset"
    )
    ap.add_argument("bags", nargs="+", help="rosbag2 bag directories (metadata.yaml + .mcap or .db3)")
    ap.add_argument("--out", required=True, help="dataset directory")
    ap.add_argument("--task", required=True, help="the task text of these demonstrations")
    ap.add_argument(
        "--success",
        default="true",
        help="true|false|unknown, one for all or a comma list (one per bag or per --split)",
    )
    ap.add_argument("--split", action="append", default=[], metavar="START:END", help="cut one bag (s, repeatable)")
    ap.add_argument("--episodes-dir", default=None, help="where the episode bags go (default: OUT_episodes)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-views", action="store_true", help="skip rendering the CLAMP views")
    ap.add_argument("--rgb-scale", type=float, default=0.25, help="colour image scale (0: do not store)")
    ap.add_argument("--control-hz", type=float, default=50.0)
    args = ap.parse_args(argv)
    try:
        opts = ConvertOptions(control_hz=args.control_hz, views=not args.no_views, rgb_scale=args.rgb_scale)
        doc = import_bags(
            args.bags,
            args.out,
            args.task,
            [parse_success(s) for s in args.success.split(",")],
            [parse_split(s) for s in args.split],
            args.episodes_dir,
            opts,
            workers=args.workers,
        )
    except (ImportBagError, ConvertError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(doc['episodes'])} episodes, {doc['num_steps']} steps -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
