"""Depth frames + extrinsics -> CLAMP's five views and the fused cloud. ROS-free: the perception
node and training/ (bags -> dataset) both call `PerceptionPipeline.process`, so the robot and
the dataset see the same computation.

    pipeline = PerceptionPipeline.from_config()            # the package's config/perception.yaml
    views, cloud = pipeline.process(frames, wrist_poses)   # (5, 224, 224, 4) float32, (N, 3) float32
    tiled = pipeline.tile(views)                           # (224, 1120, 4) in rig.VIEW_NAMES order

`frames`: {camera name: fusion.DepthFrame} (depth + K + T_world_cam). `wrist_poses`: {follower arm
or TF frame: T_world_gripper 4x4} for the wrist views. With TF data instead of poses, use
`frames_from_buffer` with a transforms.TransformBuffer (what the node and the bag reader do).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from clamp_core import rig
from clamp_core.config import read_yaml

from clamp_perception.fusion import DepthFrame, decimate, deproject, fuse, point_colours, voxel_downsample
from clamp_perception.render import ViewCamera, render, tile
from clamp_perception.transforms import TransformBuffer

PACKAGE = "clamp_perception"
AUTO_STRIDE_COLUMNS = 320  # pixel_stride 'auto': use about this many depth columns per camera


class CameraImage(NamedTuple):
    """One camera's depth image as it comes off the wire (pose still to be looked up in TF)."""

    depth: np.ndarray  # (H, W) uint16 mm or float32 m
    K: np.ndarray  # (3, 3) from camera_info
    size: tuple[int, int] | None  # (H, W) from camera_info
    frame_id: str  # optical frame (header.frame_id); "" -> rig.color_optical_frame(camera)
    distortion: np.ndarray | None = None  # camera_info D
    stamp_ns: int | None = None  # the image's own stamp; None -> the observation time


def default_config_path() -> Path:
    """config/perception.yaml beside the sources (dev / symlink install), else in the ament share dir."""
    here = Path(__file__).resolve().parents[1] / "config" / "perception.yaml"
    if here.is_file():
        return here
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        cand = Path(prefix) / "share" / PACKAGE / "config" / "perception.yaml"
        if prefix and cand.is_file():
            return cand
    raise FileNotFoundError(
        f"{PACKAGE}: config/perception.yaml not found beside {Path(__file__).parent} nor in any "
        "AMENT_PREFIX_PATH share dir; pass a config path, or build/source the workspace"
    )


def load_config(path_or_dict: str | Path | dict | None = None) -> dict:
    if isinstance(path_or_dict, dict):
        return path_or_dict
    return read_yaml(path_or_dict or default_config_path(), "perception config")


def _section(cfg: dict, name: str) -> dict:
    sec = cfg.get(name, {}) or {}
    if not isinstance(sec, dict):
        raise ValueError(f"perception config: section {name!r} must be a mapping, got {type(sec).__name__}")
    return sec


class PerceptionPipeline:
    def __init__(
        self,
        views: list[ViewCamera],
        box_min=None,
        box_max=None,
        pixel_stride: int | str = 1,
        depth_scale: float = 0.001,
        min_depth: float = 0.0,
        max_depth: float = np.inf,
        allow_distortion: bool = False,
        cloud_voxel: float = 0.0,
        cloud_max_points: int = 0,
        fill_min_neighbours: int = 0,
        threads: int = 1,
        config: dict | None = None,
    ) -> None:
        if not views:
            raise ValueError("the pipeline needs at least one view")
        if (box_min is None) != (box_max is None):
            raise ValueError("give both crop corners (min and max) or neither")
        if box_min is not None and np.any(np.asarray(box_min) >= np.asarray(box_max)):
            raise ValueError(f"crop box min {list(box_min)} must be below max {list(box_max)} on every axis")
        if pixel_stride != "auto" and (not isinstance(pixel_stride, int) or pixel_stride < 1):
            raise ValueError(f"pixel_stride must be an integer >= 1 or 'auto', got {pixel_stride!r}")
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"depth range must satisfy 0 <= min < max, got [{min_depth}, {max_depth}]")
        self.views = views
        self.box_min = None if box_min is None else np.asarray(box_min, dtype=np.float32)
        self.box_max = None if box_max is None else np.asarray(box_max, dtype=np.float32)
        self.pixel_stride = pixel_stride
        self.depth_scale = float(depth_scale)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.allow_distortion = bool(allow_distortion)
        self.cloud_voxel = float(cloud_voxel)
        self.cloud_max_points = int(cloud_max_points)
        self.fill_min_neighbours = int(fill_min_neighbours)
        self._executor = None
        self.set_threads(threads)
        self._torch = None  # TorchRenderer when the torch backend is selected
        self.config = config or {}

    @classmethod
    def from_config(cls, path_or_dict: str | Path | dict | None = None) -> PerceptionPipeline:
        """From a perception YAML path or an already-parsed dict (None: the package's default file)."""
        cfg = load_config(path_or_dict)
        depth, crop, cloud = _section(cfg, "depth"), _section(cfg, "crop"), _section(cfg, "cloud")
        views_cfg = _section(cfg, "views")
        if not views_cfg:
            raise ValueError("perception config: `views` is empty; list the views in rig.VIEW_NAMES order")
        names = list(views_cfg)
        if set(names) == set(rig.VIEW_NAMES):  # the rig's views: always tiled in rig.VIEW_NAMES order
            names = list(rig.VIEW_NAMES)
        size = int(cfg.get("view_size", rig.VIEW_SIZE))
        views = [ViewCamera.from_config(name, views_cfg[name] or {}, size, size) for name in names]
        render_cfg = _section(cfg, "render")
        pipeline = cls(
            views,
            box_min=crop.get("min"),
            box_max=crop.get("max"),
            pixel_stride=depth.get("pixel_stride", 1),
            depth_scale=float(depth.get("scale_m_per_unit", 0.001)),
            min_depth=float(depth.get("min_m", 0.0)),
            max_depth=float(depth.get("max_m", 10.0)),
            allow_distortion=bool(depth.get("allow_distortion", False)),
            cloud_voxel=float(cloud.get("voxel_m", 0.0)),
            cloud_max_points=int(cloud.get("max_points", 0)),
            fill_min_neighbours=int(render_cfg.get("fill_min_neighbours", 0)),
            threads=int(render_cfg.get("threads", 1)),
            config=cfg,
        )
        pipeline.set_backend(str(render_cfg.get("backend", "numpy")), str(render_cfg.get("device", "cuda")))
        return pipeline

    def set_threads(self, threads: int) -> None:
        """Worker threads for per-camera fusion and per-view rendering (numpy drops the GIL in its
        loops); 1 = everything in the caller's thread (best when processes already fill the cores)."""
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.threads = int(threads)
        self._executor = ThreadPoolExecutor(self.threads, "clamp_perception") if threads > 1 else None

    def set_backend(self, backend: str = "numpy", device: str = "cuda") -> None:
        """'numpy' (default, CPU) or 'torch' on `device` (e.g. 'cuda', 'cpu'): same results, see torch_backend."""
        if backend == "numpy":
            self._torch = None
        elif backend == "torch":
            from clamp_perception.torch_backend import TorchRenderer

            self._torch = TorchRenderer(device)
        else:
            raise ValueError(f"render backend must be 'numpy' or 'torch', got {backend!r}")

    # ---------------------------------------------------------------------------------- queries
    @property
    def view_names(self) -> list[str]:
        return [v.name for v in self.views]

    @property
    def follow_frames(self) -> list[str]:
        """TF frames whose pose the wrist views need (rig.gripper_frame of each followed arm)."""
        return [v.follow for v in self.views if v.follow is not None]

    @staticmethod
    def tile(views: np.ndarray) -> np.ndarray:
        return tile(views)

    # ------------------------------------------------------------------------------------- work
    def fuse(self, frames) -> np.ndarray:
        """World cloud (3, N) float32 of the frames, cropped."""
        frames = list(frames.values()) if isinstance(frames, dict) else list(frames)
        if self._executor is None or len(frames) < 2:
            parts = [self._fuse_one(f) for f in frames]
        else:
            parts = list(self._executor.map(self._fuse_one, frames))
        if not parts:
            return np.zeros((3, 0), np.float32)
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def stride_for(self, width: int) -> int:
        """Pixel stride for a depth image of this width ('auto': about 320 columns are used)."""
        if self.pixel_stride == "auto":
            return max(1, int(round(width / AUTO_STRIDE_COLUMNS)))
        return int(self.pixel_stride)

    def _fuse_one(self, frame: DepthFrame) -> np.ndarray:
        return fuse(
            [frame],
            self.stride_for(frame.depth.shape[1]),
            self.depth_scale,
            self.min_depth,
            self.max_depth,
            self.box_min,
            self.box_max,
            self.allow_distortion,
        )

    def view_poses(self, wrist_poses: dict[str, np.ndarray] | None) -> list[np.ndarray]:
        """T_world_view per view; wrist poses may be keyed by follower arm or by TF frame."""
        by_frame = {}
        for key, T in (wrist_poses or {}).items():
            by_frame[rig.gripper_frame(key) if key in rig.FOLLOWERS else key] = np.asarray(T, dtype=np.float64)
        return [v.pose(by_frame) for v in self.views]

    def render(self, points: np.ndarray, wrist_poses: dict[str, np.ndarray] | None) -> np.ndarray:
        return render(
            points, self.views, self.view_poses(wrist_poses), self.fill_min_neighbours, executor=self._executor
        )

    def process(self, frames, wrist_poses: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (views (V, H, W, 4) float32 [depth, x, y, z], fused cloud (N, 3) float32 in world)."""
        if self._torch is not None:
            return self._torch.process(self, frames, wrist_poses)
        points = self.fuse(frames)
        views = self.render(points, wrist_poses)
        return views, points.T

    def fuse_coloured(self, frames) -> tuple[np.ndarray, np.ndarray]:
        """The fused cloud (N, 3) with (N, 3) uint8 colours from each DepthFrame's aligned `colour`
        image (grey where a frame has none). Same points, same order as `fuse`."""
        frames = list(frames.values()) if isinstance(frames, dict) else list(frames)
        pts, rgb = [], []
        for f in frames:
            f.check(self.allow_distortion)
            p, pix = deproject(
                f,
                self.stride_for(f.depth.shape[1]),
                self.depth_scale,
                self.min_depth,
                self.max_depth,
                None,
                self.box_min,
                self.box_max,
                return_pixels=True,
            )
            pts.append(p)
            rgb.append(point_colours(f, pix))
        if not pts:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        return np.concatenate(pts, axis=1).T, np.concatenate(rgb, axis=0)

    def cloud_for_publishing(self, cloud: np.ndarray, seed: int = 0, colours: np.ndarray | None = None):
        """(N, 3) -> voxel-downsampled and decimated (M, 3) per the `cloud:` config;
        (points, colours) when (N, 3) uint8 colours are given."""
        pts = np.ascontiguousarray(cloud.T)
        if colours is None:
            return decimate(voxel_downsample(pts, self.cloud_voxel), self.cloud_max_points, seed).T
        pts, rgb = voxel_downsample(pts, self.cloud_voxel, colours)
        pts, rgb = decimate(pts, self.cloud_max_points, seed, rgb)
        return pts.T, rgb

    # ------------------------------------------------------------------------------ TF plumbing
    def frames_from_buffer(
        self,
        images: dict[str, CameraImage | tuple],
        buffer: TransformBuffer,
        stamp_ns: int | None,
    ) -> tuple[dict[str, DepthFrame], dict[str, np.ndarray]]:
        """Poses from TF for the camera images (each at its own stamp when it has one) and for the
        followed frames (at `stamp_ns`, the observation time; None = latest).

        images: {camera: CameraImage(depth, K, (H, W) from camera_info, optical frame id, D, stamp_ns)}.
        Raises transforms.TransformError naming the frames when a pose is unknown or stale.
        """
        frames = {}
        for cam, img in images.items():
            img = CameraImage(*img)
            t = img.stamp_ns if img.stamp_ns is not None else stamp_ns
            T = buffer.lookup(rig.WORLD_FRAME, img.frame_id or rig.color_optical_frame(cam), t)
            frames[cam] = DepthFrame(img.depth, img.K, T, cam, t or 0, size=img.size, distortion=img.distortion)
        wrist = {f: buffer.lookup(rig.WORLD_FRAME, f, stamp_ns) for f in self.follow_frames}
        return frames, wrist
