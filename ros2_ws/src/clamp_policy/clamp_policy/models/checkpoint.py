"""Exported policy directories: `model.safetensors` + `config.json` + `model.safetensors.sha256`.

    POLICY_DIR/
      model.safetensors          weights (EMA) and normalisation buffers; no pickle anywhere
      config.json                {"format": "clamp_policy", "format_version", "policy_config": {...},
                                  "weights_sha256", "normalization" (readable copy), "metadata"}
      model.safetensors.sha256   `sha256sum -c` compatible

`load_policy(dir)` verifies the checksum, rebuilds the model from the config and loads the weights
strictly; any mismatch (checksum, unknown/missing config keys, missing/unexpected/misshapen
tensors) raises `CheckpointError` naming the mismatch and the fix.

Usage on the robot:
    policy = load_policy("/path/to/policy")          # eval mode, CPU
    chunk = policy.sample({"views": v, "state": s})  # (B, 50, 14); see diffusion_policy's docstring
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from .config import PolicyConfig
from .diffusion_policy import DiffusionPolicy

FORMAT = "clamp_policy"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CHECKSUM = WEIGHTS + ".sha256"
_FIX = "re-export it with `python -m clamp_training export RUN --out POLICY_DIR`"


class CheckpointError(RuntimeError):
    """An exported policy that cannot be loaded as it is; the message says why and how to fix it."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_policy(policy: DiffusionPolicy, out_dir: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write `policy` (its current weights: pass the EMA model) to `out_dir`; returns the dir."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    # write-then-rename so a reader never sees half a checkpoint
    with tempfile.NamedTemporaryFile(dir=out, suffix=".tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    save_file(tensors, str(tmp_path), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    digest = sha256_file(tmp_path)
    os.replace(tmp_path, out / WEIGHTS)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "policy_config": policy.cfg.to_dict(),
        "weights_sha256": digest,
        "normalization": policy.normalization(),
        "metadata": metadata or {},
    }
    (out / CONFIG).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (out / CHECKSUM).write_text(f"{digest}  {WEIGHTS}\n")
    return out


def read_config(policy_dir: str | os.PathLike) -> tuple[PolicyConfig, dict]:
    """(PolicyConfig, full config.json document) of an exported policy, validated."""
    d = Path(policy_dir)
    path = d / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {d} is not an exported policy; {_FIX}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); {_FIX}") from exc
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {doc.get('format')!r}, expected {FORMAT!r}; {_FIX}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {doc.get('format_version')} but this clamp_policy reads {FORMAT_VERSION}; "
            f"use the clamp_policy version that wrote it, or {_FIX}"
        )
    try:
        cfg = PolicyConfig.from_dict(doc["policy_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: policy_config does not match this clamp_policy: {exc}") from exc
    return cfg, doc


def load_policy(
    policy_dir: str | os.PathLike, device: str | torch.device = "cpu", verify_checksum: bool = True
) -> DiffusionPolicy:
    """Load an exported policy in eval mode; refuses anything that does not match (see module doc)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(policy_dir)
    cfg, doc = read_config(d)
    weights = d / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found beside {CONFIG}; {_FIX}")
    if verify_checksum:
        actual = sha256_file(weights)
        if actual != doc.get("weights_sha256"):
            raise CheckpointError(
                f"checksum mismatch: {weights} has sha256 {actual} but {d / CONFIG} records "
                f"{doc.get('weights_sha256')}; the weights were modified or come from another export. "
                f"Copy the whole policy directory again, or {_FIX}"
            )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc}); {_FIX}") from exc
    try:
        policy = DiffusionPolicy(cfg)
    except Exception as exc:  # e.g. clamp_vit3d encoder unavailable
        raise CheckpointError(f"cannot build the policy described by {d / CONFIG}: {exc}") from exc
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: weights {tuple(state[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append("shape mismatches " + "; ".join(shapes[:8]))
        raise CheckpointError(
            f"{weights} does not match the model described by {d / CONFIG}: " + ", ".join(parts) + ". "
            f"The config and weights come from different models; {_FIX}"
        )
    policy.load_state_dict(state, strict=True)
    return policy.to(device).eval()
