"""`python -m clamp_perception.preview`: the CLAMP views as PNGs (depth colour-mapped, xyz as RGB, tiled).

From an episode bag (`--bag DIR [--frame N]`) or a synthetic ALOHA table scene. The command line lives
here, apart from the renderer, so no library module imports a CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def preview_rgb(view: np.ndarray, box_min=None, box_max=None) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 4) view -> (depth colour-mapped RGB, xyz as RGB), uint8; empty pixels black."""
    import matplotlib

    empty = view[..., 0] <= 0
    d = view[..., 0]
    lo, hi = np.percentile(d[~empty], [1, 99]) if (~empty).any() else (0.0, 1.0)
    dn = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
    depth_rgb = (matplotlib.colormaps["turbo"](dn)[..., :3] * 255).astype(np.uint8)
    xyz = view[..., 1:]
    if box_min is None:
        box_min = xyz[~empty].min(0) if (~empty).any() else np.zeros(3)
        box_max = xyz[~empty].max(0) if (~empty).any() else np.ones(3)
    xyz_rgb = (np.clip((xyz - box_min) / np.maximum(np.asarray(box_max) - box_min, 1e-6), 0, 1) * 255).astype(np.uint8)
    depth_rgb[empty] = 0
    xyz_rgb[empty] = 0
    return depth_rgb, xyz_rgb


def save_previews(views: np.ndarray, names, out_dir: str | Path, box_min=None, box_max=None) -> list[Path]:
    """Write <name>_depth.png and <name>_xyz.png per view and tiled.png (depth row over xyz row)."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, rows_d, rows_x = [], [], []
    for name, view in zip(names, views, strict=True):
        d, x = preview_rgb(view, box_min, box_max)
        for suffix, img in (("depth", d), ("xyz", x)):
            path = out_dir / f"{name}_{suffix}.png"
            plt.imsave(path, img)
            written.append(path)
        rows_d.append(d)
        rows_x.append(x)
    path = out_dir / "tiled.png"
    plt.imsave(path, np.concatenate([np.concatenate(rows_d, 1), np.concatenate(rows_x, 1)], 0))
    written.append(path)
    return written


def main(argv=None) -> int:
    try:
        return _main(argv)
    except (RuntimeError, ValueError, OSError, LookupError) as exc:  # bad bag/config: one clear line, no traceback
        print(f"clamp_perception.preview: error: {exc}", file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Render the CLAMP views to PNGs (depth colour-mapped, xyz as RGB, and the tiled input)."
    )
    parser.add_argument("--bag", help="episode bag directory (rosbag2 MCAP); default: a synthetic ALOHA table scene")
    parser.add_argument("--out", default="perception_views", help="output directory for the PNGs")
    parser.add_argument("--config", help="perception YAML (default: the package's config/perception.yaml)")
    parser.add_argument("--frame", type=int, default=0, help="which synchronised frame of the bag to render")
    args = parser.parse_args(argv)

    from clamp_perception.pipeline import PerceptionPipeline

    pipeline = PerceptionPipeline.from_config(args.config)
    if args.bag:
        from clamp_perception.bag_views import frames_from_bag

        frames = None
        for i, (stamp_ns, f, p) in enumerate(frames_from_bag(args.bag, pipeline)):
            if i == args.frame:
                frames, wrist_poses = f, p
                print(f"bag {args.bag}: frame {i} at {stamp_ns / 1e9:.3f} s")
                break
        if frames is None:
            raise SystemExit(f"bag {args.bag} has fewer than {args.frame + 1} complete frames")
    else:
        from clamp_perception.synthetic import SyntheticScene

        frames, wrist_poses = SyntheticScene.aloha_table().frames()
    views, cloud = pipeline.process(frames, wrist_poses)
    written = save_previews(views, pipeline.view_names, args.out, pipeline.box_min, pipeline.box_max)
    hit = (views[..., 0] > 0).mean(axis=(1, 2))
    for name, frac in zip(pipeline.view_names, hit, strict=True):
        print(f"{name}: {frac * 100:.1f}% of pixels filled")
    print(f"{cloud.shape[0]} fused points; wrote {len(written)} PNGs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
