"""Retrieval accuracy of CLAMP embeddings on held-out data, and an embedding plot.

    python -m clamp_training retrieval --run RUN [--data DATASET...] [--episodes held-out|all]
                                       [--max-samples 256] [--out DIR]

Among N held-out samples (candidates = the same N samples):
  image->action: is the nearest action-history embedding the sample's own?  (chance 1/N)
  action->image: the other way round.                                          (chance 1/N)
  image->text:   is the nearest prompt (among the distinct prompts of the N) the sample's own?
                 (chance 1/#distinct prompts: samples share prompts, e.g. same task and progress)
Top-1 and top-5 are reported with their chance levels; results go to retrieval.json (one JSON line
on stdout) and embeddings.png (PCA of the three modalities in one plane).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def compute_embeddings(model, dataset, max_samples: int = 256, batch_size: int = 32, seed: int = 0) -> dict:
    from .contrastive_data import collate

    model.eval()
    n = min(len(dataset), max_samples)
    idx = np.sort(np.random.default_rng(seed).choice(len(dataset), n, replace=False))
    out = {"image": [], "action": [], "text": [], "prompts": [], "episode": []}
    device = next(model.parameters()).device
    for s in range(0, n, batch_size):
        batch = collate([dataset[int(i)] for i in idx[s : s + batch_size]])
        out["image"].append(model.embed_image(batch["views"].to(device)).cpu())
        out["action"].append(model.embed_action(batch["action_history"].to(device)).cpu())
        out["text"].append(model.embed_text(batch["prompt"]).cpu())
        out["prompts"] += list(batch["prompt"])
        out["episode"] += batch["episode"].tolist()
    for k in ("image", "action", "text"):
        out[k] = torch.cat(out[k]).numpy()
    out["episode"] = np.asarray(out["episode"])
    return out


def _topk(sim: np.ndarray, correct: np.ndarray, k: int) -> float:
    """Fraction of rows whose top-k columns (by similarity) contain a correct column."""
    top = np.argsort(-sim, axis=1)[:, :k]
    return float(np.take_along_axis(correct, top, axis=1).any(axis=1).mean())


def retrieval_metrics(emb: dict) -> dict:
    img, act, txt = emb["image"], emb["action"], emb["text"]
    n = len(img)
    eye = np.eye(n, dtype=bool)
    prompts = np.asarray(emb["prompts"])
    uniq, inverse = np.unique(prompts, return_inverse=True)
    txt_u = np.stack([txt[np.argmax(inverse == u)] for u in range(len(uniq))])
    text_correct = inverse[:, None] == np.arange(len(uniq))[None, :]
    res = {
        "samples": n,
        "distinct_prompts": len(uniq),
        "image_to_action_top1": _topk(img @ act.T, eye, 1),
        "image_to_action_top5": _topk(img @ act.T, eye, 5),
        "action_to_image_top1": _topk(act @ img.T, eye, 1),
        "action_to_image_top5": _topk(act @ img.T, eye, 5),
        "image_to_text_top1": _topk(img @ txt_u.T, text_correct, 1),
        "image_to_text_top5": _topk(img @ txt_u.T, text_correct, 5),
        "chance_top1": 1.0 / n,
        "chance_top5": min(1.0, 5.0 / n),
        "text_chance_top1": 1.0 / len(uniq),
        "text_chance_top5": min(1.0, 5.0 / len(uniq)),
    }
    return res


def plot_embeddings(emb: dict, path, title: str = "CLAMP embeddings (PCA)") -> Path:
    """Image, action and text embeddings projected onto the first two principal components of all
    three together; colour = task progress parsed from the prompt (else episode); grey lines join the
    image and action embeddings of the same sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    allx = np.concatenate([emb["image"], emb["action"], emb["text"]])
    mean = allx.mean(0)
    _, _, vt = np.linalg.svd(allx - mean, full_matrices=False)
    proj = {k: (emb[k] - mean) @ vt[:2].T for k in ("image", "action", "text")}
    colour = np.array([_progress(p) for p in emb["prompts"]], dtype=float)
    if np.isnan(colour).any():
        colour = emb["episode"].astype(float)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for i in range(min(len(colour), 64)):
        ax.plot(*np.stack([proj["image"][i], proj["action"][i]]).T, color="0.8", lw=0.5, zorder=0)
    for key, marker in (("image", "o"), ("action", "^"), ("text", "s")):
        sc = ax.scatter(*proj[key].T, c=colour, marker=marker, s=14, cmap="viridis", label=key, alpha=0.8)
    fig.colorbar(sc, ax=ax, label="progress" if not np.isnan(colour).any() else "episode")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _progress(prompt: str) -> float:
    import re

    m = re.search(r"progress (\d+) of (\d+)", prompt)
    return float(m.group(1)) / float(m.group(2)) if m else float("nan")


def evaluate(model, dataset, out_dir=None, max_samples: int = 256, seed: int = 0) -> dict:
    emb = compute_embeddings(model, dataset, max_samples=max_samples, seed=seed)
    res = retrieval_metrics(emb)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "retrieval.json").write_text(json.dumps(res, indent=2) + "\n")
        plot_embeddings(emb, out / "embeddings.png")
    return res
