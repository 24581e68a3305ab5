"""Resizing depth + xyz views, shared by the policy (robot), the dataset cache (training) and CLAMP.

One function so that what the robot feeds the model and what training fed it are the same numbers.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def masked_pool_views(views: torch.Tensor, size: int) -> torch.Tensor:
    """Downsample (..., 4, S, S) depth+xyz views to (..., 4, size, size) averaging VALID pixels only.

    Plain average pooling mixes empty pixels (zeros) into their neighbours: a pooled pixel at an
    object's edge gets a too-small depth and xyz pulled towards the world origin, i.e. points that do
    not exist, and a common translation of the xyz inputs no longer commutes with pooling. Here a
    pooled pixel is the mean of the valid (depth > 0, finite) pixels it covers, empty if it covers none.
    """
    *lead, c, h, w = views.shape
    x = views.reshape(-1, c, h, w).float()
    valid = (torch.isfinite(x).all(1, keepdim=True) & (torch.nan_to_num(x[:, :1], nan=0.0) > 0)).to(x.dtype)
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0) * valid
    if (h, w) != (size, size):
        num = F.adaptive_avg_pool2d(x, size)
        den = F.adaptive_avg_pool2d(valid, size)
        x = torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros((), dtype=x.dtype))
    return x.reshape(*lead, c, size, size)
