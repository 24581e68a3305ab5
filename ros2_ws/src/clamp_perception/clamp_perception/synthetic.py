"""Analytic scenes of boxes seen by pinhole cameras of known pose: exact depth images for tests,
the benchmark and the preview CLI (no simulator needed).

Geometry follows gym-aloha's bimanual ViperX world: table top at z = 0 spanning x in
[-0.61, 0.61], y in [0.22, 0.98] (tabletop.stl at body pos (0, 0.6, 0)); arms at x = -/+0.469,
y = 0.5. Depth is ray-cast exactly (slab test per box) and quantised like a RealSense (uint16 mm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from clamp_core import rig
from clamp_core.geometry import look_at, make_transform

from clamp_perception.fusion import DepthFrame

TABLE_MIN = (-0.6096, 0.219, -0.03)
TABLE_MAX = (0.6096, 0.981, 0.0)


def pinhole_K(width: int, height: int, hfov_deg: float) -> np.ndarray:
    f = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])


def gripper_pose(position, forward, pitch_down_deg: float = 30.0) -> np.ndarray:
    """T_world_gripper: x along `forward` (horizontal direction) pitched down, z roughly up (Interbotix ee frame)."""
    f = np.asarray(forward, dtype=np.float64)
    f /= np.linalg.norm(f)
    a = np.radians(pitch_down_deg)
    x = np.array([f[0] * np.cos(a), f[1] * np.cos(a), -np.sin(a)])
    y = np.cross([0.0, 0.0, 1.0], x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    return make_transform(np.stack([x, y, z], axis=1), position)


# wrist camera mount on the gripper (in the gripper frame): above and behind, looking forward-down
T_GRIPPER_WRIST_CAM = look_at([-0.07, 0.0, 0.07], [0.20, 0.0, -0.04], [0.0, 0.0, 1.0])


@dataclass
class SyntheticScene:
    boxes: list = field(default_factory=list)  # [(min xyz, max xyz)], metres, world
    cameras: dict = field(default_factory=dict)  # name -> (K, height, width, T_world_cam or None)
    wrist_poses: dict = field(default_factory=dict)  # follower arm -> T_world_gripper
    wrist_camera_of: dict = field(default_factory=dict)  # camera name -> follower arm it is mounted on

    @classmethod
    def aloha_table(cls, height: int = 480, width: int = 640, objects: bool = True) -> SyntheticScene:
        """Table, a cube and a block, two grippers above the table, the four ALOHA cameras."""
        boxes = [(TABLE_MIN, TABLE_MAX)]
        if objects:
            boxes += [((0.17, 0.47, 0.0), (0.23, 0.53, 0.06)), ((-0.15, 0.65, 0.0), (-0.05, 0.75, 0.10))]
        K = pinhole_K(width, height, 87.0)  # D405: ~87 deg horizontal
        cams = {
            "cam_high": (K, height, width, look_at([0.0, 0.05, 0.75], [0.0, 0.6, 0.0])),
            "cam_low": (K, height, width, look_at([0.0, -0.02, 0.30], [0.0, 0.7, 0.0])),
            "cam_left_wrist": (K, height, width, None),
            "cam_right_wrist": (K, height, width, None),
        }
        wrists = {
            "follower_left": gripper_pose([-0.30, 0.50, 0.22], [1.0, 0.1, 0.0]),
            "follower_right": gripper_pose([0.30, 0.55, 0.22], [-1.0, 0.0, 0.0]),
        }
        mounts = {"cam_left_wrist": "follower_left", "cam_right_wrist": "follower_right"}
        return cls(boxes, cams, wrists, mounts)

    def camera_pose(self, name: str) -> np.ndarray:
        K, h, w, T = self.cameras[name]
        if T is not None:
            return T
        return self.wrist_poses[self.wrist_camera_of[name]] @ T_GRIPPER_WRIST_CAM

    def raycast(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Ray parameter t of the first hit (origins + t*dirs), inf where nothing is hit. (N, 3) inputs."""
        best = np.full(origins.shape[0], np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            for bmin, bmax in self.boxes:
                t0 = (np.asarray(bmin) - origins) * inv
                t1 = (np.asarray(bmax) - origins) * inv
                t_near = np.nanmax(np.minimum(t0, t1), axis=1)
                t_far = np.nanmin(np.maximum(t0, t1), axis=1)
                hit = (t_near <= t_far) & (t_far > 0)
                t = np.where(t_near > 0, t_near, t_far)
                best = np.where(hit & (t < best), t, best)
        return best

    def depth_image(self, name: str, dtype=np.uint16) -> np.ndarray:
        """Exact z-depth of camera `name` (uint16 mm, 0 = no return; or float32 m, NaN = no return)."""
        K, h, w, _ = self.cameras[name]
        T = self.camera_pose(name)
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
        dirs = rays @ T[:3, :3].T  # camera-z component 1: t is the optical-axis depth
        z = self.raycast(np.broadcast_to(T[:3, 3], dirs.shape), dirs).reshape(h, w)
        if dtype == np.uint16:
            return np.where(np.isfinite(z) & (z < 65.0), np.round(z * 1000.0), 0).astype(np.uint16)
        return np.where(np.isfinite(z), z, np.nan).astype(dtype)

    def frames(self, dtype=np.uint16, stamp_ns: int = 0) -> tuple[dict[str, DepthFrame], dict[str, np.ndarray]]:
        """({camera: DepthFrame}, {follower arm: T_world_gripper}) as the pipeline takes them."""
        frames = {}
        for name, (K, h, w, _) in self.cameras.items():
            frames[name] = DepthFrame(
                self.depth_image(name, dtype), K, self.camera_pose(name), name, stamp_ns, size=(h, w)
            )
        return frames, dict(self.wrist_poses)

    def surface_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance (m) of (N, 3) points to the nearest box surface (0 on a face)."""
        best = np.full(points.shape[0], np.inf)
        for bmin, bmax in self.boxes:
            bmin, bmax = np.asarray(bmin), np.asarray(bmax)
            outside = np.linalg.norm(np.maximum(np.maximum(bmin - points, points - bmax), 0), axis=1)
            inside = np.min(np.minimum(points - bmin, bmax - points), axis=1)
            best = np.minimum(best, np.where(outside > 0, outside, np.abs(inside)))
        return best

    def tf_static(self) -> list[tuple[str, str, np.ndarray]]:
        """(parent, child, T_parent_child) that a robot publishes on /tf_static for this scene."""
        out = []
        for name, (_, _, _, T) in self.cameras.items():
            if T is not None:
                out.append((rig.WORLD_FRAME, rig.color_optical_frame(name), T))
            else:
                out.append(
                    (rig.gripper_frame(self.wrist_camera_of[name]), rig.color_optical_frame(name), T_GRIPPER_WRIST_CAM)
                )
        return out

    def tf_dynamic(self) -> list[tuple[str, str, np.ndarray]]:
        """(parent, child, T_parent_child) on /tf: the grippers in world (the robot's FK, collapsed)."""
        return [(rig.WORLD_FRAME, rig.gripper_frame(arm), T) for arm, T in self.wrist_poses.items()]
