"""The CLAMP pretraining model: image / action / text encoders + tri-modal SigLIP loss + diffusion policy.

The image encoder is the diffusion policy's own (`policy.image_encoder`, type "clamp_vit3d"), so
pretraining trains one ImageEncoder3D with both the contrastive loss and the diffusion loss, and the
exported policy carries the pretrained encoder; fine-tuning freezes it (`freeze_encoders`).

Batch (dict, batch first; the windows `clamp_training.contrastive_data` cuts from episodes):
  views (B, V, 4, S, S) metres, state (B, 14), action_history (B, H, 14) the actions before the
  observation (oldest first), actions (B, 50, 14) the chunk from the observation on, prompts: list of
  B strings (optional: no text pairs without them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .clamp_encoders import ActionEncoder, ImageEncoder3D, TextEncoder
from .siglip import TriModalSigLIP


@dataclass
class ClampConfig:
    embed_dim: int = 256  # shared contrastive embedding size (forced into all three encoders)
    action_encoder: dict = field(default_factory=dict)  # ActionEncoderConfig fields
    text_encoder: dict = field(default_factory=dict)  # TextEncoderConfig fields
    loss: dict = field(default_factory=dict)  # init_temperature, init_bias, weights {pair: w}
    diffusion_weight: float = 1.0  # joint diffusion-policy pretraining (0 = contrastive only)

    @classmethod
    def from_dict(cls, d: dict | None) -> ClampConfig:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"clamp config: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**d)


class ClampModel(nn.Module):
    """Holds the policy (with its ImageEncoder3D), the action and text encoders and the loss."""

    def __init__(self, cfg: ClampConfig, policy: nn.Module):
        super().__init__()
        self.cfg = cfg
        if not isinstance(getattr(policy, "image_encoder", None), ImageEncoder3D):
            raise ValueError(
                "CLAMP pretraining needs a policy whose image encoder is the 3D-aware ViT: set "
                "policy.image_encoder.type: clamp_vit3d in the config"
            )
        self.policy = policy
        if self.image.embed_dim != cfg.embed_dim:
            raise ValueError(
                f"policy.image_encoder.options.embed_dim={self.image.embed_dim} differs from clamp.embed_dim="
                f"{cfg.embed_dim}; the three encoders share one embedding space"
            )
        self.action = ActionEncoder({**cfg.action_encoder, "embed_dim": cfg.embed_dim})
        self.text = TextEncoder({**cfg.text_encoder, "embed_dim": cfg.embed_dim})
        self.loss_fn = TriModalSigLIP(**cfg.loss)

    @property
    def image(self) -> ImageEncoder3D:
        return self.policy.image_encoder

    @property
    def history(self) -> int:
        return self.action.cfg.history

    # -------------------------------------------------------------------------------- embeddings
    def normalized_history(self, history: torch.Tensor) -> torch.Tensor:
        """Actions in the policy's normalisation ([-1, 1] from dataset min/max), shared with the policy."""
        return self.policy.normalize_action(history.float())

    def embed_image(self, views: torch.Tensor) -> torch.Tensor:
        return self.image.embed(self.policy.prepare_views(views.float()))

    def embed_action(self, history: torch.Tensor) -> torch.Tensor:
        return self.action.embed(self.normalized_history(history))

    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        return self.text.embed(prompts)

    # ------------------------------------------------------------------------------------ losses
    def forward(self, batch: dict, text_ids: torch.Tensor | None = None) -> dict:
        """{'image_action', 'image_text', 'action_text', 'diffusion', 'total'} for one batch."""
        device = self.policy.type_embed.device
        views = torch.as_tensor(batch["views"], device=device).float()
        history = torch.as_tensor(batch["action_history"], device=device).float()
        out = {}
        if self.cfg.diffusion_weight > 0:
            # run the image encoder once: capture its tokens inside the policy's forward
            captured = {}
            hook = self.image.register_forward_hook(lambda m, i, o: captured.__setitem__("tokens", o))
            try:
                obs = {k: batch[k] for k in self.policy.required_obs_keys()}
                out["diffusion"] = self.policy.loss(obs, torch.as_tensor(batch["actions"], device=device))
            finally:
                hook.remove()
            prepared = self.policy.prepare_views(views)
            img = self.image.embed_tokens(captured["tokens"], self.image.token_mask(prepared))
        else:
            img = self.embed_image(views)
        emb = {"image": img, "action": self.embed_action(history)}
        if batch.get("prompts") is not None:
            emb["text"] = self.embed_text(list(batch["prompts"]))
        if text_ids is not None:
            text_ids = text_ids.to(device)
        out.update(self.loss_fn(emb, text_ids))
        total = self.loss_fn.total({k: v for k, v in out.items() if k != "diffusion"})
        if "diffusion" in out:
            total = total + self.cfg.diffusion_weight * out["diffusion"]
        out["total"] = total
        return out

    def temperatures(self) -> dict:
        return {
            p: (float(m.log_temperature.detach().exp()), float(m.bias.detach())) for p, m in self.loss_fn.pairs.items()
        }


def freeze_encoders(policy: nn.Module, frozen: bool = True) -> list[str]:
    """Freeze (or unfreeze) the policy's CLAMP image encoder; returns the names of frozen parameters.

    Frozen parameters get requires_grad False and the module is kept in eval mode by `keep_frozen_eval`
    (no dropout drift), so fine-tuning cannot move them.
    """
    names = []
    for name, p in policy.image_encoder.named_parameters():
        p.requires_grad_(not frozen)
        if frozen:
            names.append(f"image_encoder.{name}")
    return names


def keep_frozen_eval(policy: nn.Module) -> None:
    """Call after policy.train(): frozen encoders stay in eval mode."""
    if not any(p.requires_grad for p in policy.image_encoder.parameters()):
        policy.image_encoder.eval()
