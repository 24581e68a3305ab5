"""Colour cameras -> one token per camera: a small conv net per camera with a spatial-softmax readout.

The spatial softmax turns each of K feature maps into the expected (x, y) image coordinate of its
activation: K learned keypoints that say where things are (the cube, the plate, the gripper), which
is what a policy needs to reach for an object whose position changes from episode to episode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import RgbConfig


class SpatialSoftmax(nn.Module):
    """(B, K, H, W) feature maps -> (B, K, 2) expected (x, y) in [-1, 1]; learned temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, h, w = x.shape
        attn = torch.softmax(x.reshape(b, k, h * w) / self.log_temperature.exp(), dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)  # (HW, 2)
        return attn @ grid


class CameraEncoder(nn.Module):
    def __init__(self, cfg: RgbConfig, out_dim: int) -> None:
        super().__init__()
        c = cfg.channels
        # two stride-2 stages keep it cheap on a CPU; the softmax readout is sub-pixel anyway
        self.net = nn.Sequential(
            nn.Conv2d(3, c // 2, 5, stride=2, padding=2),
            nn.GroupNorm(8, c // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1),
            nn.GroupNorm(8, c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
            nn.GroupNorm(8, c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, cfg.keypoints, 1),
        )
        self.softmax = SpatialSoftmax()
        self.kp_norm = nn.BatchNorm1d(2 * cfg.keypoints) if cfg.keypoint_norm else nn.Identity()
        self.proj = nn.Sequential(nn.Linear(2 * cfg.keypoints, out_dim), nn.Mish(), nn.Linear(out_dim, out_dim))

    def keypoints(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) prepared image -> (B, K, 2) keypoints: where each feature map attends."""
        return self.softmax(self.net(img))

    def forward(self, img: torch.Tensor, keypoint_noise: float = 0.0) -> torch.Tensor:
        kp = self.keypoints(img)
        if keypoint_noise > 0:
            kp = kp + keypoint_noise * torch.randn_like(kp)
        return self.proj(self.kp_norm(kp.flatten(1)))


class RgbEncoder(nn.Module):
    """obs["rgb"] (B, C, 3, H, W) 0..255 -> (B, C, out_dim) tokens, one per camera."""

    def __init__(self, cfg: RgbConfig, out_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.cams = nn.ModuleList(CameraEncoder(cfg, out_dim) for _ in cfg.cameras)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

    def prepare(self, rgb: torch.Tensor) -> torch.Tensor:
        """Resize (area) to cfg.size and standardise: (B, C, 3, H, W) -> same layout, float."""
        b, c = rgb.shape[:2]
        if c != len(self.cfg.cameras) or rgb.shape[2] != 3:
            raise ValueError(
                f"obs['rgb'] has shape {tuple(rgb.shape)}; expected (B, {len(self.cfg.cameras)}, 3, H, W) "
                f"for cameras {self.cfg.cameras}"
            )
        x = rgb.float().flatten(0, 1)
        h, w = self.cfg.size
        if tuple(x.shape[-2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="area")
        x = (x - self.mean) / self.std
        return x.reshape(b, c, 3, h, w)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random shift by up to cfg.shift pixels (replicate padding + random crop), per image."""
        s = self.cfg.shift
        if s <= 0:
            return x
        b, c, ch, h, w = x.shape
        flat = F.pad(x.flatten(0, 1), (s, s, s, s), mode="replicate")
        n = flat.shape[0]
        # integer shifts via a translated sampling grid (one batched op instead of a Python loop)
        shift = torch.randint(0, 2 * s + 1, (n, 2), device=x.device).float()
        ys = torch.arange(h, device=x.device).float()
        xs = torch.arange(w, device=x.device).float()
        gy = (ys[None, :, None] + shift[:, 1, None, None]) / (h + 2 * s - 1) * 2 - 1
        gx = (xs[None, None, :] + shift[:, 0, None, None]) / (w + 2 * s - 1) * 2 - 1
        grid = torch.stack([gx.expand(n, h, w), gy.expand(n, h, w)], dim=-1)
        out = F.grid_sample(flat, grid, mode="nearest", align_corners=True)
        return out.reshape(b, c, ch, h, w)

    def forward(self, rgb: torch.Tensor, augment: bool = False) -> torch.Tensor:
        x = self.prepare(rgb)
        if augment:
            x = self.augment(x)
        noise = self.cfg.keypoint_noise if augment else 0.0
        return torch.stack([enc(x[:, i], noise) for i, enc in enumerate(self.cams)], dim=1)
