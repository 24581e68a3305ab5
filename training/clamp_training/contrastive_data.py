"""CLAMP samples on top of the training dataset (`clamp_training.dataset.ChunkDataset`).

A CLAMP sample is a ChunkDataset item (views, state, action chunk, action history, task) plus
  prompt:  the CLAMP prompt (task + object names at normalised integer positions + integer progress),
           objects from the episode's `objects` attribute (clamp_sim writes them; real data may not),
           progress = t / (episode length - 1);
  episode: the episode index (held-out splits are by episode, never by step).

`write_synthetic_dataset` writes `contrastive_synthetic` episodes in the converted-dataset layout that
`clamp_training.dataset` documents, so tests and smoke runs go through the same loader as real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .prompts import build_prompt


class ClampDataset(torch.utils.data.Dataset):
    """ChunkDataset items + prompt + episode index, optionally restricted to some episodes."""

    def __init__(self, base, episodes: list[int] | None = None, prompt_kwargs: dict | None = None):
        self.base = base
        self.prompt_kwargs = dict(prompt_kwargs or {})
        keep = np.ones(len(base.index), bool) if episodes is None else np.isin(base.index[:, 0], episodes)
        self.rows = np.nonzero(keep)[0]
        if len(self.rows) == 0:
            raise ValueError(f"no samples: episodes {episodes} select nothing from {len(base.episodes)} episodes")

    def __len__(self) -> int:
        return len(self.rows)

    def sample_episode(self, i: int) -> int:
        return int(self.base.index[self.rows[i], 0])

    def prompt(self, i: int) -> str:
        e_idx, t = (int(x) for x in self.base.index[self.rows[i]])
        ep = self.base.episodes[e_idx]
        n = len(ep.action)
        objects = ep.attrs.get("objects") or None
        return build_prompt(ep.task, objects, t / max(n - 1, 1), **self.prompt_kwargs)

    def all_prompts(self) -> list[str]:
        return [self.prompt(i) for i in range(len(self))]

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[int(self.rows[i])])
        item["prompt"] = self.prompt(i)
        item["episode"] = self.sample_episode(i)
        return item


def open_clamp_data(roots, chunk_length: int, history: int, view_size: int, cache_bytes: float = 4e9, rgb_cameras=()):
    """ChunkDataset over the given converted datasets with views pooled to the model's size (once, into
    RAM, as far as `cache_bytes` goes; the rest when read), and the policy's colour cameras."""
    from .dataset import ChunkDataset

    return ChunkDataset(
        [str(r) for r in roots],
        chunk_length=chunk_length,
        action_history=history,
        use_views=True,
        view_cache_size=view_size,
        cache_bytes=cache_bytes,
        progress=False,
        rgb_cameras=rgb_cameras,
    )


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep strings as lists (prompts, tasks)."""
    out = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if isinstance(vals[0], str):
            out[key] = vals
        elif isinstance(vals[0], torch.Tensor):
            out[key] = torch.stack(vals)
        else:
            out[key] = torch.as_tensor(np.asarray(vals))
    return out


def write_synthetic_dataset(root, episodes: int = 24, steps: int = 40, size: int = 32, seed: int = 0) -> Path:
    """`contrastive_synthetic` episodes as a converted dataset (layout of clamp_training.dataset)."""
    import zarr
    from clamp_core import rig
    from tqdm import tqdm

    from . import dataset as ds
    from .contrastive_synthetic import make_episode

    root = Path(root)
    (root / ds.EPISODES_DIR).mkdir(parents=True, exist_ok=True)
    names = []
    for k in tqdm(range(episodes), desc="synthetic episodes", unit="ep", leave=False):
        ep = make_episode(seed * 100003 + k, steps=steps, size=size)
        name = f"synthetic_{seed}_{k:04d}"
        g = zarr.open_group(str(root / ds.EPISODES_DIR / f"{name}.zarr"), mode="w")
        # zarr 3 (Python >= 3.11) has create_array, zarr 2 (the robot's Python 3.10) create_dataset
        create = g.create_array if hasattr(g, "create_array") else g.create_dataset
        n = len(ep["action"])
        create("state", data=ep["state"].astype(np.float32))
        create("action", data=ep["action"].astype(np.float32))
        create("step_time", data=np.arange(n) / 50.0)
        create("view_index", data=np.arange(n, dtype=np.int32))
        create("frame_time", data=np.arange(n) / 50.0)
        create("views", data=ep["views"].astype(np.float16))
        g.attrs.update(
            {
                "task": ep["task"],
                "success": True,
                "source": "sim",
                "action_source": "synthetic",
                "seed": int(seed * 100003 + k),
                "objects": ep["objects"],
            }
        )
        names.append(name)
    ds.write_stats(root, names)
    doc = {
        "format": ds.FORMAT,
        "format_version": ds.FORMAT_VERSION,
        "control_hz": 50.0,
        "view_size": size,
        # the rig layout the synthetic episodes follow (fine-tuning checks it against the checkpoint's)
        "action_names": list(rig.ACTION_NAMES),
        "view_names": list(rig.VIEW_NAMES),
        "view_channels": list(rig.VIEW_CHANNELS),
        "view_shape": [len(rig.VIEW_NAMES), len(rig.VIEW_CHANNELS), size, size],
        "episodes": [{"name": n} for n in names],
        "source": "clamp_training.contrastive_data.write_synthetic_dataset",
    }
    (root / ds.DATASET_JSON).write_text(json.dumps(doc, indent=1))
    return root
