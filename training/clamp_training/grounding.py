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

`probe_scenes` fits the same probe on thousands of start scenes rendered in clamp_sim instead of a
few dozen demonstrations (what `python -m clamp_training evaluate` reports as `probe_scenes`): the
CLAMP tokens are thousands of features, and a probe fitted on few episodes measures its own data.
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


# ridge strengths tried (x rows, on standardised features): the weak end for thousands of scenes and
# features (the CLAMP tokens chose 1e-7..1e-6 below 1,000 scenes), the strong end for blind features
ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _ridge_fits(feats: np.ndarray, targets: np.ndarray, alphas) -> list:
    """Ridge regressions on standardised features with an unpenalised intercept (targets centred: a
    strong penalty shrinks towards the mean position, not towards the world origin), one per strength,
    for the price of one eigendecomposition; returns a predict function per alpha."""
    mu, sd, ym = feats.mean(0), feats.std(0) + 1e-6, targets.mean(0)
    a = (feats - mu) / sd
    n, f = a.shape
    if f > n:  # dual form: the same solutions from an n x n kernel, for thousands of features
        s, u = np.linalg.eigh(a @ a.T)
        uy = u.T @ (targets - ym)
        ws = [a.T @ (u @ (uy / (s + alpha * n)[:, None])) for alpha in alphas]
    else:
        s, v = np.linalg.eigh(a.T @ a)
        vy = v.T @ (a.T @ (targets - ym))
        ws = [v @ (vy / (s + alpha * n)[:, None]) for alpha in alphas]
    return [lambda x, w=w: ((x - mu) / sd) @ w + ym for w in ws]


def _ridge(feats: np.ndarray, targets: np.ndarray, alpha: float):
    return _ridge_fits(feats, targets, [alpha])[0]


def choose_alpha(feats: np.ndarray, targets: np.ndarray, groups: np.ndarray, folds: int = 5) -> float:
    """The ridge strength of ALPHAS with the least error in cross-validation over whole episodes
    (groups) of the training rows only; the held-out episodes never choose it."""
    episodes = np.unique(groups)
    if len(episodes) < 3:
        return 1e-2
    k = min(folds, len(episodes))
    fold = np.searchsorted(episodes, groups) % k  # episodes interleaved over the folds
    err = np.zeros(len(ALPHAS))
    for i in range(k):
        fits = _ridge_fits(feats[fold != i], targets[fold != i], ALPHAS)
        err += [np.abs(fit(feats[fold == i]) - targets[fold == i]).sum() for fit in fits]
    return float(ALPHAS[int(np.argmin(err))])


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
#              features: on a few hundred probe rows ridge measures regularisation more than content;
#              `probe_scenes` fits it on thousands of rendered start scenes.
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
    return ProbeResult(
        names, n_train, n_test, _per_object(names, err), _per_object(names, base), f"{what} ({x.shape[1]})", alpha
    )


def _per_object(names: list, err: np.ndarray) -> dict[str, float]:
    """Mean xy error per object from per-row errors (M, 2 x objects)."""
    xy = np.linalg.norm(err.reshape(len(err), -1, 2), axis=-1).mean(0)
    return {k: float(v) for k, v in zip(names, xy, strict=True)}


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


# start scenes the evaluation's probe renders (3,200 fitted, 800 held out; ~4 min on a 2-core CPU): on place_cube
# the shipped encoder's tokens located the objects to 1.0-1.1 cm fitted on 2,000 scenes, 0.9 on 3,500, 0.7-0.8 on 5,000
PROBE_SCENES = 4000
PROBE_SEED = 20000  # their seeds start here: far from demonstrations (1000...) and evaluation episodes (5000...)
SCENE_FEATURES = ("clamp_tokens", "rgb_keypoints")


def probe_scenes(
    policy_dir,
    task: str,
    scenes: int = PROBE_SCENES,
    seed: int = PROBE_SEED,
    test_fraction: float = 0.2,
    image_size: tuple = (96, 128),
    progress: bool = True,
) -> dict:
    """The linear probe on start scenes rendered in clamp_sim: scene k is the start of episode `seed` + k
    (objects at their seeded pose, arms at the scripted demonstrator's jittered start), seen as the
    policy sees it at inference (the perception pipeline's views, the colour frames). Features: every
    token of the frozen CLAMP encoder (what the policy's transformer reads) and the colour keypoints.

    Why scenes and not demonstrations: a linear map from 80 tokens x 64 dims has 5,120 inputs, and 38
    demonstrations leave it data-starved. On place_cube (never in the shipped encoder's pretraining) its
    tokens located the cube to 5.4 cm fitted on 38 scenes, 2.4 cm on 300, 1.1 cm on 2,000, 0.8 cm on 5,000
    (the same 1,000 held out). A start scene costs one render, a demonstration hundreds of steps.
    Returns {feature: ProbeResult.to_json() + scenes_seed}, or {"skipped": why} for a policy that sees nothing."""
    from clamp_sim.aloha_sim import AlohaSim
    from clamp_sim.scripted import make_scripted_policy

    from .evaluation import LivePolicy

    if scenes < 5:
        raise ValueError(f"a probe needs at least 5 scenes (4 to fit, 1 held out); got {scenes}")
    live = LivePolicy(policy_dir, inference_steps=1, seed=0)
    policy = live.runner.policy.eval()
    has = {
        "clamp_tokens": policy.cfg.image_encoder.type == "clamp_vit3d",
        "rgb_keypoints": bool(policy.cfg.rgb.cameras),
    }
    kinds = [k for k in SCENE_FEATURES if has[k]]
    if not kinds:  # a state-only policy: nothing of what it sees to probe, and the episodes still count
        return {"skipped": "this policy reads neither CLAMP views nor colour cameras: there is nothing to probe"}
    feats: dict[str, list] = {k: [] for k in kinds}
    targets, names = [], None
    bar = _progress(range(scenes), progress, f"probe: {scenes} {task} start scenes")
    with AlohaSim(task, image_size=tuple(image_size)) as sim:
        sim.start_jitter = float(getattr(make_scripted_policy(task), "start_jitter", 0.0))
        for k in bar:
            sim.reset(seed + k)
            batch = live.runner.make_obs(live.observation(sim, sim.render(live.cameras)))
            if "clamp_tokens" in feats:
                feats["clamp_tokens"].append(clamp_features(policy, batch["views"], "tokens")[0])
            if "rgb_keypoints" in feats:
                feats["rgb_keypoints"].append(rgb_keypoints(policy, batch["rgb"])[0])
            objects = sim.object_positions()
            names = names or sorted(objects)
            targets.append(np.concatenate([np.asarray(objects[n][:2], float) for n in names]))
    y, groups = np.asarray(targets), np.arange(scenes)
    out = {}
    for kind, rows in feats.items():
        x = np.asarray(rows)
        err, base, n_train, n_test, alpha = ridge_probe(x, y, groups, test_fraction=test_fraction)
        res = ProbeResult(
            names, n_train, n_test, _per_object(names, err), _per_object(names, base), f"{kind} ({x.shape[1]})", alpha
        )
        out[kind] = {**res.to_json(), "scenes_seed": seed}
    return out


def _progress(it, on: bool, desc: str):
    if not on:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="scene", leave=False)


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
