"""Configuration of the diffusion policy: plain dataclasses serialised to JSON (config.json).

`PolicyConfig.to_dict()` / `PolicyConfig.from_dict(d)` round-trip exactly; `from_dict` refuses
unknown or missing keys so a checkpoint written by other code is never half-understood.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from clamp_core import rig

CONFIG_VERSION = 1


@dataclass
class ImageEncoderConfig:
    """Which image encoder turns the views (B, V, C, S, S) into tokens (B, N, D).

    type: "patch" (default: a shared conv patch embedding per view + learned 2D position and view
          embeddings; the policy's transformer encoder does the attention), "clamp_vit3d" (CLAMP's
          3D-aware ViT, `clamp_policy.models.clamp_encoders.ImageEncoder3D(cfg)`), or "none".
    patch_size: pixels per patch side (224 / 32 -> 7 x 7 tokens per view).
    dim: token width of the patch encoder (projected to the policy width if different).
    options: free-form settings for other encoder types (e.g. clamp_vit3d depth/heads); JSON only.
    """

    type: str = "patch"
    num_views: int = len(rig.VIEW_NAMES)
    in_channels: int = len(rig.VIEW_CHANNELS)
    view_size: int = rig.VIEW_SIZE
    patch_size: int = 32
    dim: int = 128
    options: dict = field(default_factory=dict)


@dataclass
class RgbConfig:
    """Colour cameras seen by the policy through a small conv encoder with a spatial-softmax readout
    (Levine et al. 2016; the keypoints say *where* things are, which depth views of a 4 cm cube at
    CPU resolution cannot). Off when `cameras` is empty.

    cameras: rig camera names (rig.CAMERAS) in the order of obs["rgb"] (B, len(cameras), 3, H, W),
      uint8 or float 0..255; other sizes are resized (area) to `size` inside the model.
    size: [H, W] the encoder works at.
    channels: conv widths; keypoints: spatial-softmax keypoints per camera (2 coordinates each).
    shift: random-shift augmentation in pixels during training (padding + random crop).
    keypoint_noise: see below.
    """

    cameras: list = field(default_factory=list)
    size: list = field(default_factory=lambda: [96, 128])
    channels: int = 32
    keypoints: int = 32
    shift: int = 4
    # training adds Gaussian noise of this std to the keypoints (image coordinates in [-1, 1]): with
    # tens of demonstrations the head otherwise recognises each episode by its exact keypoints and
    # replays it, instead of learning how the trajectory follows the object
    keypoint_noise: float = 0.0
    # standardise the keypoints (batch norm, running statistics at inference): the cube moves a few
    # pixels between episodes, a small spread of coordinates the head must nevertheless resolve
    keypoint_norm: bool = False


@dataclass
class PolicyConfig:
    """ALOHA-Unleashed-style diffusion policy (transformer encoder-decoder over a 50 x 14 chunk).

    task_conditioning: "none"; "vocab" (a learned embedding per task string in `task_vocab`,
      obs["task"] = list of strings); or "embedding" (obs["task_embedding"] (B, text_dim), e.g. a
      sentence-encoder vector, projected to a token).
    action_history: number of past actions given to the encoder as tokens (0 = off);
      obs["action_history"] (B, H, 14), oldest first.
    """

    version: int = CONFIG_VERSION
    state_dim: int = rig.ACTION_DIM
    action_dim: int = rig.ACTION_DIM
    chunk_length: int = rig.CHUNK_LENGTH
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    d_model: int = 128
    nhead: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 3
    ff_dim: int = 512
    dropout: float = 0.1
    task_conditioning: str = "none"
    task_vocab: list = field(default_factory=list)
    text_dim: int = 384  # all-MiniLM-L6-v2
    action_history: int = 0
    rgb: RgbConfig = field(default_factory=RgbConfig)
    # against copying the demonstrations' timetable from the arm state: training adds Gaussian noise
    # (in units of the normalised state) and, with probability state_dropout, hides the state token
    state_noise: float = 0.0
    state_dropout: float = 0.0
    # noise in rig units (rad, gripper 0..1) before normalisation: the same physical blur on every
    # joint. Normalised noise barely touches an idle joint (small std), whose per-episode start pose
    # then identifies the demonstration: measured, swapping the idle left arm's state between
    # episodes moved the right arm's predicted chunk by 0.05 rad
    state_noise_rad: float = 0.0
    # the denoiser: "transformer" (a decoder cross-attending to the observation tokens, as ALOHA
    # Unleashed) or "mlp" (residual MLP over the flattened chunk and tokens: ~20x fewer operations,
    # what makes minutes of training on 2 CPU cores enough); head_width/head_blocks size the MLP
    head: str = "transformer"
    head_width: int = 512
    head_blocks: int = 3
    # training draws this many (noise, timestep) pairs per encoded observation: the image encoder is
    # the costly part, the denoiser is cheap, so each camera frame teaches the head several times
    noise_samples: int = 1
    # > 0: the chunk is diffused as this many knots of a piecewise-linear curve over its 50 steps
    # (fitted by least squares in training, interpolated in sampling): smooth commands by
    # construction, and 5x fewer numbers to denoise. 0: every step of the chunk is denoised
    action_knots: int = 0
    # "absolute": the chunk is joint targets. "relative": the arm joints of the chunk are diffused as
    # offsets from the observed state (grippers stay absolute, open/closed is a target, not a motion)
    # and the state is added back in sampling. The chunk then starts at the arm wherever it is, and
    # noise or dropout on the state input blurs the policy's view of the arm without blurring where
    # its commands land; absolute targets make the network copy the state to the output, which ties
    # it to the exact state and lets an episode's start pose identify (and replay) that episode
    action_frame: str = "absolute"
    # diffusion
    train_timesteps: int = 100
    inference_steps: int = 10
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"

    def validate(self) -> PolicyConfig:
        if self.task_conditioning not in ("none", "vocab", "embedding"):
            raise ValueError(f"task_conditioning={self.task_conditioning!r}; choose 'none', 'vocab' or 'embedding'")
        if self.task_conditioning == "vocab" and not self.task_vocab:
            raise ValueError("task_conditioning='vocab' needs a non-empty task_vocab (the dataset's task strings)")
        if self.d_model % self.nhead:
            raise ValueError(f"d_model={self.d_model} must be divisible by nhead={self.nhead}")
        enc = self.image_encoder
        if enc.type == "patch" and enc.view_size % enc.patch_size:
            raise ValueError(f"view_size={enc.view_size} is not a multiple of patch_size={enc.patch_size}")
        unknown = sorted(set(self.rgb.cameras) - set(rig.CAMERAS))
        if unknown:
            raise ValueError(f"rgb.cameras {unknown} are not rig cameras {list(rig.CAMERAS)}")
        if not 0.0 <= self.state_dropout < 1.0:
            raise ValueError(f"state_dropout={self.state_dropout} must be in [0, 1)")
        if self.head not in ("transformer", "mlp"):
            raise ValueError(f"head={self.head!r}; choose 'transformer' or 'mlp'")
        if self.action_knots and not 2 <= self.action_knots <= self.chunk_length:
            raise ValueError(f"action_knots={self.action_knots} must be 0 (off) or in [2, chunk_length]")
        if self.action_frame not in ("absolute", "relative"):
            raise ValueError(f"action_frame={self.action_frame!r}; choose 'absolute' or 'relative'")
        if self.action_frame == "relative" and self.state_dim != self.action_dim:
            raise ValueError(
                f"action_frame='relative' needs state_dim == action_dim ({self.state_dim} vs {self.action_dim})"
            )
        if self.noise_samples < 1:
            raise ValueError(f"noise_samples={self.noise_samples} must be >= 1")
        if not 1 <= self.inference_steps <= self.train_timesteps:
            raise ValueError(f"inference_steps={self.inference_steps} must be in [1, train_timesteps]")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        data = dict(data)
        enc = _strict(ImageEncoderConfig, data.pop("image_encoder", {}), "image_encoder")
        rgb = _strict(RgbConfig, data.pop("rgb", {}), "rgb")
        cfg = _strict(cls, {**data, "image_encoder": enc, "rgb": rgb}, "policy")
        return cfg.validate()


def _strict(klass, data: dict, where: str):
    names = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{where} config has keys this clamp_policy does not know: {unknown}. It was written by a "
            "different version; update clamp_policy or re-export the checkpoint with this version."
        )
    missing = sorted(
        f.name
        for f in dataclasses.fields(klass)
        if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    )
    if missing:
        raise ValueError(f"{where} config lacks required keys {missing}")
    return klass(**data)


def paper_config(**overrides) -> PolicyConfig:
    """A GPU-size configuration in the spirit of ALOHA Unleashed (wider, deeper, 16-px patches)."""
    cfg = PolicyConfig(
        image_encoder=ImageEncoderConfig(patch_size=16, dim=512),
        d_model=512,
        nhead=8,
        encoder_layers=6,
        decoder_layers=6,
        ff_dim=2048,
        train_timesteps=100,
        inference_steps=10,
    )
    return dataclasses.replace(cfg, **overrides).validate()


def tiny_config(**overrides) -> PolicyConfig:
    """For tests: small views and widths so a training step takes milliseconds on a CPU."""
    cfg = PolicyConfig(
        image_encoder=ImageEncoderConfig(view_size=32, patch_size=16, dim=32),
        d_model=32,
        nhead=2,
        encoder_layers=1,
        decoder_layers=1,
        ff_dim=64,
        dropout=0.0,
        train_timesteps=50,
        inference_steps=5,
    )
    return dataclasses.replace(cfg, **overrides).validate()
