"""CLAMP text prompts: task description + each object's name with a normalised integer position + progress.

As in the paper, numbers are written as small integers so the sentence encoder sees them as tokens:
a position is normalised to the workspace box and quantised to 0..position_bins per axis; progress
(fraction of the episode done) is quantised to 0..progress_bins. Objects are optional (real data may
lack them); progress too. Example:

    build_prompt("transfer the cube", {"red_box": (0.1, 0.5, 0.02)}, 0.31)
    -> 'transfer the cube. red box at (60, 50, 4). progress 3 of 10.'
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

# The gym-aloha bimanual ViperX world (ARCHITECTURE.md, "One world frame"): arms at x = +-0.469, table centred at
# y = 0.5, table top near z = 0. Objects spawn in x in [-0.2, 0.2], y in [0.4, 0.6].
WORKSPACE_LOW = (-0.5, 0.0, 0.0)
WORKSPACE_HIGH = (0.5, 1.0, 0.5)


def quantise_position(xyz: Sequence[float], low=WORKSPACE_LOW, high=WORKSPACE_HIGH, bins: int = 100) -> tuple:
    """World position (m) -> integer per axis in 0..bins (clipped to the workspace box)."""
    p = np.asarray(xyz, dtype=float).ravel()
    if p.shape[0] < 3 or not np.all(np.isfinite(p[:3])):
        raise ValueError(f"object position must be 3 finite numbers (x, y, z in metres), got {xyz!r}")
    p = p[:3]  # a pose (xyz + quaternion) gives its position
    lo, hi = np.asarray(low, float), np.asarray(high, float)
    q = np.rint(np.clip((p - lo) / (hi - lo), 0.0, 1.0) * bins).astype(int)
    return tuple(int(v) for v in q)


def quantise_progress(progress: float, bins: int = 10) -> int:
    if not np.isfinite(progress):
        raise ValueError(f"progress must be a finite fraction in [0, 1], got {progress!r}")
    return int(np.rint(np.clip(progress, 0.0, 1.0) * bins))


def _name(obj: str) -> str:
    return obj.replace("_", " ").strip()


def build_prompt(
    task: str,
    objects: Mapping[str, Sequence[float]] | None = None,
    progress: float | None = None,
    *,
    low=WORKSPACE_LOW,
    high=WORKSPACE_HIGH,
    position_bins: int = 100,
    progress_bins: int = 10,
) -> str:
    """The CLAMP prompt for one observation. Objects are listed in name order (stable prompts)."""
    task = (task or "").strip().rstrip(".")
    if not task:
        raise ValueError("a CLAMP prompt needs a task description (episode.yaml `task` / the /clamp/task topic)")
    parts = [task + "."]
    for name in sorted(objects or {}):
        x, y, z = quantise_position(objects[name], low, high, position_bins)
        parts.append(f"{_name(name)} at ({x}, {y}, {z}).")
    if progress is not None:
        parts.append(f"progress {quantise_progress(progress, progress_bins)} of {progress_bins}.")
    return " ".join(parts)


def prompt_ids(prompts: Sequence[str]) -> np.ndarray:
    """Integer id per prompt, equal for equal strings (duplicates are positives in the SigLIP loss).

    A stable hash rather than a running index: ids must agree across DDP ranks, which see different
    batches.
    """
    return np.array(
        [int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8).digest(), "little", signed=True) for p in prompts],
        dtype=np.int64,
    )
