"""The CLAMP model of a pretraining run: built from the TrainConfig, saved as RUN/clamp/.

    RUN/clamp/model.safetensors         the whole CLAMP model (EMA weights): the policy with its 3D
                                        image encoder, the action encoder, the text projection, the
                                        SigLIP temperatures and biases
    RUN/clamp/config.json               {"format", "format_version", "config": TrainConfig dict, ...}
    RUN/clamp/model.safetensors.sha256

No pickle: safetensors + JSON; loading verifies the checksum and loads strictly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

CLAMP_FORMAT = "clamp_pretrained"
CLAMP_FORMAT_VERSION = 2  # 2: config is the one TrainConfig (stage pretrain)
WEIGHTS = "model.safetensors"


def build_clamp_model(cfg):
    """(ClampModel, resolved PolicyConfig) from a TrainConfig; clamp.embed_dim is shared by all encoders."""
    from clamp_core.config import ConfigError
    from clamp_policy.models.clamp_model import ClampModel
    from clamp_policy.models.diffusion_policy import DiffusionPolicy

    pol = cfg.policy
    enc = pol.image_encoder
    if enc.type != "clamp_vit3d":
        raise ConfigError(f"policy.image_encoder.type must be 'clamp_vit3d' for CLAMP, got {enc.type!r}")
    history = int(cfg.clamp.action_encoder.get("history", 10))
    if pol.action_history not in (0, history):
        raise ConfigError(
            f"policy.action_history={pol.action_history} must be 0 or clamp.action_encoder.history={history} "
            "(one action-history window feeds both)"
        )
    enc = dataclasses.replace(enc, options={**enc.options, "embed_dim": cfg.clamp.embed_dim})
    pol = dataclasses.replace(pol, image_encoder=enc).validate()
    return ClampModel(cfg.clamp, DiffusionPolicy(pol)), pol


def save_clamp(model, cfg, out_dir, metadata: dict | None = None) -> Path:
    from clamp_policy.models.checkpoint import sha256_file
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
        "config": cfg.to_dict(),
        "weights_sha256": digest,
        "metadata": metadata or {},
    }
    (out / "config.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (out / (WEIGHTS + ".sha256")).write_text(f"{digest}  {WEIGHTS}\n")
    return out


def clamp_dir(path) -> Path:
    d = Path(path)
    return d / "clamp" if (d / "clamp").is_dir() else d


def load_clamp(path, device: str = "cpu"):
    """(ClampModel in eval mode, TrainConfig, metadata) from RUN or RUN/clamp; checksum verified, strict."""
    from clamp_policy.models.checkpoint import sha256_file
    from safetensors.torch import load_file

    from .config import TrainConfig

    d = clamp_dir(path)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {path} is not a CLAMP pretraining run (RUN or RUN/clamp)")
    doc = json.loads(cfg_path.read_text())
    if doc.get("format") != CLAMP_FORMAT or doc.get("format_version") != CLAMP_FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path}: format {doc.get('format')!r} v{doc.get('format_version')} is not {CLAMP_FORMAT!r} "
            f"v{CLAMP_FORMAT_VERSION}; pretrain again with this version"
        )
    if sha256_file(d / WEIGHTS) != doc["weights_sha256"]:
        raise ValueError(f"checksum mismatch for {d / WEIGHTS}: the weights were modified; copy the run again")
    cfg = TrainConfig.from_dict(doc["config"], f"{cfg_path} config")
    model, _ = build_clamp_model(cfg)
    model.load_state_dict(load_file(str(d / WEIGHTS)), strict=True)
    return model.to(device).eval(), cfg, doc.get("metadata", {})
