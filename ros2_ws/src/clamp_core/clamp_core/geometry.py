"""Rigid-transform maths in plain numpy: quaternions (x, y, z, w as ROS orders them), 4x4 matrices.

No ROS imports: used by msg_conversions, transforms, render and training alike.
"""

from __future__ import annotations

import numpy as np


def quat_normalize(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < 1e-12):
        raise ValueError(f"quaternion {q.tolist()} has zero length; a rotation needs a unit quaternion (x, y, z, w)")
    return q / n


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w) -> (..., 3, 3) rotation matrices. Normalises first."""
    x, y, z, w = np.moveaxis(quat_normalize(q), -1, 0)
    r = np.empty(np.shape(x) + (3, 3))
    r[..., 0, 0] = 1 - 2 * (y * y + z * z)
    r[..., 0, 1] = 2 * (x * y - z * w)
    r[..., 0, 2] = 2 * (x * z + y * w)
    r[..., 1, 0] = 2 * (x * y + z * w)
    r[..., 1, 1] = 1 - 2 * (x * x + z * z)
    r[..., 1, 2] = 2 * (y * z - x * w)
    r[..., 2, 0] = 2 * (x * z - y * w)
    r[..., 2, 1] = 2 * (y * z + x * w)
    r[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> quaternion (x, y, z, w) with w >= 0 (Shepperd's method, stable)."""
    r = np.asarray(r, dtype=np.float64)
    if r.shape != (3, 3):
        raise ValueError(f"expected a 3x3 rotation matrix, got shape {r.shape}")
    t = np.trace(r)
    if t > 0:
        s = 2.0 * np.sqrt(t + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
    q = quat_normalize(np.array(q))
    return -q if q[3] < 0 else q


def make_transform(rotation: np.ndarray | None = None, translation: np.ndarray | None = None) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation (or quaternion x,y,z,w) and a translation."""
    t = np.eye(4)
    if rotation is not None:
        rotation = np.asarray(rotation, dtype=np.float64)
        t[:3, :3] = quat_to_matrix(rotation) if rotation.shape == (4,) else rotation
    if translation is not None:
        t[:3, 3] = translation
    return t


def invert_transform(t: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (transpose the rotation; cheaper and exact vs. np.linalg.inv)."""
    out = np.eye(4)
    r = t[:3, :3]
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ t[:3, 3]
    return out


def quat_slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (x, y, z, w); shortest path."""
    q0, q1 = quat_normalize(q0), quat_normalize(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation; take the short arc
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: lerp is exact enough and avoids dividing by sin(~0)
        return quat_normalize(q0 + alpha * (q1 - q0))
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    s = np.sin(theta)
    return (np.sin((1 - alpha) * theta) / s) * q0 + (np.sin(alpha * theta) / s) * q1


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """T_world_cam for an optical-convention camera (z forward, x right, y down) at `eye` looking at `target`."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    if np.linalg.norm(z) < 1e-9:
        raise ValueError(f"look_at: eye {eye.tolist()} and target {target.tolist()} coincide")
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:  # looking along `up`: pick any perpendicular right vector
        x = np.cross(z, [0.0, 1.0, 0.0] if abs(z[1]) < 0.9 else [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_transform(np.stack([x, y, z], axis=1), eye)
