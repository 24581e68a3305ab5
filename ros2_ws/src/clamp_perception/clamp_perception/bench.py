"""Benchmark: N depth cameras -> five 224x224x4 views, this pipeline vs. an Open3D pipeline.

    python -m clamp_perception.bench --cameras 4 --height 480 --width 640 --view-size 224 --frames 30

Both run on the same input (the analytic ALOHA table scene, exact depth as uint16 mm). The
reference is what one would write with Open3D: per camera RGBDImage.create_from_color_and_depth +
PointCloud.create_from_rgbd_image (with the extrinsic), merge, crop to the same box,
voxel_down_sample, then a numpy z-buffer per view (project, sort by depth, keep the nearest).
It is run on the full-resolution images (the issue's definition) and, as a stronger baseline,
on the same strided pixels this pipeline uses. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np


def _reference_open3d(o3d, frames, pipeline, views, poses, voxel: float, stride: int = 1) -> np.ndarray:
    """The Open3D-based pipeline. Returns (V, S, S, 4) views like ours."""
    merged = o3d.geometry.PointCloud()
    for f in frames.values():
        depth = np.ascontiguousarray(f.depth[::stride, ::stride])
        h, w = depth.shape
        K = f.K.copy()
        K[:2] /= stride
        K[0, 2] = f.K[0, 2] / stride
        K[1, 2] = f.K[1, 2] / stride
        color = np.zeros((h, w, 3), np.uint8)
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(color),
            o3d.geometry.Image(depth),
            depth_scale=1.0 / pipeline.depth_scale,
            depth_trunc=pipeline.max_depth,
            convert_rgb_to_intensity=False,
        )
        intr = o3d.camera.PinholeCameraIntrinsic(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        merged += o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, intr, np.linalg.inv(f.T_world_cam))
    box = o3d.geometry.AxisAlignedBoundingBox(pipeline.box_min.astype(np.float64), pipeline.box_max.astype(np.float64))
    cloud = merged.crop(box)
    if voxel > 0:
        cloud = cloud.voxel_down_sample(voxel)
    pts = np.asarray(cloud.points)
    out = np.zeros((len(views), views[0].height, views[0].width, 4), np.float32)
    homo = np.c_[pts, np.ones(len(pts))]
    for i, (view, T) in enumerate(zip(views, poses, strict=True)):
        p = homo @ np.linalg.inv(T).T
        z = p[:, 2]
        if view.projection == "pinhole":
            u = view.fx * p[:, 0] / z + view.cx
            v = view.fy * p[:, 1] / z + view.cy
        else:
            u = p[:, 0] / view.pixel_size + view.cx
            v = p[:, 1] / view.pixel_size + view.cy
        ui, vi = np.floor(u + 0.5).astype(np.int64), np.floor(v + 0.5).astype(np.int64)
        ok = (z > view.near) & (z < view.far) & (ui >= 0) & (ui < view.width) & (vi >= 0) & (vi < view.height)
        idx = np.flatnonzero(ok)
        idx = idx[np.argsort(-z[idx])]  # far to near: the nearest is written last and wins
        out[i, vi[idx], ui[idx], 0] = z[idx]
        out[i, vi[idx], ui[idx], 1:] = pts[idx]
    return out


_CPU_MS: dict[str, float] = {}  # desc -> median process CPU time per call (all threads), ms


def _timed(fn, n: int, desc: str) -> tuple[np.ndarray, object]:
    from tqdm import tqdm

    result = fn()  # warm-up (ray caches, allocator)
    times, cpu = [], []
    for _ in tqdm(range(n), desc=desc, leave=False):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    _CPU_MS[desc] = float(np.median(cpu))
    return np.array(times), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=4, help="number of depth cameras (1-4 of the ALOHA rig)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--view-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=30, help="timed frames per pipeline")
    parser.add_argument("--reference-frames", type=int, default=5, help="timed frames of the (slow) Open3D reference")
    parser.add_argument("--config", help="perception YAML (default: the package's)")
    parser.add_argument("--threads", type=int, default=2, help="pipeline worker threads (the node's default)")
    parser.add_argument("--voxel", type=float, default=0.005, help="reference voxel_down_sample size, metres")
    args = parser.parse_args(argv)
    if not 1 <= args.cameras <= 4:
        parser.error("--cameras must be 1..4 (the ALOHA rig has four)")

    from clamp_core import rig

    from clamp_perception.pipeline import PerceptionPipeline, load_config
    from clamp_perception.synthetic import SyntheticScene

    cfg = copy.deepcopy(load_config(args.config))
    cfg["view_size"] = args.view_size
    pipeline = PerceptionPipeline.from_config(cfg)
    pipeline.set_threads(args.threads)
    scene = SyntheticScene.aloha_table(height=args.height, width=args.width)
    cams = rig.CAMERAS[: args.cameras]
    scene.cameras = {c: scene.cameras[c] for c in cams}
    frames, wrists = scene.frames()

    t_fuse, cloud = _timed(lambda: pipeline.fuse(frames), args.frames, "fuse")
    t_render, _ = _timed(lambda: pipeline.render(cloud, wrists), args.frames, "render")
    t_total, (views, _) = _timed(lambda: pipeline.process(frames, wrists), args.frames, "pipeline")
    pipeline.set_threads(1)
    t_single, _ = _timed(lambda: pipeline.process(frames, wrists), args.frames, "pipeline, 1 thread")

    gpu_ms, gpu_name = None, None
    try:
        import torch

        if torch.cuda.is_available():  # the GPU figure; includes host<->device copies
            pipeline.set_backend("torch", "cuda")
            t_gpu, _ = _timed(lambda: pipeline.process(frames, wrists), args.frames, "pipeline, torch cuda")
            gpu_ms, gpu_name = round(float(np.median(t_gpu)), 2), torch.cuda.get_device_name()
            pipeline.set_backend("numpy")
    except ImportError:
        pass

    import open3d as o3d

    poses = pipeline.view_poses(wrists)
    t_ref, ref = _timed(
        lambda: _reference_open3d(o3d, frames, pipeline, pipeline.views, poses, args.voxel),
        args.reference_frames,
        "open3d reference",
    )
    stride = pipeline.stride_for(args.width)
    t_ref_s, _ = _timed(
        lambda: _reference_open3d(o3d, frames, pipeline, pipeline.views, poses, args.voxel, stride),
        args.reference_frames,
        "open3d reference (strided)",
    )
    both = (views[..., 0] > 0) & (ref[..., 0] > 0)
    agree = float(np.mean(np.abs(views[..., 0][both] - ref[..., 0][both]) < 0.01)) if both.any() else 0.0
    median = float(np.median(t_total))
    result = {
        "benchmark": "clamp_perception",
        "cameras": args.cameras,
        "height": args.height,
        "width": args.width,
        "view_size": args.view_size,
        "views": len(pipeline.views),
        "frames": args.frames,
        "pixel_stride": stride,
        "threads": args.threads,
        "points": int(cloud.shape[1]),
        "fuse_ms": round(float(np.median(t_fuse)), 2),
        "render_ms": round(float(np.median(t_render)), 2),
        "ms_per_frame": round(median, 2),
        "p95_ms": round(float(np.percentile(t_total, 95)), 2),
        "ms_per_frame_1_thread": round(float(np.median(t_single)), 2),
        # CPU time used per frame (all threads): what the frame costs when the cores are not shared
        "cpu_ms_per_frame": round(_CPU_MS["pipeline"], 2),
        "cpu_ms_per_frame_1_thread": round(_CPU_MS["pipeline, 1 thread"], 2),
        "gpu_ms_per_frame": gpu_ms,  # null: no CUDA device here
        "gpu": gpu_name,
        "reference_ms": round(float(np.median(t_ref)), 1),
        "speedup": round(float(np.median(t_ref)) / median, 1),
        "reference_strided_ms": round(float(np.median(t_ref_s)), 1),
        "speedup_vs_strided": round(float(np.median(t_ref_s)) / median, 1),
        "depth_agreement_1cm": round(agree, 3),
        "filled": round(float((views[..., 0] > 0).mean()), 3),
        "reference_filled": round(float((ref[..., 0] > 0).mean()), 3),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
