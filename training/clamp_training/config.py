"""The one training configuration: `TrainConfig` (typed), its presets, and loading it from YAML.

One config serves the three stages of the pipeline (`stage`):

  diffusion  the diffusion policy from scratch (any image encoder, colour cameras, task vocab);
  pretrain   CLAMP: the 3D-aware image encoder, the action and text encoders with the three-way
             sigmoid contrastive loss, jointly with the diffusion policy (`clamp`, `prompt`);
  finetune   the diffusion policy of `policy:` with the frozen image encoder (config and weights) of a
             CLAMP checkpoint (`finetune.clamp_checkpoint`); everything else trained from scratch.

Layering: preset <- YAML file (`yaml.safe_load`) <- overrides (the command line). Every key is
checked: an unknown one is refused with a message naming it and the valid keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from clamp_core.config import ConfigError, check_keys, deep_merge, from_dict, read_yaml
from clamp_policy.models.clamp_model import ClampConfig
from clamp_policy.models.config import ImageEncoderConfig, PolicyConfig, RgbConfig, paper_config, tiny_config

STAGES = ("diffusion", "pretrain", "finetune")


@dataclass
class PromptConfig:
    """The CLAMP prompt (clamp_training.prompts.build_prompt): quantisation of positions and progress."""

    position_bins: int = 100
    progress_bins: int = 10


@dataclass
class FinetuneConfig:
    # a CLAMP pretraining run (its exported policy/ is used) or an exported policy dir; a relative path
    # is looked up from the working directory, then from the repository root (models/clamp_cpu: shipped).
    # Its image encoder (config and weights) replaces policy.image_encoder; the rest of `policy:` is trained
    clamp_checkpoint: str = ""
    # keep the pretrained CLAMP image encoder frozen (no gradient, eval mode); false trains it too
    freeze_encoders: bool = True
    # frozen encoder: compute its tokens once per camera frame of the data before training (RAM: frames x
    # tokens x width x 4 bytes, within cache_gb) instead of running it on every sample's views
    cache_tokens: bool = True
    # start every other weight of the policy from the checkpoint's pretrained policy (CLAMP's fine-tuning:
    # the diffusion policy pretrained jointly with the encoders, adapted to the new task) instead of from
    # scratch; needs the checkpoint's policy architecture (its config's policy: section)
    init_policy: bool = False


@dataclass
class TrainConfig:
    stage: str = "diffusion"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    clamp: ClampConfig = field(default_factory=ClampConfig)  # stage pretrain
    prompt: PromptConfig = field(default_factory=PromptConfig)  # stage pretrain
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # stage finetune
    steps: int = 2000
    batch_size: int = 32  # global (split across DDP processes)
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 10% of lr at `steps`
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # the exported weights are the EMA's
    log_every: int = 10
    ckpt_every: int = 250
    seed: int = 0
    num_workers: int = 0  # DataLoader workers per process (the view cache makes 0 fine on a CPU)
    cache_views: bool = True  # pool views to the model's size once and keep them in RAM
    cache_gb: float = 4.0
    amp: bool = False  # bf16 autocast on CUDA
    device: str = "auto"
    task_conditioning: str = "auto"  # stage diffusion; auto: "vocab" when the data has several tasks
    # torch intra-op threads per process (0: torch's default). On a busy CPU, small models train
    # far faster on 1 thread: OpenMP workers spin waiting for cores other processes hold.
    threads: int = 0
    # held-out episodes (the last ones by name): `val_episodes` of them, or round(val_fraction x
    # episodes) (at least one); validation loss of the EMA model at each checkpoint
    val_episodes: int = 0
    val_fraction: float = 0.0
    val_samples: int = 256
    retrieval_samples: int = 256  # stage pretrain: held-out samples for the retrieval accuracy
    # > 0: steps = epochs * training samples / batch_size (overrides `steps`)
    epochs: float = 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["policy"] = self.policy.to_dict()
        return d

    @classmethod
    def from_dict(cls, doc: dict, where: str = "training config") -> TrainConfig:
        doc = dict(doc)
        check_keys(doc, [f.name for f in dataclasses.fields(cls)], where)
        policy = _policy(doc.pop("policy", {}) or {}, f"{where}: policy")
        clamp = doc.pop("clamp", {}) or {}
        check_keys(clamp, [f.name for f in dataclasses.fields(ClampConfig)], f"{where}: clamp")
        cfg = from_dict(cls, doc, where)
        cfg = dataclasses.replace(cfg, policy=policy, clamp=ClampConfig.from_dict(clamp))
        return cfg.validate(where)

    def validate(self, where: str = "training config") -> TrainConfig:
        if self.stage not in STAGES:
            raise ConfigError(f"{where}: stage {self.stage!r} unknown; choose one of {list(STAGES)}")
        if self.stage == "finetune" and not self.finetune.clamp_checkpoint:
            raise ConfigError(
                f"{where}: stage finetune needs finetune.clamp_checkpoint (a CLAMP pretraining run or an "
                "exported policy dir; `python -m clamp_training finetune --init RUN` sets it)"
            )
        if self.val_episodes < 0 or not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{where}: val_episodes must be >= 0 and val_fraction in [0, 1)")
        for name in ("steps", "batch_size", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}: {name}={getattr(self, name)} must be >= 1")
        return self


def _policy(doc: dict, where: str) -> PolicyConfig:
    """PolicyConfig from a (full) mapping; unknown keys named with the valid ones."""
    check_keys(doc, [f.name for f in dataclasses.fields(PolicyConfig)], where)
    check_keys(
        doc.get("image_encoder") or {},
        [f.name for f in dataclasses.fields(ImageEncoderConfig)],
        where + ".image_encoder",
    )
    check_keys(doc.get("rgb") or {}, [f.name for f in dataclasses.fields(RgbConfig)], where + ".rgb")
    try:
        return PolicyConfig.from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


# Small CLAMP model: pretrains on a CPU in minutes; the paper-size one (224 px views, ViT-S-like
# 3D encoder) is the `clamp_paper` preset, for GPUs with torchrun.
def _clamp_small_policy() -> PolicyConfig:
    return PolicyConfig(
        image_encoder=ImageEncoderConfig(
            type="clamp_vit3d",
            view_size=32,
            patch_size=8,
            dim=64,
            options={"depth": 2, "heads": 4, "pos_encoding": "string"},
        ),
        d_model=64,
        nhead=4,
        encoder_layers=2,
        decoder_layers=2,
        ff_dim=128,
        dropout=0.0,
        train_timesteps=50,
        inference_steps=5,
    )


def _clamp_small() -> TrainConfig:
    return TrainConfig(
        stage="pretrain",
        policy=_clamp_small_policy(),
        clamp=ClampConfig(
            embed_dim=64,
            action_encoder={"history": 10, "dim": 64, "depth": 2, "heads": 4},
            text_encoder={"hidden": 128},
            loss={"init_temperature": 10.0, "init_bias": -10.0},
        ),
        steps=300,
        batch_size=32,
        lr=1e-3,
        weight_decay=0.01,
        warmup_steps=20,
        ema_decay=0.99,
        ckpt_every=100,
        val_fraction=0.2,
    )


def _clamp_paper() -> TrainConfig:
    policy = PolicyConfig(
        image_encoder=ImageEncoderConfig(
            type="clamp_vit3d",
            view_size=224,
            patch_size=16,
            dim=384,
            options={"depth": 12, "heads": 6, "dropout": 0.0, "pos_encoding": "string"},
        ),
        d_model=512,
        nhead=8,
        encoder_layers=4,
        decoder_layers=6,
        ff_dim=2048,
        dropout=0.1,
        train_timesteps=100,
        inference_steps=10,
    )
    return dataclasses.replace(
        _clamp_small(),
        policy=policy,
        clamp=ClampConfig(
            embed_dim=256,
            action_encoder={"history": 10, "dim": 256, "depth": 4, "heads": 8},
            text_encoder={"hidden": 128},
            loss={"init_temperature": 10.0, "init_bias": -10.0},
        ),
        steps=100_000,
        batch_size=256,
        lr=3e-4,
        warmup_steps=2000,
        ema_decay=0.999,
        log_every=50,
        ckpt_every=5000,
        amp=True,
        num_workers=8,
        val_fraction=0.1,
    )


PRESETS = {
    # seconds on a CPU; what the tests use
    "tiny": lambda: TrainConfig(
        policy=tiny_config(),
        steps=60,
        batch_size=8,
        lr=1e-3,
        warmup_steps=5,
        ema_decay=0.9,
        log_every=5,
        ckpt_every=30,
    ),
    # the small default: trains on this CPU, infers in ~30 ms
    "default": lambda: TrainConfig(
        policy=PolicyConfig(image_encoder=ImageEncoderConfig(view_size=112, patch_size=16, dim=128)), threads=1
    ),
    "paper": lambda: TrainConfig(
        policy=paper_config(),
        steps=100_000,
        batch_size=256,
        lr=1e-4,
        warmup_steps=2000,
        ckpt_every=5000,
        amp=True,
        num_workers=8,
    ),
    # CLAMP pretraining
    "clamp_small": _clamp_small,
    "clamp_paper": _clamp_paper,
    # fine-tuning on a few demonstrations with a CLAMP checkpoint's frozen image encoder (the image encoder
    # is the checkpoint's; this policy around it is trained from scratch)
    "finetune": lambda: TrainConfig(
        stage="finetune",
        policy=_clamp_small_policy(),
        steps=200,
        batch_size=32,
        lr=3e-4,
        weight_decay=0.01,
        warmup_steps=10,
        ema_decay=0.99,
        ckpt_every=100,
    ),
}
# the preset a stage starts from when none is named
STAGE_PRESETS = {"diffusion": "default", "pretrain": "clamp_small", "finetune": "finetune"}


def build_config(
    preset: str | None = None, config_file: str | None = None, overrides: dict | None = None
) -> TrainConfig:
    """preset <- YAML file <- overrides (None values ignored). Without a preset the stage's own
    (`STAGE_PRESETS`; the stage from the overrides, else the file, else `diffusion`)."""
    doc = read_yaml(config_file, "training config") if config_file else {}
    where = f"training config {config_file}" if config_file else "training config"
    doc = deep_merge(doc, {k: v for k, v in (overrides or {}).items() if v is not None})
    stage = doc.get("stage")
    if preset is None:
        preset = STAGE_PRESETS.get(stage or "diffusion", "default")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    base = PRESETS[preset]().to_dict()
    if isinstance(doc.get("train"), dict):
        raise ConfigError(
            f"{where}: a `train:` section is the older CLAMP layout; put its keys at the top level "
            f"(TrainConfig keys: {sorted(base)})"
        )
    check_keys(doc, base, where)
    if doc.get("policy", {}) and not isinstance(doc["policy"], dict):
        raise ConfigError(f"{where}: policy must be a mapping")
    return TrainConfig.from_dict(deep_merge(base, doc), where)
