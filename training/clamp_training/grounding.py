"""Grounding diagnostics: does what the policy sees locate the task objects?

A linear probe (ridge regression) from frozen features of the first camera frames of an episode to
the task objects' start positions (episode.yaml `extras.objects_start`, recorded by the scripted
demonstrations), fitted on some episodes and scored on held-out ones. Features:

- `rgb_keypoints`: the trained policy's spatial-softmax keypoints per colour camera (where its conv
  encoder attends); a policy that reaches for the cube must be able to read the cube from these.
- `clamp_features`: the frozen CLAMP image encoder's output on the depth + xyz views, what the policy's
  transformer receives from it (`CLAMP_FEATURES`; `view_mean` by default, see there).

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
    features: str = ""  # what was probed, e.g. "rgb_keypoints (64)" or "clamp view_mean (320)"
    alpha: float = float("nan")  # the ridge strength (chosen on the training episodes)

    def to_json(self) -> dict:
        return {
            "features": self.features,
            "objects": self.objects,
            "train_episodes": self.train_episodes,
            "test_episodes": self.test_episodes,
            "probe_error_m": {k: round(v, 4) for k, v in self.error_m.items()},
            "mean_position_error_m": {k: round(v, 4) for k, v in self.baseline_m.items()},
            "alpha": self.alpha,
        }


ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # ridge strengths tried (x rows, on standardised features)


def _ridge(feats: np.ndarray, targets: np.ndarray, alpha: float):
    """Ridge regression on standardised features with an unpenalised intercept (targets centred: a
    strong penalty shrinks towards the mean position, not towards the world origin); returns predict."""
    mu, sd, ym = feats.mean(0), feats.std(0) + 1e-6, targets.mean(0)
    a = (feats - mu) / sd
    n, f = a.shape
    if f > n:  # dual form: the same solution, an n x n system for thousands of features
        w = a.T @ np.linalg.solve(a @ a.T + alpha * n * np.eye(n), targets - ym)
    else:
        w = np.linalg.solve(a.T @ a + alpha * n * np.eye(f), a.T @ (targets - ym))
    return lambda x: ((x - mu) / sd) @ w + ym


def choose_alpha(feats: np.ndarray, targets: np.ndarray, groups: np.ndarray, folds: int = 5) -> float:
    """The ridge strength of ALPHAS with the least error in cross-validation over whole episodes
    (groups) of the training rows only; the held-out episodes never choose it."""
    episodes = np.unique(groups)
    if len(episodes) < 3:
        return 1e-2
    k = min(folds, len(episodes))
    fold = np.searchsorted(episodes, groups) % k  # episodes interleaved over the folds
    scores = []
    for alpha in ALPHAS:
        err = [np.abs(_ridge(feats[fold != i], targets[fold != i], alpha)(feats[fold == i]) - targets[fold == i])
               for i in range(k)]  # fmt: skip
        scores.append(np.concatenate(err).mean())
    return float(ALPHAS[int(np.argmin(scores))])


def ridge_probe(
    feats: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    test_fraction: float = 0.25,
    alpha: float | None = None,
) -> tuple[np.ndarray, np.ndarray, int, int, float]:
    """Fit targets (N, D) from feats (N, F) on the first episodes (groups: episode index per row),
    predict the last `test_fraction` of episodes. alpha: the ridge strength, by default chosen by
    cross-validation over the training episodes (`choose_alpha`). Returns (per-row test error (M, D),
    baseline error (M, D), train episodes, test episodes, alpha)."""
    episodes = np.unique(groups)
    n_test = max(1, int(round(len(episodes) * test_fraction)))
    if len(episodes) - n_test < 2:
        raise ValueError(f"a probe needs at least 3 episodes with object positions; got {len(episodes)}")
    test = np.isin(groups, episodes[-n_test:])
    if alpha is None:
        alpha = choose_alpha(feats[~test], targets[~test], groups[~test])
    err = np.abs(_ridge(feats[~test], targets[~test], alpha)(feats[test]) - targets[test])
    base = np.abs(targets[~test].mean(0) - targets[test])
    return err, base, len(episodes) - n_test, n_test, alpha


@torch.no_grad()
def rgb_keypoints(policy, rgb: torch.Tensor) -> np.ndarray:
    """(B, C, 3, H, W) colour frames -> (B, C*K*2) spatial-softmax keypoints of the policy's encoder."""
    enc = policy.rgb_encoder
    x = enc.prepare(rgb)
    return torch.cat([cam.keypoints(x[:, i]).flatten(1) for i, cam in enumerate(enc.cams)], 1).numpy()


# Features of the frozen CLAMP image encoder (ImageEncoder3D) per frame, for the probe:
#   view_mean  the tokens averaged over each view's valid patches (those that see a point), views
#              concatenated (V x D). The default: the policy's transformer reads these tokens (through a
#              linear image_proj), and averaging within a view keeps which camera saw what while the
#              per-token content (depth, local shape, the view and grid embedding it carries through
#              attention) says where; a few features per episode frame, so ridge on ~50 episodes is
#              well-posed. Empty patches are left out as the encoder's own pooling leaves them out.
#   tokens     every token flattened (V x h x w x D): everything the policy gets, but thousands of
#              features for a few hundred probe rows (ridge then measures regularisation more than content).
#   embedding  the contrastive CLAMP embedding (attention pooling + projection, embed_dim): what the
#              pretraining aligned with actions and text; not what the fine-tuned policy reads.
CLAMP_FEATURES = ("view_mean", "tokens", "embedding")


@torch.no_grad()
def clamp_features(policy, views: torch.Tensor, kind: str = "view_mean") -> np.ndarray:
    """(B, V, 4, S, S) views (metres, any S) -> (B, F) features of the policy's image encoder (eval)."""
    if kind not in CLAMP_FEATURES:
        raise ValueError(f"CLAMP probe features {kind!r}; choose one of {CLAMP_FEATURES}")
    enc = policy.image_encoder
    if not hasattr(enc, "encode"):
        raise ValueError(f"this policy's image encoder ({policy.cfg.image_encoder.type}) is not CLAMP's clamp_vit3d")
    was_training = enc.training
    enc.eval()
    try:
        tokens, valid = enc.encode(policy.prepare_views(views.float()))
        if kind == "embedding":
            out = enc.embed_tokens(tokens, valid)
        elif kind == "tokens":
            out = tokens.flatten(1)
        else:
            b, n, d = tokens.shape
            v = policy.cfg.image_encoder.num_views
            w = valid.reshape(b, v, n // v, 1).float()
            out = ((tokens.reshape(b, v, n // v, d) * w).sum(2) / w.sum(2).clamp(min=1.0)).flatten(1)
    finally:
        enc.train(was_training)
    return out.cpu().numpy()


def _probe(datasets: list, features, what: str) -> ProbeResult:
    """Ridge probe over the first FIRST_FRAMES camera frames of every episode of `datasets` whose bag's
    episode.yaml records object start positions; features(episode group, n) -> (n, F)."""
    import json

    import yaml

    from .dataset import open_episode

    episodes = []
    for d in datasets:
        doc = json.loads((Path(d) / "dataset.json").read_text())
        episodes += [(Path(d), ep) for ep in doc["episodes"]]
    feats, targets, groups, names = [], [], [], None
    for i, (dataset_dir, ep) in enumerate(episodes):
        meta_path = Path(ep.get("bag") or "") / "episode.yaml"
        if not ep.get("bag") or not meta_path.exists():
            continue
        meta = yaml.safe_load(meta_path.read_text()) or {}
        extras = meta.get("extras") or {}
        # clamp_sim's demonstrations record where the objects start; synthetic bags' objects never move
        objects = extras.get("objects_start") or extras.get("object_positions") or {}
        if not objects:
            continue
        names = names or sorted(objects)
        g = open_episode(dataset_dir / "episodes" / f"{ep['name']}.zarr")
        f = features(ep["name"], g)
        feats.append(f)
        targets.append(np.repeat(np.concatenate([np.asarray(objects[k][:2], float) for k in names])[None], len(f), 0))
        groups.append(np.full(len(f), i))
    if not feats:
        raise ValueError(
            f"no episode of {[str(d) for d in datasets]} has recorded object positions (its bag's episode.yaml "
            "extras.objects_start: clamp_sim's scripted demonstrations)"
        )
    x = np.concatenate(feats)
    err, base, n_train, n_test, alpha = ridge_probe(x, np.concatenate(targets), np.concatenate(groups))
    xy = lambda e: np.linalg.norm(e.reshape(len(e), -1, 2), axis=-1).mean(0)  # noqa: E731
    per_object = lambda e: {k: float(v) for k, v in zip(names, xy(e), strict=True)}  # noqa: E731
    return ProbeResult(names, n_train, n_test, per_object(err), per_object(base), f"{what} ({x.shape[1]})", alpha)


def probe_policy_keypoints(policy, datasets: list) -> ProbeResult:
    """The probe on converted datasets whose episodes came from clamp_sim (episode.yaml objects)."""
    if not policy.cfg.rgb.cameras:
        raise ValueError("this policy reads no colour cameras: there are no keypoints to probe")
    cams = policy.cfg.rgb.cameras

    def features(name, g):
        missing = [c for c in cams if "rgb" not in set(g.group_keys()) or c not in g["rgb"]]
        if missing:
            raise ValueError(f"episode {name} stores no colour images of {missing}; convert with --rgb-scale > 0")
        n = min(FIRST_FRAMES, g["rgb"][cams[0]].shape[0])
        rgb = np.stack([np.asarray(g["rgb"][c][:n]) for c in cams], 1)  # (n, C, H, W, 3)
        return rgb_keypoints(policy, torch.from_numpy(rgb).permute(0, 1, 4, 2, 3).contiguous())

    return _probe(datasets, features, "rgb_keypoints")


def probe_policy_clamp(policy, datasets: list, kind: str = "view_mean") -> ProbeResult:
    """The probe from the policy's frozen CLAMP image encoder (`clamp_features`) on the first camera
    frames of each episode, fitted on some episodes and scored on the held-out others."""
    if policy.cfg.image_encoder.type != "clamp_vit3d":
        raise ValueError(f"this policy's image encoder is {policy.cfg.image_encoder.type!r}, not CLAMP's clamp_vit3d")

    def features(name, g):
        if "views" not in set(g.array_keys()):
            raise ValueError(f"episode {name} stores no views (converted with --no-views); convert with views")
        n = min(FIRST_FRAMES, g["views"].shape[0])
        return clamp_features(policy, torch.from_numpy(np.asarray(g["views"][:n], dtype=np.float32)), kind)

    return _probe(datasets, features, f"clamp {kind}")


def grounding_report(policy_dir, datasets: list, samples: int = 256) -> dict:
    """The offline diagnostics `python -m clamp_training evaluate --data DATASETS` adds to its summary:
    `reliance` (loss with the images / the state shuffled), `probe` (from the colour keypoints, when the
    policy reads colour cameras) and `probe_clamp` (from its frozen CLAMP encoder, when it has one).
    samples: demonstration steps for the reliance losses."""
    from clamp_policy.models.checkpoint import load_policy

    from .evaluation import reliance

    out = {"reliance": reliance(policy_dir, datasets, samples=samples)}
    policy = load_policy(policy_dir).eval()
    if policy.cfg.rgb.cameras:
        out["probe"] = probe_policy_keypoints(policy, datasets).to_json()
    if policy.cfg.image_encoder.type == "clamp_vit3d":
        out["probe_clamp"] = probe_policy_clamp(policy, datasets).to_json()
    return out
