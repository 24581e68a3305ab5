"""Shared pieces of the CLAMP commands: config, checkpoint of the CLAMP model, DDP, logging, plots.

A pretraining run directory:

    RUN/
      config.yaml            the resolved configuration (policy, clamp, train)
      clamp/                 the whole CLAMP model (policy incl. image encoder, action encoder, text
        model.safetensors    projection, SigLIP temperatures/biases); config.json; sha256 file
        config.json
        model.safetensors.sha256
      policy/                the pretrained diffusion policy, exported (clamp_policy.models.checkpoint):
                             what `finetune --init RUN` starts from
      metrics.jsonl          one JSON object per logged step
      loss_curves.png, retrieval.json, embeddings.png, summary.json
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from clamp_core.config import check_keys, deep_merge, read_yaml

CLAMP_FORMAT = "clamp_pretrained"
CLAMP_FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"

# Small enough to pretrain on a CPU in minutes; scale up (paper-size ViT-S/16 at 224) on GPUs by
# overriding policy.image_encoder.* and train.* in the YAML config.
DEFAULT_CONFIG = {
    "policy": {  # clamp_policy.models.config.PolicyConfig fields
        "image_encoder": {
            "type": "clamp_vit3d",
            "view_size": 32,
            "patch_size": 8,
            "dim": 64,
            "options": {"depth": 2, "heads": 4, "pos_encoding": "string"},
        },
        "d_model": 64,
        "nhead": 4,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "ff_dim": 128,
        "dropout": 0.0,
        "train_timesteps": 50,
        "inference_steps": 5,
    },
    "clamp": {  # clamp_policy.models.clamp_model.ClampConfig fields
        "embed_dim": 64,
        "action_encoder": {"history": 10, "dim": 64, "depth": 2, "heads": 4},
        "text_encoder": {"hidden": 128},
        "loss": {"init_temperature": 10.0, "init_bias": -10.0},
        "diffusion_weight": 1.0,
    },
    "prompt": {"position_bins": 100, "progress_bins": 10},
    "train": {
        "steps": 300,
        "batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 0.01,
        "warmup_steps": 20,
        "grad_clip": 1.0,
        "val_fraction": 0.2,
        "seed": 0,
        "log_every": 10,
        "num_workers": 0,
        "retrieval_samples": 256,
        "cache_bytes": 4.0e9,
        "threads": 0,  # torch CPU threads (0 = torch's default); 1 is much faster on a busy small machine
    },
}


# GPU scale in the spirit of the paper: 224 x 224 views, 16-px patches (5 x 196 tokens), a ViT-S-like
# 3D encoder (width 384, 12 blocks, 6 heads) and an ALOHA-Unleashed-size policy. Use with torchrun.
PAPER_OVERRIDES = {
    "policy": {
        "image_encoder": {
            "view_size": 224,
            "patch_size": 16,
            "dim": 384,
            "options": {"depth": 12, "heads": 6, "dropout": 0.0},
        },
        "d_model": 512,
        "nhead": 8,
        "encoder_layers": 4,
        "decoder_layers": 6,
        "ff_dim": 2048,
        "dropout": 0.1,
        "train_timesteps": 100,
        "inference_steps": 10,
    },
    "clamp": {"embed_dim": 256, "action_encoder": {"history": 10, "dim": 256, "depth": 4, "heads": 8}},
    "train": {"steps": 100000, "batch_size": 256, "lr": 3e-4, "warmup_steps": 2000, "log_every": 50},
}
PRESETS = {"small": {}, "paper": PAPER_OVERRIDES}


def load_config(path: str | os.PathLike | None, overrides: dict | None = None, preset: str = "small") -> dict:
    """DEFAULT_CONFIG <- preset <- YAML file <- overrides (command-line options)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")

    user = {}
    if path:
        user = read_yaml(path, "CLAMP config")
        check_keys(user, DEFAULT_CONFIG, f"CLAMP config {path}", what="section")
    cfg = deep_merge(deep_merge(DEFAULT_CONFIG, PRESETS[preset]), user)
    return deep_merge(cfg, overrides)


def build_model(cfg: dict):
    """(ClampModel, PolicyConfig) from the resolved config; embed_dim is shared by all encoders."""
    from clamp_policy.models.clamp_model import ClampConfig, ClampModel
    from clamp_policy.models.config import PolicyConfig
    from clamp_policy.models.diffusion_policy import DiffusionPolicy

    clamp_cfg = ClampConfig.from_dict(cfg["clamp"])
    pol = copy.deepcopy(cfg["policy"])
    enc = pol.setdefault("image_encoder", {})
    if enc.get("type") != "clamp_vit3d":
        raise ValueError(f"policy.image_encoder.type must be 'clamp_vit3d' for CLAMP, got {enc.get('type')!r}")
    enc.setdefault("options", {})["embed_dim"] = clamp_cfg.embed_dim
    history = int(clamp_cfg.action_encoder.get("history", 10))
    if pol.get("action_history", 0) not in (0, history):
        raise ValueError(
            f"policy.action_history={pol['action_history']} must be 0 or clamp.action_encoder.history={history} "
            "(one action-history window feeds both)"
        )
    policy_cfg = PolicyConfig.from_dict(pol)
    return ClampModel(clamp_cfg, DiffusionPolicy(policy_cfg)), policy_cfg


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_clamp(model, cfg: dict, out_dir, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": CLAMP_FORMAT})
    digest = sha256_file(tmp)
    os.replace(tmp, out / WEIGHTS)
    doc = {
        "format": CLAMP_FORMAT,
        "format_version": CLAMP_FORMAT_VERSION,
        "config": cfg,
        "weights_sha256": digest,
        "metadata": metadata or {},
    }
    (out / "config.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (out / (WEIGHTS + ".sha256")).write_text(f"{digest}  {WEIGHTS}\n")
    return out


def load_clamp(path, device: str = "cpu"):
    """(ClampModel in eval mode, config) from RUN or RUN/clamp; checksum verified, strict load."""
    from safetensors.torch import load_file

    d = Path(path)
    if (d / "clamp").is_dir():
        d = d / "clamp"
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {path} is not a CLAMP pretraining run (RUN or RUN/clamp)")
    doc = json.loads(cfg_path.read_text())
    if doc.get("format") != CLAMP_FORMAT or doc.get("format_version") != CLAMP_FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: not a {CLAMP_FORMAT} v{CLAMP_FORMAT_VERSION} checkpoint")
    if sha256_file(d / WEIGHTS) != doc["weights_sha256"]:
        raise ValueError(f"checksum mismatch for {d / WEIGHTS}: the weights were modified; copy the run again")
    model, _ = build_model(doc["config"])
    model.load_state_dict(load_file(str(d / WEIGHTS)), strict=True)
    return model.to(device).eval(), doc["config"]


# --------------------------------------------------------------------------------------------- DDP
def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world, device); initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device(device)


# ------------------------------------------------------------------------------------------- plots
def plot_curves(metrics: list[dict], path, keys: list[str], title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [m for m in metrics if "step" in m]
    keys = [k for k in keys if any(k in m for m in rows)]
    if not rows or not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(m["step"], m[key]) for m in rows if key in m]
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup then cosine decay to 10 %."""
    import math

    if step < warmup:
        return (step + 1) / max(warmup, 1)
    frac = (step - warmup) / max(total - warmup, 1)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


class cpu_threads:
    """Context manager: torch.set_num_threads(n) inside, restored after (n <= 0: unchanged)."""

    def __init__(self, n: int):
        self.n, self.old = int(n or 0), None

    def __enter__(self):
        if self.n > 0:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)
        return False
