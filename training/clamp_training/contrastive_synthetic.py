"""Small, structured, clamp_sim-like episodes for fast CPU tests of CLAMP pretraining.

Not a physics simulator: a table, a cube and two arms drawn as point clouds in the gym-aloha world
frame, re-rendered each step into the five CLAMP views (depth + world xyz, z-buffered orthographic
cameras: overhead, back-right, front-left and two wrist views that follow the grippers). One arm
reaches for the cube and closes its gripper; the 14-D actions are a fixed smooth map of the two
gripper positions (a stand-in for inverse kinematics) plus the normalised gripper opening. What the
views show (where the grippers and the cube are), what the actions do and what the prompt says
(task, cube position, progress) are therefore tied together exactly as in real data, which is what
contrastive pretraining has to discover.
"""

from __future__ import annotations

import numpy as np

from .prompts import build_prompt

ARM_BASES = np.array([[-0.469, 0.5, 0.0], [0.469, 0.5, 0.0]])
HOME = np.array([[-0.25, 0.5, 0.25], [0.25, 0.5, 0.25]])
TASKS = ("reach the red cube with the left arm", "reach the red cube with the right arm")


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World -> optical rotation (rows: right, down, forward; REP 103 optical, z forward)."""
    f = np.asarray(target, float) - np.asarray(eye, float)
    f /= np.linalg.norm(f)
    right = np.cross(f, up)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(f, right), f])


FIXED_VIEWS = (  # (rotation, eye, half extent m): overhead, back_right, front_left
    (look_at((0, 0.5, 1.0), (0, 0.5, 0), up=(0, 1, 0)), np.array([0.0, 0.5, 1.0]), 0.55),
    (look_at((0.6, -0.1, 0.6), (0, 0.5, 0.05)), np.array([0.6, -0.1, 0.6]), 0.5),
    (look_at((-0.6, 1.1, 0.6), (0, 0.5, 0.05)), np.array([-0.6, 1.1, 0.6]), 0.5),
)
WRIST_ROT = look_at((0, 0, 1), (0, 0, 0), up=(0, 1, 0))
WRIST_HALF_EXTENT = 0.15


def render(points: np.ndarray, rot: np.ndarray, centre: np.ndarray, half: float, size: int) -> np.ndarray:
    """Orthographic z-buffer: (P, 3) world points -> (4, size, size) depth + world xyz, 0 where empty."""
    cam = (points - centre) @ rot.T
    u = np.floor((cam[:, 0] / half + 1) * 0.5 * size).astype(int)
    v = np.floor((cam[:, 1] / half + 1) * 0.5 * size).astype(int)
    ok = (u >= 0) & (u < size) & (v >= 0) & (v < size) & (cam[:, 2] > 0)
    u, v, d, pts = u[ok], v[ok], cam[ok, 2], points[ok]
    pix = v * size + u
    order = np.lexsort((d, pix))  # per pixel nearest first
    first = np.unique(pix[order], return_index=True)[1]
    keep = order[first]
    out = np.zeros((4, size * size), dtype=np.float32)
    out[0, pix[keep]] = d[keep]
    out[1:, pix[keep]] = pts[keep].T
    return out.reshape(4, size, size)


def _segment(a: np.ndarray, b: np.ndarray, n: int, radius: float, rng) -> np.ndarray:
    t = rng.random(n)[:, None]
    return a + t * (b - a) + rng.normal(0, radius, (n, 3))


def scene_points(cube: np.ndarray, grippers: np.ndarray, opening: np.ndarray, rng) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(-0.5, 0.5, 0.025), np.arange(0.1, 0.9, 0.025))
    table = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    cube_pts = cube + rng.uniform(-0.02, 0.02, (150, 3))
    parts = [table, cube_pts]
    for base, g, o in zip(ARM_BASES, grippers, opening, strict=True):
        elbow = (base + g) / 2 + np.array([0, 0, 0.2])
        parts += [_segment(base, elbow, 60, 0.01, rng), _segment(elbow, g, 60, 0.01, rng)]
        w = 0.01 + 0.03 * o  # fingers further apart when open
        for side in (-1, 1):
            parts.append(_segment(g + [side * w, 0, 0], g + [side * w, 0, -0.05], 20, 0.004, rng))
    return np.concatenate(parts)


def render_views(points: np.ndarray, grippers: np.ndarray, size: int) -> np.ndarray:
    views = [render(points, r, c, h, size) for r, c, h in FIXED_VIEWS]
    for g in grippers:  # wrist cameras: above the gripper, looking down, following it
        views.append(render(points, WRIST_ROT, g + np.array([0, 0, 0.3]), WRIST_HALF_EXTENT, size))
    return np.stack(views)


_W = np.random.default_rng(1234).normal(0, 1.5, (6, 3))


def joints_of(grippers: np.ndarray, opening: np.ndarray) -> np.ndarray:
    """14-D action: per arm 6 'joints' = tanh(W (g - base)), then the gripper opening (0..1)."""
    out = []
    for base, g, o in zip(ARM_BASES, grippers, opening, strict=True):
        out += [*np.tanh(_W @ (g - base)), o]
    return np.array(out, dtype=np.float32)


def make_episode(seed: int, steps: int = 40, size: int = 32) -> dict:
    """One episode: views (T, 5, 4, S, S), state, action (T, 14), task, objects, prompts per step."""
    rng = np.random.default_rng(seed)
    arm = int(rng.integers(2))
    cube = np.array([rng.uniform(-0.15, 0.15), rng.uniform(0.4, 0.6), 0.02])
    grippers = HOME.copy() + rng.normal(0, 0.02, (2, 3))
    start = grippers[arm].copy()
    goal = cube + np.array([0, 0, 0.03])
    views, actions, prompts = [], [], []
    opening = np.ones(2)
    for t in range(steps):
        s = min(1.0, t / (0.7 * steps))
        target = grippers.copy()
        target[arm] = start + (goal - start) * (3 * s**2 - 2 * s**3)  # smooth approach
        target[1 - arm] = HOME[1 - arm] + rng.normal(0, 0.005, 3)
        opening = np.ones(2)
        opening[arm] = 1.0 if s < 1.0 else max(0.0, 1.0 - (t - 0.7 * steps) / (0.15 * steps))
        actions.append(joints_of(target, opening))
        grippers = target
        views.append(render_views(scene_points(cube, grippers, opening, rng), grippers, size))
        prompts.append(build_prompt(TASKS[arm], {"red_box": cube}, t / (steps - 1)))
    action = np.stack(actions)
    state = np.concatenate([action[:1], action[:-1]])  # the follower reaches last step's target
    return {
        "views": np.stack(views).astype(np.float32),
        "state": state,
        "action": action,
        "task": TASKS[arm],
        "objects": {"red_box": cube.tolist()},
        "prompts": prompts,
    }
