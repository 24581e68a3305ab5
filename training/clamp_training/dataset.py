"""The converted dataset: one zarr group per episode, plus the dataset-level index and statistics.

    DATASET/
      dataset.json               format, version, control_hz, view/camera configuration, episode list
      stats.json                 normalisation: state mean/std, action min/max, view mean/std (+ counts)
      episodes/<bag name>.zarr   one group per episode (written to *.tmp then renamed: resumable)

Per episode group (N control steps at rig.CONTROL_HZ, M camera frame sets):

    state          (N, 14)  float32   follower state (rig.state_from_joint_states)
    action         (N, 14)  float32   leader / commanded joints via the rig (gripper 0..1)
    step_time      (N,)     float64   seconds since the episode's first step
    step_stamp     (N,)     int64     the step's time on the bag's clock (ns)
    view_index     (N,)     int32     frame set shown at each step: the latest one not after it
    frame_time     (M,)     float64   seconds, same clock as step_time
    frame_stamp    (M,)     int64     the frame set's stamp (reference camera's colour image, ns)
    views          (M, V, 4, S, S) float16   CLAMP views (depth, world x, y, z; metres), if rendered
    rgb/<cam>      (M, h, w, 3) uint8        colour images (optionally downscaled), if stored
    attrs          task, success, source, action_source, seed, bag, objects (name -> xyz), extras

`ChunkDataset` turns episodes into training samples: the observation at step t and the action chunk
actions[t : t + chunk_length] (the last action repeated past the episode end, i.e. "hold").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from clamp_policy.models.views import masked_pool_views

FORMAT = "clamp_dataset"
FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"
STATS_JSON = "stats.json"
EPISODES_DIR = "episodes"
# a joint that never moves in the demonstrations (the idle arm) would get std ~0: a 0.01 rad
# deviation in closed loop would then be a huge input. 0.05 rad / 5% of the gripper range.
STATE_STD_FLOOR = 0.05


class DatasetError(RuntimeError):
    """A dataset directory that cannot be used; the message names the problem and the fix."""


def is_dataset(path: str | os.PathLike) -> bool:
    return (Path(path) / DATASET_JSON).is_file()


def open_episode(path: str | os.PathLike):
    import zarr

    return zarr.open_group(str(path), mode="r")


def read_dataset_json(root: str | os.PathLike) -> dict:
    p = Path(root) / DATASET_JSON
    if not p.is_file():
        raise DatasetError(
            f"{p} not found: {root} is not a converted dataset. Convert bags first: "
            f"`python -m clamp_training convert BAG_DIR... --out {root}` (or pass the bag dirs to train)"
        )
    doc = json.loads(p.read_text())
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{p}: format {doc.get('format')!r} v{doc.get('format_version')} is not {FORMAT!r} "
            f"v{FORMAT_VERSION}; re-convert the bags with this version"
        )
    return doc


def read_stats(root: str | os.PathLike) -> dict:
    p = Path(root) / STATS_JSON
    if not p.is_file():
        raise DatasetError(f"{p} not found; re-run `python -m clamp_training convert` to finalise the dataset")
    return json.loads(p.read_text())


def compute_stats(out: Path, names: list[str], max_view_frames: int = 64, seed: int = 0) -> dict:
    """state mean/std, action min/max (all steps); per-channel view mean/std over finite pixels of
    up to max_view_frames frames per episode (sampled) - enough for a normaliser."""
    rng = np.random.default_rng(seed)
    states, actions = [], []
    vsum = vsq = None
    vcount = 0
    for n in names:
        g = open_episode(out / EPISODES_DIR / f"{n}.zarr")
        states.append(np.asarray(g["state"][:], np.float64))
        actions.append(np.asarray(g["action"][:], np.float64))
        if "views" in set(g.array_keys()):
            views = g["views"]
            idx = np.sort(rng.choice(views.shape[0], min(max_view_frames, views.shape[0]), replace=False))
            for i in idx:
                v = np.asarray(views[int(i)], np.float64)  # (V, C, S, S)
                v = np.moveaxis(v, 1, 0).reshape(v.shape[1], -1)
                valid = np.isfinite(v).all(0) & (v[0] > 0)  # depth 0 / non-finite = empty pixel
                x = v[:, valid]
                vsum = x.sum(1) if vsum is None else vsum + x.sum(1)
                vsq = (x**2).sum(1) if vsq is None else vsq + (x**2).sum(1)
                vcount += x.shape[1]
    s, a = np.concatenate(states), np.concatenate(actions)
    if vcount:
        vmean = vsum / vcount
        vstd = np.sqrt(np.maximum(vsq / vcount - vmean**2, 0.0))
    else:
        vmean, vstd = np.zeros(4), np.ones(4)
    return {
        "state_mean": s.mean(0).tolist(),
        "state_std": s.std(0).tolist(),
        "state_count": len(s),
        "action_min": a.min(0).tolist(),
        "action_max": a.max(0).tolist(),
        "action_mean": a.mean(0).tolist(),
        "action_std": a.std(0).tolist(),
        "view_mean": vmean.tolist(),
        "view_std": vstd.tolist(),
        "view_count": int(vcount),
    }


def write_stats(root: str | os.PathLike, names: list[str]) -> dict:
    """The one writer of DATASET/stats.json (convert and the synthetic datasets): `compute_stats`
    over the named episodes, written atomically; returns the stats."""
    root = Path(root)
    stats = compute_stats(root, names)
    tmp = root / (STATS_JSON + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2) + "\n")
    os.replace(tmp, root / STATS_JSON)
    return stats


def dataset_stats(roots: list[str | os.PathLike]) -> dict:
    """The statistics of several datasets together (each one's stats.json, merged)."""
    return merge_stats([read_stats(r) for r in roots])


def merge_stats(stats: list[dict]) -> dict:
    """Combine per-dataset stats (count-weighted mean/var, global min/max)."""
    if len(stats) == 1:
        return stats[0]
    out: dict = {}
    for kind in ("state", "view"):
        n = np.array([s[f"{kind}_count"] for s in stats], dtype=np.float64)
        mean = np.array([s[f"{kind}_mean"] for s in stats])
        var = np.array([s[f"{kind}_std"] for s in stats]) ** 2
        tot = max(n.sum(), 1.0)
        m = (n[:, None] * mean).sum(0) / tot
        v = (n[:, None] * (var + (mean - m) ** 2)).sum(0) / tot
        out[f"{kind}_mean"], out[f"{kind}_std"], out[f"{kind}_count"] = m.tolist(), np.sqrt(v).tolist(), int(tot)
    out["action_min"] = np.min([s["action_min"] for s in stats], axis=0).tolist()
    out["action_max"] = np.max([s["action_max"] for s in stats], axis=0).tolist()
    return out


def policy_stats(stats: dict) -> dict:
    """The subset `DiffusionPolicy.set_normalization` takes (std floored so nothing divides by ~0)."""
    return {
        "state_mean": stats["state_mean"],
        "state_std": np.maximum(np.asarray(stats["state_std"]), STATE_STD_FLOOR).tolist(),
        "action_min": stats["action_min"],
        "action_max": stats["action_max"],
        "view_mean": stats["view_mean"],
        "view_std": np.maximum(np.asarray(stats["view_std"]), 1e-3).tolist(),
    }


@dataclass
class Episode:
    name: str
    path: Path
    task: str
    state: np.ndarray  # (N, 14) float32
    action: np.ndarray  # (N, 14) float32
    view_index: np.ndarray  # (N,) int32
    views: object | None  # zarr array (M, V, 4, S, S) or None
    attrs: dict
    rgb: dict | None = None  # camera -> zarr array (M, h, w, 3) uint8, when stored


def check_finite(name: str, kind: str, values: np.ndarray) -> None:
    """Refuse NaN/inf in an episode's states or actions, naming the episode and the first bad step."""
    bad = ~np.isfinite(values)
    if bad.any():
        step, dim = (int(v) for v in np.argwhere(bad)[0])
        raise DatasetError(
            f"episode {name}: {kind} at step {step} (dimension {dim}) is {values[step, dim]}; "
            f"{int(bad.any(axis=1).sum())} step(s) are not finite. Fix or drop this episode (re-record it, "
            "or remove it from the dataset's episode list) before training"
        )


def load_episodes(roots: list[str | os.PathLike]) -> tuple[list[Episode], list[dict]]:
    """All episodes of the given datasets (small arrays in RAM, views left on disk); dataset docs."""
    episodes: list[Episode] = []
    docs = []
    for root in roots:
        doc = read_dataset_json(root)
        docs.append(doc)
        for ep in doc["episodes"]:
            path = Path(root) / EPISODES_DIR / f"{ep['name']}.zarr"
            if not path.is_dir():
                raise DatasetError(
                    f"episode {ep['name']} listed in {Path(root) / DATASET_JSON} is missing at {path}; "
                    "re-run the conversion (it resumes)"
                )
            g = open_episode(path)
            names = set(g.array_keys())
            rgb = {c: g["rgb"][c] for c in g["rgb"].array_keys()} if "rgb" in set(g.group_keys()) else None
            episodes.append(
                Episode(
                    name=ep["name"],
                    path=path,
                    task=str(g.attrs.get("task", "")),
                    state=np.asarray(g["state"][:], dtype=np.float32),
                    action=np.asarray(g["action"][:], dtype=np.float32),
                    view_index=np.asarray(g["view_index"][:], dtype=np.int64),
                    views=g["views"] if "views" in names else None,
                    attrs=dict(g.attrs),
                    rgb=rgb,
                )
            )
            check_finite(ep["name"], "state", episodes[-1].state)
            check_finite(ep["name"], "action", episodes[-1].action)
    if not episodes:
        raise DatasetError(f"no episodes in {[str(r) for r in roots]}; convert some bags first")
    return episodes, docs


class ChunkDataset(torch.utils.data.Dataset):
    """(observation at step t, action chunk from t) samples over episodes.

    Items: {"views": float32 (V, 4, S, S) [if the dataset has views and use_views],
            "state": float32 (14,), "actions": float32 (chunk_length, 14), "task": str,
            "action_history": float32 (H, 14) [if action_history > 0; first action repeated before t=0]}.

    view_cache_size: if set, every frame is pooled (mean of valid pixels) once to this size (exactly what
    DiffusionPolicy.prepare_views does on the fly) and kept in RAM as float32, as long as it fits in
    cache_bytes; items then come from memory instead of decompressing full-size views each time.
    """

    def __init__(
        self,
        roots: list[str | os.PathLike],
        chunk_length: int,
        action_history: int = 0,
        use_views: bool = True,
        view_cache_size: int | None = None,
        cache_bytes: float = 4e9,
        progress: bool = True,
        rgb_cameras: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.episodes, self.docs = load_episodes(roots)
        self.rgb_cameras = list(rgb_cameras)
        # colour frames are small (uint8 at the stored size): all in RAM, (M, C, 3, h, w) per episode
        self._rgb: dict[int, torch.Tensor] = {}
        for i, e in enumerate(self.episodes):
            if not self.rgb_cameras:
                break
            missing = [c for c in self.rgb_cameras if not e.rgb or c not in e.rgb]
            if missing:
                raise DatasetError(
                    f"episode {e.name} has no colour images of {missing} (stored: {sorted(e.rgb or [])}); "
                    "re-convert with --rgb-scale > 0 or train without rgb.cameras"
                )
            self._rgb[i] = torch.from_numpy(
                np.stack([np.asarray(e.rgb[c][:]) for c in self.rgb_cameras], 1).transpose(0, 1, 4, 2, 3).copy()
            )
        self.chunk_length = chunk_length
        self.action_history = action_history
        self.use_views = use_views and all(e.views is not None for e in self.episodes)
        if use_views and not self.use_views:
            missing = [e.name for e in self.episodes if e.views is None][:5]
            raise DatasetError(
                f"episodes {missing} have no views (converted with --no-views); re-convert with views "
                "or train with an image_encoder.type='none' config"
            )
        self.index = np.concatenate(
            [np.stack([np.full(len(e.state), i), np.arange(len(e.state))], 1) for i, e in enumerate(self.episodes)]
        )
        self.tasks = sorted({e.task for e in self.episodes})
        self._cache: dict[int, torch.Tensor] = {}
        self._view_size = view_cache_size if self.use_views else None
        if self._view_size:
            self._build_cache(view_cache_size, cache_bytes, progress)

    def _build_cache(self, size: int, cache_bytes: float, progress: bool) -> None:
        from tqdm import tqdm

        budget = cache_bytes
        bar = tqdm(self.episodes, desc="caching views", unit="ep", disable=not progress, leave=False)
        for i, ep in enumerate(bar):
            m, v, c = ep.views.shape[:3]
            need = m * v * c * size * size * 4
            if need > budget:
                break  # the rest is read from disk per item
            pooled = torch.empty((m, v, c, size, size), dtype=torch.float32)
            for a in range(0, m, 32):  # blocks: a long episode at full size would not fit in RAM
                block = torch.from_numpy(np.asarray(ep.views[a : a + 32], dtype=np.float32))
                pooled[a : a + len(block)] = pool_views(block, size)
            self._cache[i] = pooled
            budget -= need

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        e_idx, t = (int(x) for x in self.index[i])
        ep = self.episodes[e_idx]
        n = len(ep.action)
        steps = np.minimum(np.arange(t, t + self.chunk_length), n - 1)
        item = {
            "state": torch.from_numpy(ep.state[t]),
            "actions": torch.from_numpy(ep.action[steps]),
            "task": ep.task,
        }
        if self.action_history > 0:
            hist = np.maximum(np.arange(t - self.action_history, t), 0)
            item["action_history"] = torch.from_numpy(ep.action[hist])
        if self.rgb_cameras:
            item["rgb"] = self._rgb[e_idx][int(ep.view_index[t])]
        if self.use_views:
            f = int(ep.view_index[t])
            cached = self._cache.get(e_idx)
            if cached is not None:
                item["views"] = cached[f]
            else:
                views = torch.from_numpy(np.asarray(ep.views[f], dtype=np.float32))
                # beyond the cache budget: pooled per item, so every item has the cached episodes' size
                item["views"] = pool_views(views, self._view_size) if self._view_size else views
        return item


def pool_views(views: torch.Tensor, size: int) -> torch.Tensor:
    """(..., V, C, S, S) metres -> (..., V, C, size, size), exactly as DiffusionPolicy.prepare_views pools."""
    return masked_pool_views(views, size)


def split_episodes(ds: ChunkDataset, val_episodes: int = 0, val_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of `ds.index`, split by episode, never by step.

    The held-out episodes are the last ones by name: `val_episodes` of them, else round(val_fraction x
    episodes) with at least one when val_fraction > 0. Deterministic, so a later tool (retrieval,
    evaluation) finds the same split from the run's config.
    """
    names = sorted(e.name for e in ds.episodes)
    n_val = int(val_episodes)
    if n_val <= 0 and val_fraction > 0:
        n_val = max(1, int(round(val_fraction * len(names))))
    if n_val <= 0:
        return np.arange(len(ds.index)), np.zeros(0, dtype=np.int64)
    if n_val >= len(names):
        raise DatasetError(
            f"holding out {n_val} episode(s) (val_episodes={val_episodes}, val_fraction={val_fraction}) leaves no "
            f"training episode (the data has {len(names)}); lower them or add episodes"
        )
    held_names = set(names[-n_val:])
    held = [i for i, e in enumerate(ds.episodes) if e.name in held_names]
    is_val = np.isin(ds.index[:, 0], held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
