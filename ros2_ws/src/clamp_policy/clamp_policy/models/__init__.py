"""Policy models shared by the robot (inference) and training/.

- `DiffusionPolicy` (diffusion_policy.py): the ALOHA-Unleashed-style policy; its docstring defines
  the observation dict of `sample(obs)`.
- `PolicyConfig`, `ImageEncoderConfig` (config.py): JSON-serialisable configuration.
- `build_image_encoder` (image_encoders.py): "patch" | "clamp_vit3d" | "none".
- `save_policy`, `load_policy` (checkpoint.py): safetensors + config.json + sha256, no pickle.
- `EMA` (ema.py).

Imports are lazy so `import clamp_policy.models` stays cheap for nodes that only need configs.
"""

from __future__ import annotations

_EXPORTS = {
    "DiffusionPolicy": "diffusion_policy",
    "untile_views": "diffusion_policy",
    "PolicyConfig": "config",
    "ImageEncoderConfig": "config",
    "tiny_config": "config",
    "paper_config": "config",
    "build_image_encoder": "image_encoders",
    "save_policy": "checkpoint",
    "load_policy": "checkpoint",
    "CheckpointError": "checkpoint",
    "EMA": "ema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
