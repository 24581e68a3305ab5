"""Depth images + intrinsics + extrinsics -> one world-frame point cloud (numpy only).

Points travel as (3, N) float32 arrays (one contiguous row per axis): every per-point step below is
a handful of vectorised passes over a row, and a 3x3 @ (3, N) product is one BLAS call.

Depth validity: 16UC1 values are millimetres (or `depth_scale` metres per unit), 32FC1 values are
metres; zero, NaN, inf, and anything outside [min_depth, max_depth] are invalid and never make a
point. Images must be rectified pinhole images (realsense2_camera publishes its aligned depth so);
a CameraInfo with non-zero distortion is refused unless `allow_distortion` is set, in which case
the coefficients are ignored (documented error of a few pixels at the image edges).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DepthFrame:
    """One camera's depth image at one instant, with everything needed to put it into `world`."""

    depth: np.ndarray  # (H, W) uint16 (depth_scale m per unit, 0 invalid) or float32/64 metres
    K: np.ndarray  # (3, 3) pinhole intrinsics of the (aligned) depth image
    T_world_cam: np.ndarray  # (4, 4) optical frame (z forward, x right, y down) -> world
    name: str = ""
    stamp_ns: int = 0
    size: tuple[int, int] | None = None  # (H, W) that camera_info announced, checked against depth
    distortion: np.ndarray | None = None  # camera_info D; non-zero is refused unless allowed
    colour: np.ndarray | None = None  # optional (H, W, 3) uint8 RGB aligned to depth, to colour the cloud

    def check(self, allow_distortion: bool = False) -> None:
        """Raise ValueError naming the camera and the problem when the frame cannot be fused."""
        who = self.name or "camera"
        if self.depth.ndim != 2:
            raise ValueError(f"{who}: depth must be a 2-D image, got shape {self.depth.shape}")
        if self.depth.dtype not in (np.uint16, np.float32, np.float64):
            raise ValueError(
                f"{who}: depth dtype {self.depth.dtype} is not supported; use 16UC1 (uint16 mm) or 32FC1 (metres)"
            )
        if self.size is not None and tuple(self.depth.shape) != tuple(self.size):
            raise ValueError(
                f"{who}: depth image is {self.depth.shape[1]}x{self.depth.shape[0]} but its camera_info says "
                f"{self.size[1]}x{self.size[0]}; use the aligned depth topic's own camera_info"
            )
        if np.shape(self.K) != (3, 3) or self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise ValueError(
                f"{who}: K must be a 3x3 pinhole matrix with fx, fy > 0, got {np.asarray(self.K).tolist()}"
            )
        if np.shape(self.T_world_cam) != (4, 4) or not np.all(np.isfinite(self.T_world_cam)):
            raise ValueError(f"{who}: T_world_cam must be a finite 4x4 transform")
        if not allow_distortion and self.distortion is not None and np.any(np.asarray(self.distortion) != 0):
            raise ValueError(
                f"{who}: camera_info has non-zero distortion {np.asarray(self.distortion).tolist()}; publish "
                "rectified (aligned) depth, or set allow_distortion: true to ignore the coefficients"
            )


class RayCache:
    """Per-pixel viewing rays (x/z, y/z, 1) of a strided pixel grid, computed once per (K, size, stride)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, np.ndarray] = {}

    def rays(self, K: np.ndarray, height: int, width: int, stride: int) -> np.ndarray:
        key = (np.asarray(K, dtype=np.float64).tobytes(), height, width, stride)
        rays = self._cache.get(key)
        if rays is None:
            fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
            v, u = np.mgrid[0:height:stride, 0:width:stride].astype(np.float64)
            y = (v - cy) / fy
            x = (u - cx - skew * y) / fx
            rays = np.stack([x.ravel(), y.ravel(), np.ones(x.size)]).astype(np.float32)
            if len(self._cache) > 32:  # intrinsics changed many times: do not grow without bound
                self._cache.clear()
            self._cache[key] = rays
        return rays


_RAYS = RayCache()
_CHUNK = 32768


def valid_depth(depth: np.ndarray, depth_scale: float, min_depth: float, max_depth: float) -> tuple:
    """(mask of valid pixels, depth in metres as float32 of the same shape)."""
    if depth.dtype == np.uint16:
        lo = max(1, int(np.ceil(min_depth / depth_scale)))  # 0 is "no measurement" by convention
        hi = int(min(np.floor(max_depth / depth_scale), 65535))
        mask = (depth >= lo) & (depth <= hi)
        return mask, depth.astype(np.float32) * np.float32(depth_scale)
    metres = depth.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        mask = (metres >= max(min_depth, 1e-6)) & (metres <= max_depth)  # NaN compares False
    return mask, metres


def deproject(
    frame: DepthFrame,
    stride: int = 1,
    depth_scale: float = 0.001,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
    rays: RayCache | None = None,
    box_min=None,
    box_max=None,
    return_pixels: bool = False,
):
    """World points (3, N) float32 of the valid pixels of `frame` (every `stride`-th row and column),
    restricted to the box [box_min, box_max] when given. With return_pixels, also the (N,) flat
    index of each point's pixel in the full-resolution image (to look up colour)."""
    d = frame.depth[::stride, ::stride] if stride > 1 else frame.depth
    mask, metres = valid_depth(d, depth_scale, min_depth, max_depth)
    mask = mask.ravel()
    z = metres.ravel()
    r = (rays or _RAYS).rays(frame.K, frame.depth.shape[0], frame.depth.shape[1], stride)
    T = np.asarray(frame.T_world_cam, dtype=np.float32)
    R, t = T[:3, :3], T[:3, 3:4]
    # Every pixel is transformed (invalid ones too: cheaper than compacting twice); one gather at
    # the end keeps the valid, in-box ones. world = R @ (ray * z) + t = (R @ ray) * z + t, in
    # cache-sized chunks (a large 3x3 @ (3, N) product makes OpenBLAS spin up threads that cost
    # more than they save on a busy 2-core machine).
    pts = np.empty_like(r)
    for s in range(0, r.shape[1], _CHUNK):
        out = pts[:, s : s + _CHUNK]
        np.matmul(R, r[:, s : s + _CHUNK], out=out)
        with np.errstate(invalid="ignore"):  # NaN depth: masked out below
            out *= z[s : s + _CHUNK]
        out += t
    if box_min is not None:
        with np.errstate(invalid="ignore"):
            mask &= crop_mask(pts, box_min, box_max)
    keep = np.flatnonzero(mask)
    pts = np.take(pts, keep, axis=1)  # take: ~6x faster than boolean 2-D indexing
    if not return_pixels:
        return pts
    ws = d.shape[1]
    return pts, (keep // ws) * stride * frame.depth.shape[1] + (keep % ws) * stride


def point_colours(frame: DepthFrame, pixels: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colours of the given full-resolution pixels (grey 128 without a colour image)."""
    if frame.colour is None:
        return np.full((len(pixels), 3), 128, np.uint8)
    c = np.asarray(frame.colour)
    if c.shape[:2] != frame.depth.shape or c.ndim != 3 or c.shape[2] < 3:
        raise ValueError(
            f"{frame.name or 'camera'}: colour image {c.shape} is not aligned with depth {frame.depth.shape}; "
            "use the aligned depth stream (aligned_depth_to_color) with the colour stream"
        )
    return np.take(c[..., :3].reshape(-1, 3), pixels, axis=0)


def crop_mask(points: np.ndarray, box_min, box_max) -> np.ndarray:
    """Boolean mask of the (3, N) points inside the axis-aligned box [box_min, box_max] (metres, world)."""
    m = (points[0] >= box_min[0]) & (points[0] <= box_max[0])
    m &= points[1] >= box_min[1]
    m &= points[1] <= box_max[1]
    m &= points[2] >= box_min[2]
    m &= points[2] <= box_max[2]
    return m


def fuse(
    frames: list[DepthFrame],
    stride: int = 1,
    depth_scale: float = 0.001,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
    box_min=None,
    box_max=None,
    allow_distortion: bool = False,
) -> np.ndarray:
    """Merge the frames into one world cloud (3, N) float32, cropped to the box when given."""
    if stride < 1:
        raise ValueError(f"pixel stride must be >= 1, got {stride}")
    parts = []
    for frame in frames:
        frame.check(allow_distortion)
        parts.append(deproject(frame, stride, depth_scale, min_depth, max_depth, None, box_min, box_max))
    if not parts:
        return np.zeros((3, 0), np.float32)
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def voxel_downsample(points: np.ndarray, voxel_size: float, colours: np.ndarray | None = None):
    """Centroid of the points in each occupied voxel (cube edge `voxel_size` m): (3, N) -> (3, M).

    With (N, 3) uint8 `colours`, returns (points, mean colour per voxel)."""
    if voxel_size <= 0 or points.shape[1] == 0:
        return points if colours is None else (points, colours)
    cells = np.floor(points / np.float32(voxel_size)).astype(np.int64)
    cells -= cells.min(axis=1, keepdims=True)
    dims = cells.max(axis=1) + 1
    keys = (cells[0] * dims[1] + cells[1]) * dims[2] + cells[2]
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    out = np.empty((3, uniq.size), np.float32)
    for axis in range(3):
        out[axis] = np.bincount(inverse, weights=points[axis], minlength=uniq.size) / counts
    if colours is None:
        return out
    rgb = np.empty((uniq.size, 3), np.uint8)
    for ch in range(3):
        rgb[:, ch] = np.round(np.bincount(inverse, weights=colours[:, ch], minlength=uniq.size) / counts)
    return out, rgb


def decimate(points: np.ndarray, max_points: int, seed: int = 0, colours: np.ndarray | None = None):
    """At most `max_points` of the (3, N) points, chosen uniformly (deterministic for a seed);
    (points, colours) when (N, 3) colours are given."""
    n = points.shape[1]
    if max_points <= 0 or n <= max_points:
        return points if colours is None else (points, colours)
    keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    return points[:, keep] if colours is None else (points[:, keep], colours[keep])
