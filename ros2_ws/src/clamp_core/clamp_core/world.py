"""The one definition of `world` and of the arms in it (ROS-free: numpy only).

`world` is gym-aloha's bimanual ViperX world, identical in simulation and on the robot (a policy
pretrained in simulation sees the same geometry on the robot): z up, metres, the table top at z = 0,
"front" = low y (the operator's side), "right" = +x. It is fixed by the follower arm bases and the
table, both given here:

- left follower base at (-0.469, 0.5, 0), facing +x; right follower base at (0.469, 0.5, 0),
  facing -x (yaw pi): 0.938 m apart across the table, on its centre line;
- table top rectangle x in [-0.61, 0.61], y in [0.22, 0.98] at z = 0.

The robot profiles' `arms.<follower>.base`, clamp_perception's crop box and fixed views, and
clamp_sim's scene must agree with this; tests check that they do (tests/bringup/test_world_frame.py).
On the robot: place the arms as measured here (or calibrate the camera mounts in this world).

Also the ViperX 300 6DOF forward kinematics (product of exponentials, Interbotix's screw axes),
used by the workspace guard (clamp_core.safety.WorkspaceGuard) and by the emulated hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clamp_core import rig

FRAME = rig.WORLD_FRAME


@dataclass(frozen=True)
class Pose:
    xyz: tuple[float, float, float]
    rpy: tuple[float, float, float]

    def matrix(self) -> np.ndarray:
        return pose_matrix(self.xyz, self.rpy)


# The follower bases in world (gym-aloha's bimanual_viperx scene).
FOLLOWER_BASES: dict[str, Pose] = {
    "follower_left": Pose((-0.469, 0.5, 0.0), (0.0, 0.0, 0.0)),
    "follower_right": Pose((0.469, 0.5, 0.0), (0.0, 0.0, float(np.pi))),
}
TABLE_HEIGHT = 0.0  # table top, z in world
TABLE_X = (-0.61, 0.61)
TABLE_Y = (0.22, 0.98)
# Where manipulation happens (perception's crop box): the table top plus a margin, up to 0.6 m above.
WORKSPACE_MIN = (-0.65, 0.15, -0.04)
WORKSPACE_MAX = (0.65, 1.05, 0.60)


def pose_matrix(xyz, rpy) -> np.ndarray:
    """4x4 from translation and roll/pitch/yaw (fixed-axis XYZ, i.e. R = Rz(yaw) Ry(pitch) Rx(roll), as tf2)."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    m = np.eye(4)
    m[:3, :3] = [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    m[:3, 3] = [float(v) for v in xyz]
    return m


_BASES = {arm: pose.matrix() for arm, pose in FOLLOWER_BASES.items()}


def base_matrix(arm: str) -> np.ndarray:
    return _BASES[arm].copy()


# ------------------------------------------------------------------------------- ViperX 300 6DOF
# Space-frame screw axes (w, v) of waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate in
# the arm's base_link, and the home poses of gripper_link / ee_gripper_link (Interbotix's vx300s).
_VX300S_S = np.array(
    [
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, -0.12705, 0.0, 0.0],
        [0.0, 1.0, 0.0, -0.42705, 0.0, 0.05955],
        [1.0, 0.0, 0.0, 0.0, 0.42705, 0.0],
        [0.0, 1.0, 0.0, -0.42705, 0.0, 0.35955],
        [1.0, 0.0, 0.0, 0.0, 0.42705, 0.0],
    ]
)
_VX300S_HOME = {
    "gripper_link": np.array([[1, 0, 0, 0.42925], [0, 1, 0, 0], [0, 0, 1, 0.42705], [0, 0, 0, 1]], dtype=float),
    "ee_gripper_link": np.array([[1, 0, 0, 0.536494], [0, 1, 0, 0], [0, 0, 1, 0.42705], [0, 0, 0, 1]], dtype=float),
}
LINKS = tuple(_VX300S_HOME)


# per screw axis: its skew matrix, its square and v (precomputed: FK runs on every executor tick)
_SKEW = []
for _s in _VX300S_S:
    _w = _s[:3]
    _wx = np.array([[0, -_w[2], _w[1]], [_w[2], 0, -_w[0]], [-_w[1], _w[0], 0]])
    _SKEW.append((_wx, _wx @ _wx, _s[3:].copy()))


def _exp6(i: int, theta: float) -> np.ndarray:
    wx, wx2, v = _SKEW[i]
    s, c = math.sin(theta), math.cos(theta)
    m = np.eye(4)
    m[:3, :3] += s * wx + (1 - c) * wx2
    m[:3, 3] = theta * v + (1 - c) * (wx @ v) + (theta - s) * (wx2 @ v)
    return m


def arm_fk_links(joints6, links=LINKS) -> dict[str, np.ndarray]:
    """4x4 poses of several links in the arm's base_link, from one product of exponentials."""
    q = np.asarray(joints6, dtype=float)
    if q.shape != (6,):
        raise ValueError(f"arm_fk needs 6 joint angles, got shape {q.shape}")
    t = _exp6(0, q[0])
    for i in range(1, 6):
        t = t @ _exp6(i, q[i])
    return {link: t @ _VX300S_HOME[link] for link in links}


def arm_reach(link: str = "ee_gripper_link") -> tuple[np.ndarray, float]:
    """(shoulder point in base_link, farthest `link` can be from it over every joint angle).

    The shoulder, elbow and wrist-angle axes are parallel at home and the forearm roll and wrist
    rotate axes run through the elbow, wrist and ee points, so the three segments between those
    points keep their lengths: their sum bounds the reach (reached with the arm stretched out)."""
    pts = [np.cross(_VX300S_S[i, :3], _VX300S_S[i, 3:]) for i in (1, 2, 4)]  # axis points nearest the origin
    pts.append(_VX300S_HOME[link][:3, 3])
    return pts[0], float(sum(np.linalg.norm(b - a) for a, b in zip(pts, pts[1:], strict=False)))


def arm_fk(joints6, link: str = "ee_gripper_link") -> np.ndarray:
    """4x4 pose of `link` in the arm's base_link for the 6 arm joint angles (rad, xs_sdk order)."""
    return arm_fk_links(joints6, (link,))[link]


def points_in_world(action14, link: str = "ee_gripper_link") -> dict[str, np.ndarray]:
    """World pose (4x4) of `link` of each follower for a 14-D action (rig layout)."""
    a = np.asarray(action14, dtype=float)
    return {arm: base_matrix(arm) @ arm_fk(a[7 * i : 7 * i + 6], link) for i, arm in enumerate(rig.FOLLOWERS)}
