"""Pluggable image encoders: views (B, V, C, S, S) -> tokens (B, N, D) with attribute `out_dim`.

`build_image_encoder(cfg)` picks one from `ImageEncoderConfig.type`:
- "patch": `PatchImageEncoder`, a shared strided-conv patch embedding applied to every view, plus a
  learned 2D position embedding and a learned per-view embedding (ViT-style tokens; attention
  happens in the policy's transformer encoder).
- "clamp_vit3d": CLAMP's 3D-aware ViT, imported lazily from `clamp_policy.models.clamp_encoders`
  (`ImageEncoder3D({num_views, view_size, patch_size, dim, **options})` with
  `forward(views) -> (B, N, D)` and `out_dim`). It receives views in metres (not standardised), as
  its 3D position encoding needs world coordinates.
- "none": no image tokens (proprio/task-only policies, ablations).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ImageEncoderConfig


class PatchImageEncoder(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.dim
        grid = cfg.view_size // cfg.patch_size
        self.num_tokens = cfg.num_views * grid * grid
        self.patch = nn.Conv2d(cfg.in_channels, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.pos = nn.Parameter(torch.zeros(1, 1, grid * grid, cfg.dim))
        self.view = nn.Parameter(torch.zeros(1, cfg.num_views, 1, cfg.dim))
        self.norm = nn.LayerNorm(cfg.dim)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.view, std=0.02)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        b, v, c, h, w = views.shape
        if v != self.cfg.num_views or c != self.cfg.in_channels:
            raise ValueError(
                f"views have {v} views x {c} channels; this encoder was built for "
                f"{self.cfg.num_views} x {self.cfg.in_channels}"
            )
        x = self.patch(views.reshape(b * v, c, h, w))  # (B*V, D, g, g)
        x = x.flatten(2).transpose(1, 2).reshape(b, v, -1, self.out_dim)
        x = x + self.pos + self.view
        return self.norm(x.reshape(b, -1, self.out_dim))


class NoImageEncoder(nn.Module):
    out_dim = 0

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return views.new_zeros(views.shape[0], 0, 1)


def build_image_encoder(cfg: ImageEncoderConfig) -> nn.Module:
    if cfg.type == "patch":
        return PatchImageEncoder(cfg)
    if cfg.type == "none":
        return NoImageEncoder()
    if cfg.type == "clamp_vit3d":
        try:
            from .clamp_encoders import ImageEncoder3D
        except ImportError as exc:
            raise ImportError(
                "image_encoder.type='clamp_vit3d' needs clamp_policy.models.clamp_encoders.ImageEncoder3D "
                f"(the CLAMP encoders), which failed to import: {exc}. Use type='patch' or install them."
            ) from exc
        # ImageEncoder3D has its own config dataclass: the shared geometry keys plus `options`
        encoder = ImageEncoder3D(
            {
                "num_views": cfg.num_views,
                "view_size": cfg.view_size,
                "patch_size": cfg.patch_size,
                "dim": cfg.dim,
                **cfg.options,
            }
        )
        if not hasattr(encoder, "out_dim"):
            raise TypeError("ImageEncoder3D must expose `out_dim` (token width)")
        return encoder
    raise ValueError(f"unknown image_encoder.type={cfg.type!r}; choose 'patch', 'clamp_vit3d' or 'none'")
