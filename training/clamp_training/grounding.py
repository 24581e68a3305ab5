"""Grounding diagnostics: does what the policy sees locate the task objects?

A linear probe (ridge regression) from frozen features of the first camera frames of an episode to
the task objects' start positions (episode.yaml `extras.objects_start`, recorded by the scripted
demonstrations), fitted on some episodes and scored on held-out ones. Features:

- `rgb_keypoints`: the trained policy's spatial-softmax keypoints per colour camera (where its conv
  encoder attends); a policy that reaches for the cube must be able to read the cube from these.

An error near the spread of the positions means the features do not see the objects, whatever the
success rate says; a centimetre means they do and the head has to use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FIRST_FRAMES = 5  # camera frames per episode from its start (objects still at their start positions)


@dataclass
class ProbeResult:
    objects: list[str]
    train_episodes: int
    test_episodes: int
    error_m: dict[str, float]  # mean xy error on held-out episodes, per object
    baseline_m: dict[str, float]  # always answering the training mean

    def to_json(self) -> dict:
        return {
            "objects": self.objects,
            "train_episodes": self.train_episodes,
            "test_episodes": self.test_episodes,
            "probe_error_m": {k: round(v, 4) for k, v in self.error_m.items()},
            "mean_position_error_m": {k: round(v, 4) for k, v in self.baseline_m.items()},
        }


def ridge_probe(
    feats: np.ndarray, targets: np.ndarray, groups: np.ndarray, test_fraction: float = 0.25, alpha: float = 1e-2
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Fit targets (N, D) from feats (N, F) on the first episodes (groups: episode index per row),
    predict the last `test_fraction` of episodes. Returns (per-row test error (M, D), baseline error
    (M, D), train episodes, test episodes)."""
    episodes = np.unique(groups)
    n_test = max(1, int(round(len(episodes) * test_fraction)))
    if len(episodes) - n_test < 2:
        raise ValueError(f"a probe needs at least 3 episodes with object positions; got {len(episodes)}")
    test = np.isin(groups, episodes[-n_test:])
    mu, sd = feats[~test].mean(0), feats[~test].std(0) + 1e-6
    x = (feats - mu) / sd
    x = np.concatenate([x, np.ones((len(x), 1))], 1)
    a = x[~test]
    w = np.linalg.solve(a.T @ a + alpha * len(a) * np.eye(a.shape[1]), a.T @ targets[~test])
    err = np.abs(x[test] @ w - targets[test])
    base = np.abs(targets[~test].mean(0) - targets[test])
    return err, base, len(episodes) - n_test, n_test


@torch.no_grad()
def rgb_keypoints(policy, rgb: torch.Tensor) -> np.ndarray:
    """(B, C, 3, H, W) colour frames -> (B, C*K*2) spatial-softmax keypoints of the policy's encoder."""
    enc = policy.rgb_encoder
    x = enc.prepare(rgb)
    return torch.cat([cam.keypoints(x[:, i]).flatten(1) for i, cam in enumerate(enc.cams)], 1).numpy()


def probe_policy_keypoints(policy, datasets: list) -> ProbeResult:
    """The probe on converted datasets whose episodes came from clamp_sim (episode.yaml objects)."""
    import json

    import yaml

    from .dataset import open_episode

    if not policy.cfg.rgb.cameras:
        raise ValueError("this policy reads no colour cameras: there are no keypoints to probe")
    episodes = []
    for d in datasets:
        doc = json.loads((Path(d) / "dataset.json").read_text())
        episodes += [(Path(d), ep) for ep in doc["episodes"]]
    feats, targets, groups, names = [], [], [], None
    for i, (dataset_dir, ep) in enumerate(episodes):
        meta_path = Path(ep["bag"]) / "episode.yaml"
        if not meta_path.exists():
            continue
        meta = yaml.safe_load(meta_path.read_text()) or {}
        objects = (meta.get("extras") or {}).get("objects_start") or {}
        if not objects:
            continue
        names = names or sorted(objects)
        g = open_episode(dataset_dir / "episodes" / f"{ep['name']}.zarr")
        missing = [c for c in policy.cfg.rgb.cameras if c not in g["rgb"]]
        if missing:
            raise ValueError(f"episode {ep['name']} stores no colour images of {missing}; convert with --rgb-scale > 0")
        n = min(FIRST_FRAMES, g["rgb"][policy.cfg.rgb.cameras[0]].shape[0])
        rgb = np.stack([np.asarray(g["rgb"][c][:n]) for c in policy.cfg.rgb.cameras], 1)  # (n, C, H, W, 3)
        feats.append(rgb_keypoints(policy, torch.from_numpy(rgb).permute(0, 1, 4, 2, 3).contiguous()))
        targets.append(np.repeat(np.concatenate([np.asarray(objects[k][:2], float) for k in names])[None], n, 0))
        groups.append(np.full(n, i))
    if not feats:
        raise ValueError(
            f"no episode of {dataset_dir} has recorded object positions (episode.yaml extras.objects_start)"
        )
    err, base, n_train, n_test = ridge_probe(np.concatenate(feats), np.concatenate(targets), np.concatenate(groups))
    xy = lambda e: np.linalg.norm(e.reshape(len(e), -1, 2), axis=-1).mean(0)  # noqa: E731
    per_object = lambda e: {k: float(v) for k, v in zip(names, xy(e), strict=True)}  # noqa: E731
    return ProbeResult(names, n_train, n_test, per_object(err), per_object(base))
