"""Exponential moving average of a model's weights (what the exported policy carries)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """EMA with the usual warm-up: decay_t = min(decay, (1 + t) / (10 + t)), so early averages
    are not dominated by the random initialisation. Buffers (normalisation stats) are copied."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.steps = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.steps = int(state["steps"])
        self.model.load_state_dict(state["model"])
