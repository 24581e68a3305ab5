"""Z-buffer point renderer for CLAMP's virtual views (numpy only), tiling, and PNG previews.

Each view is a 224x224 image with four float32 channels, in rig.VIEW_CHANNELS order:
  0 depth: distance of the nearest point along the view's optical axis (z of the view frame), metres
  1-3 x, y, z: that point's coordinates in `world`, metres
EMPTY PIXELS (no point projects there) are 0 in all four channels; depth == 0 is the test for
"empty" (a real point never has depth 0, since points closer than `near` > 0 are culled).

Views are optical frames (z forward, x right, y down, REP 103 camera convention); pixel (row r,
col c) has its centre at image coordinates (u, v) = (c, r), as in OpenCV/CameraInfo. A pinhole
view projects u = fx x/z + cx; an orthographic view u = x / pixel_size + cx (depth is still z).

Tiling (`tile`) puts the views side by side in the order given (rig.VIEW_NAMES in the pipeline):
(V, H, W, C) -> (H, V*W, C).

Z-buffer: the nearest point per pixel is found with `np.minimum.at` over int32 keys (depth
quantised over the view's [near, far] in the high bits, point index in the low bits), so no sort
is needed. Depth resolution of the test: (far - near) / 2^(31 - index bits), e.g. 0.3 mm for
200k points and a 2.5 m range; within one level the lower point index wins (deterministic). The
depth channel itself is exact (recomputed from the winning point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from clamp_core import rig
from clamp_core.geometry import invert_transform, look_at

EMPTY = 0.0  # value of all channels of an empty pixel
_NO_HIT = np.iinfo(np.int32).max
_MAX_INDEX_BITS = 21  # up to 2M points; leaves >= 1023 depth levels between near and far


@dataclass
class ViewCamera:
    """A virtual camera. Fixed views have `T_world_view`; wrist views `follow` a TF frame with `T_frame_view`."""

    name: str
    width: int = 224
    height: int = 224
    projection: str = "pinhole"  # or "orthographic"
    fx: float = 0.0  # pinhole focal lengths, pixels
    fy: float = 0.0
    cx: float = 0.0  # principal point, pixels (centre of the image: (width - 1) / 2)
    cy: float = 0.0
    pixel_size: float = 0.0  # orthographic: metres per pixel
    near: float = 0.01  # metres; points closer than this along the axis are not drawn
    far: float = 3.0
    T_world_view: np.ndarray | None = None  # fixed views
    follow: str | None = None  # TF frame the view is attached to (wrist views)
    T_frame_view: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        if self.projection not in ("pinhole", "orthographic"):
            raise ValueError(
                f"view {self.name!r}: projection must be 'pinhole' or 'orthographic', not {self.projection!r}"
            )
        if self.projection == "pinhole" and (self.fx <= 0 or self.fy <= 0):
            raise ValueError(f"view {self.name!r}: a pinhole view needs fx, fy > 0 (or fov_deg in the config)")
        if self.projection == "orthographic" and self.pixel_size <= 0:
            raise ValueError(f"view {self.name!r}: an orthographic view needs pixel_size > 0 (or extent_m)")
        if (self.T_world_view is None) == (self.follow is None):
            raise ValueError(f"view {self.name!r}: give exactly one of a fixed pose or a `follow` frame")
        if not 0 < self.near < self.far:
            raise ValueError(f"view {self.name!r}: need 0 < near < far, got near={self.near}, far={self.far}")

    @classmethod
    def from_config(cls, name: str, cfg: dict, width: int, height: int) -> ViewCamera:
        """Build from a perception.yaml `views:` entry (see config/perception.yaml for the keys)."""
        known = {
            "projection",
            "fov_deg",
            "extent_m",
            "eye",
            "target",
            "up",
            "near",
            "far",
            "follow_arm",
            "follow_frame",
        }
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"view {name!r}: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
        for key in ("eye", "target"):
            if key not in cfg:
                raise ValueError(f"view {name!r}: missing {key!r} (a 3-vector, metres)")
        projection = cfg.get("projection", "pinhole")
        kw: dict = dict(
            name=name,
            width=width,
            height=height,
            projection=projection,
            cx=(width - 1) / 2,
            cy=(height - 1) / 2,
            near=float(cfg.get("near", 0.01)),
            far=float(cfg.get("far", 3.0)),
        )
        if projection == "pinhole":
            fov = math.radians(float(cfg.get("fov_deg", 60.0)))  # horizontal field of view
            kw["fx"] = kw["fy"] = (width / 2) / math.tan(fov / 2)
        else:
            kw["pixel_size"] = float(cfg.get("extent_m", 1.0)) / width  # extent_m = width of the view
        pose = look_at(cfg["eye"], cfg["target"], cfg.get("up", (0.0, 0.0, 1.0)))
        if cfg.get("follow_arm") or cfg.get("follow_frame"):
            # wrist views: eye/target/up are in the followed frame (rig.gripper_frame(arm) by default)
            kw["follow"] = str(cfg.get("follow_frame") or rig.gripper_frame(str(cfg["follow_arm"])))
            kw["T_frame_view"] = pose
        else:
            kw["T_world_view"] = pose
        return cls(**kw)

    def pose(self, frame_poses: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """T_world_view now; a following view needs T_world_<follow> in `frame_poses`."""
        if self.follow is None:
            return self.T_world_view
        if not frame_poses or self.follow not in frame_poses:
            raise KeyError(f"view {self.name!r} follows frame {self.follow!r}, but no pose was given for it")
        return frame_poses[self.follow] @ self.T_frame_view

    def projection_matrix(self, T_world_view: np.ndarray) -> np.ndarray:
        """(3, 4) P with P @ [p_world; 1] = (u*z, v*z, z) for pinhole, (u, v, z) for orthographic (+0.5: floor)."""
        T_view_world = invert_transform(T_world_view)
        if self.projection == "pinhole":
            K = np.array([[self.fx, 0, self.cx + 0.5], [0, self.fy, self.cy + 0.5], [0, 0, 1]])
        else:
            s = 1.0 / self.pixel_size
            K = np.array([[s, 0, 0], [0, s, 0], [0, 0, 1]])
        P = K @ T_view_world[:3]
        if self.projection == "orthographic":
            P[0, 3] += self.cx + 0.5
            P[1, 3] += self.cy + 0.5
        return P


def _zbuffer_view(points, P, view, offset, zbuf, chunk, dump, bits) -> None:
    """Scatter-min the keys of the points that project into `view` into zbuf[offset : offset + H*W].

    Key (int32) = depth quantised over [near, far] in the high bits | point index in the low `bits`.
    """
    h, w = view.height, view.width
    A, b = P[:, :3], P[:, 3:4]
    levels = (1 << (31 - bits)) - 1
    z_scale, z_near = np.float32(levels / (view.far - view.near)), np.float32(view.near)
    dump_local = np.float32(dump - offset)  # exact: below 2^24
    n = points.shape[1]
    index = np.arange(n, dtype=np.int32)
    # chunks of a few 10k points keep every temporary in cache: ~3x faster than whole-array passes
    for start in range(0, n, chunk):
        uvz = A @ points[:, start : start + chunk]  # small BLAS call: single-threaded, cache-resident
        uvz += b
        u, v, z = uvz
        if view.projection == "pinhole":
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = np.reciprocal(z)
            u *= inv
            v *= inv
        m = z > view.near
        m &= z < view.far
        m &= u >= 0
        m &= u < w
        m &= v >= 0
        m &= v < h
        count = int(np.count_nonzero(m))
        if count == 0:
            continue
        # pixel index floor(v) * w + floor(u) in float32 (exact integers below 2^24), then one cast
        np.floor(v, out=v)
        np.floor(u, out=u)
        v *= w
        v += u
        if count > 0.6 * m.size:  # most points land in the view: send the rest to a dump slot
            np.putmask(v, ~m, dump_local)
            pix = v.astype(np.int64)
            z -= z_near
            z *= z_scale
            with np.errstate(invalid="ignore"):  # culled points may be NaN/inf: their key is never used
                key = z.astype(np.int32)
            key <<= bits
            key |= index[start : start + m.size]
        else:  # few points land in the view (wrist views): compact them first
            sel = np.flatnonzero(m)
            pix = v[sel].astype(np.int64)
            zs = z[sel]
            zs -= z_near
            zs *= z_scale
            key = zs.astype(np.int32)
            key <<= bits
            key |= index[sel + start]
        pix += offset
        np.minimum.at(zbuf, pix, key)


def _fill_holes(zbuf: np.ndarray, n_views: int, h: int, w: int, min_neighbours: int) -> np.ndarray:
    """Empty pixels with >= min_neighbours of their 4 neighbours filled take the nearest neighbour's point.

    Sparse clouds (pixel stride, oblique surfaces) leave 1-px pinholes and 1-px aliasing lines
    between points; min_neighbours=2 closes both without growing straight silhouettes (a pixel just
    outside an edge has one filled neighbour).
    """
    z = zbuf.reshape(n_views, h, w)
    valid = z != _NO_HIT
    best = np.full_like(z, _NO_HIT)
    count = np.zeros(z.shape, np.uint8)
    for dst, src in (
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),  # from the pixel above
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),  # below
        ((slice(None), slice(None), slice(1, None)), (slice(None), slice(None), slice(None, -1))),  # left
        ((slice(None), slice(None), slice(None, -1)), (slice(None), slice(None), slice(1, None))),  # right
    ):
        np.minimum(best[dst], z[src], out=best[dst])
        count[dst] += valid[src]
    take = ~valid
    take &= count >= min_neighbours
    out = z.copy()
    out[take] = best[take]
    return out.reshape(-1)


def render(
    points: np.ndarray,
    views: list[ViewCamera],
    poses: list[np.ndarray],
    fill_min_neighbours: int = 0,
    chunk: int = 32768,
    executor=None,
) -> np.ndarray:
    """Render (3, N) world points into the views -> (V, H, W, 4) float32 [depth, x, y, z]; empty = 0.

    fill_min_neighbours > 0 closes 1-px holes (see _fill_holes; 2 is a good value, 0 = off).
    executor: a concurrent.futures executor to render the views in parallel (None: in this thread).
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[0] != 3:
        raise ValueError(f"points must be (3, N) float32 (one row per axis), got shape {points.shape}")
    if len(views) != len(poses):
        raise ValueError(f"{len(views)} views but {len(poses)} poses")
    h, w = views[0].height, views[0].width
    if any((v.height, v.width) != (h, w) for v in views):
        raise ValueError("all views must have the same size to be rendered (and tiled) together")
    n = points.shape[1]
    if n == 0:
        return np.zeros((len(views), h, w, 4), np.float32)
    bits = max(1, int(n).bit_length())
    if bits > _MAX_INDEX_BITS:
        raise ValueError(
            f"{n} points is too many for the z-buffer (max {2**_MAX_INDEX_BITS - 1}); raise depth.pixel_stride "
            "or crop tighter"
        )
    n_pix = len(views) * h * w
    zbuf = np.full(n_pix + len(views), _NO_HIT, np.int32)  # + one slot per view for points that miss it
    jobs = []
    for i, (view, pose) in enumerate(zip(views, poses, strict=True)):
        P = view.projection_matrix(np.asarray(pose, dtype=np.float64)).astype(np.float32)
        jobs.append((points, P, view, i * h * w, zbuf, chunk, n_pix + i, bits))
    if executor is None:
        for job in jobs:
            _zbuffer_view(*job)
    else:  # views write disjoint parts of zbuf; numpy releases the GIL inside each operation
        for fut in [executor.submit(_zbuffer_view, *job) for job in jobs]:
            fut.result()
    zbuf = zbuf[:n_pix]
    if fill_min_neighbours > 0:
        zbuf = _fill_holes(zbuf, len(views), h, w, fill_min_neighbours)
    # decode every pixel at once (cheaper than scattering into the hit pixels): winner index -> xyz
    empty = zbuf == _NO_HIT
    winner = zbuf & ((1 << bits) - 1)
    np.putmask(winner, empty, 0)
    xyz = np.take(points, winner, axis=1).reshape(3, len(views), h * w)
    full = ~empty.reshape(len(views), h * w)
    xyz *= full  # empty pixels -> 0
    out = np.empty((len(views), h, w, 4), np.float32)
    flat = out.reshape(len(views), h * w, 4)
    for i, pose in enumerate(poses):
        # exact depth of the winning point (the key holds it only to 0.1 mm): z = row 2 of T_view_world
        r = invert_transform(np.asarray(pose, dtype=np.float64))[2].astype(np.float32)
        d = r[:3] @ xyz[:, i]
        d += r[3]
        d *= full[i]
        flat[i, :, 0] = d
        for axis in range(3):  # one channel at a time: ~2x faster than a transposed (P, 3) copy
            flat[i, :, 1 + axis] = xyz[axis, i]
    return out


def tile(views: np.ndarray) -> np.ndarray:
    """(V, H, W, C) -> (H, V*W, C): views side by side, left to right in the given order."""
    views = np.asarray(views)
    if views.ndim != 4:
        raise ValueError(f"expected (V, H, W, C) views, got shape {views.shape}")
    v, h, w, c = views.shape
    return np.ascontiguousarray(views.transpose(1, 0, 2, 3).reshape(h, v * w, c))


def untile(tiled: np.ndarray, n_views: int) -> np.ndarray:
    """Inverse of `tile`: (H, V*W, C) -> (V, H, W, C)."""
    h, vw, c = tiled.shape
    if vw % n_views:
        raise ValueError(f"tiled width {vw} is not a multiple of {n_views} views")
    return np.ascontiguousarray(tiled.reshape(h, n_views, vw // n_views, c).transpose(1, 0, 2, 3))


# ------------------------------------------------------------------------------------- previews
