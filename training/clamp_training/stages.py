"""The three stages of the one training loop (`clamp_training.train.train`): for each, the model it
trains, the samples it reads, its loss, and what it leaves in the run directory besides the policy.

  diffusion  DiffusionPolicy from scratch; loss = the diffusion loss.
  pretrain   ClampModel (the policy with its 3D image encoder + action and text encoders); loss =
             the three-way sigmoid contrastive loss + diffusion_weight x the diffusion loss. Leaves
             RUN/clamp/ (the CLAMP checkpoint, EMA weights) and the held-out retrieval accuracy.
  finetune   the policy of a CLAMP pretraining run (finetune.clamp_checkpoint), its image encoder
             frozen; state statistics from the new data, action range widened to cover it.

Every stage trains on the same rows of a ChunkDataset split by `dataset.split_episodes`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .dataset import ChunkDataset, dataset_stats, policy_stats

CLAMP_LOSSES = ("image_action", "image_text", "action_text", "diffusion")


class StageError(RuntimeError):
    """A stage that cannot run with this config and data; the message names the fix."""


def obs_from_batch(batch: dict, device) -> dict:
    obs = {"state": batch["state"].to(device, non_blocking=True)}
    if "task" in batch:
        obs["task"] = batch["task"]
    for key in ("views", "action_history", "rgb"):
        if key in batch:
            obs[key] = batch[key].to(device, non_blocking=True)
    return obs


def params_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's parameters and buffers (bit-exact comparison)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_init(path) -> Path:
    """The exported policy of a CLAMP pretraining run (RUN/policy), or an exported policy dir."""
    p = Path(path)
    if (p / "policy" / "config.json").is_file():
        return p / "policy"
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return p
    raise FileNotFoundError(
        f"finetune.clamp_checkpoint {p} is neither a CLAMP pretraining run (with policy/) nor an exported policy "
        "dir; run `python -m clamp_training pretrain ... --out RUN` first and pass RUN"
    )


def _chunk_dataset(cfg: TrainConfig, datasets, progress: bool, action_history: int) -> ChunkDataset:
    pcfg = cfg.policy
    views = pcfg.image_encoder.type != "none"
    return ChunkDataset(
        [str(p) for p in datasets],
        chunk_length=pcfg.chunk_length,
        action_history=action_history,
        use_views=views,
        view_cache_size=pcfg.image_encoder.view_size if (views and cfg.cache_views) else None,
        cache_bytes=cfg.cache_gb * 1e9,
        progress=progress,
        rgb_cameras=pcfg.rgb.cameras,
    )


class Stage:
    """What the loop asks of a stage. `model` is what is optimised (and averaged by the EMA);
    `dataset[i]` is the sample of `base.index[i]`; `cfg` is the resolved config."""

    name = ""
    extra_keys: tuple[str, ...] = ()  # logged besides the total loss
    find_unused_parameters = False

    def __init__(self, cfg: TrainConfig, datasets: list, progress: bool) -> None:
        self.cfg = cfg
        self.datasets = [str(p) for p in datasets]
        self.model: torch.nn.Module
        self.base: ChunkDataset
        self.dataset: torch.utils.data.Dataset
        self.info: dict = {}

    @staticmethod
    def needs_views(cfg: TrainConfig) -> bool:
        return cfg.policy.image_encoder.type != "none"

    def policy(self, model):
        return model

    def on_split(self, train_rows: np.ndarray) -> None:
        pass

    def train_mode(self, model) -> None:
        model.train()

    def loss(self, net, batch: dict, device) -> tuple[torch.Tensor, dict]:
        return net(obs_from_batch(batch, device), batch["actions"].to(device, non_blocking=True)), {}

    def finish(self, run: Path, model, ema_model, val_rows: np.ndarray) -> dict:
        """Rank 0, after the last step: stage-specific outputs and summary entries."""
        return {}

    def _count(self, model) -> None:
        self.info.setdefault("frozen_parameters", 0)
        self.info.setdefault("encoder_frozen", False)
        self.info["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)


class DiffusionStage(Stage):
    name = "diffusion"

    def __init__(self, cfg: TrainConfig, datasets: list, progress: bool) -> None:
        from clamp_policy.models import DiffusionPolicy

        super().__init__(cfg, datasets, progress)
        pcfg = cfg.policy
        # the 3D encoder pools its own views; the others read views pooled once into RAM
        cache = cfg.cache_views and pcfg.image_encoder.type != "clamp_vit3d"
        ds = _chunk_dataset(dataclasses.replace(cfg, cache_views=cache), datasets, progress, pcfg.action_history)
        tc = cfg.task_conditioning
        if tc == "auto":
            tc = "vocab" if len(ds.tasks) > 1 else pcfg.task_conditioning
        if tc == "vocab" and not pcfg.task_vocab:
            pcfg = dataclasses.replace(pcfg, task_conditioning="vocab", task_vocab=list(ds.tasks))
        elif tc != pcfg.task_conditioning:
            pcfg = dataclasses.replace(pcfg, task_conditioning=tc)
        if pcfg.task_conditioning == "embedding":
            raise StageError("task_conditioning='embedding' needs text embeddings, which no stage computes yet")
        if pcfg.task_conditioning == "vocab":
            unknown = sorted(set(ds.tasks) - set(pcfg.task_vocab))
            if unknown:
                raise StageError(f"tasks {unknown} are in the data but not in policy.task_vocab {pcfg.task_vocab}")
        self.cfg = dataclasses.replace(cfg, policy=pcfg.validate())
        self.base = self.dataset = ds
        self.model = DiffusionPolicy(self.cfg.policy)
        self.model.set_normalization(policy_stats(dataset_stats(self.datasets)))
        self._count(self.model)


class PretrainStage(Stage):
    name = "pretrain"
    extra_keys = CLAMP_LOSSES
    find_unused_parameters = True

    @staticmethod
    def needs_views(cfg: TrainConfig) -> bool:
        return True

    def __init__(self, cfg: TrainConfig, datasets: list, progress: bool) -> None:
        from .clamp_checkpoint import build_clamp_model
        from .contrastive_data import ClampDataset

        super().__init__(cfg, datasets, progress)
        model, pcfg = build_clamp_model(cfg)
        self.cfg = dataclasses.replace(cfg, policy=pcfg)
        self.base = _chunk_dataset(self.cfg, datasets, progress, model.history)
        self.dataset = ClampDataset(self.base, None, dataclasses.asdict(self.cfg.prompt))
        model.policy.set_normalization(policy_stats(dataset_stats(self.datasets)))
        self.model = model
        self._count(model)

    def policy(self, model):
        return model.policy

    def on_split(self, train_rows: np.ndarray) -> None:
        self.model.text.fit_standardisation([self.dataset.prompt(int(i)) for i in train_rows])

    def loss(self, net, batch: dict, device) -> tuple[torch.Tensor, dict]:
        from .prompts import prompt_ids

        b = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        b["prompts"] = list(b.pop("prompt"))
        out = net(b, torch.as_tensor(prompt_ids(b["prompts"]), device=device))
        return out["total"], {k: out[k] for k in CLAMP_LOSSES if k in out}

    def finish(self, run: Path, model, ema_model, val_rows: np.ndarray) -> dict:
        from .clamp_checkpoint import save_clamp
        from .retrieval import evaluate

        out: dict = {"held_out_episodes": int(len(np.unique(self.base.index[val_rows, 0]))) if len(val_rows) else 0}
        ema_model.eval()
        if len(val_rows):
            from clamp_policy.models.siglip import local_only

            held = torch.utils.data.Subset(self.dataset, val_rows.tolist())
            with local_only():  # rank 0 alone
                out["retrieval"] = evaluate(ema_model, held, run, max_samples=self.cfg.retrieval_samples)
        meta = {"source": "clamp_training.train (stage pretrain)", "data": self.datasets, "steps": self.cfg.steps}
        save_clamp(ema_model, self.cfg, run / "clamp", metadata=meta)
        out["clamp"] = str(run / "clamp")
        return out


class FinetuneStage(Stage):
    name = "finetune"

    @staticmethod
    def needs_views(cfg: TrainConfig) -> bool:
        from clamp_policy.models.checkpoint import read_config

        return read_config(resolve_init(cfg.finetune.clamp_checkpoint))[0].image_encoder.type != "none"

    def __init__(self, cfg: TrainConfig, datasets: list, progress: bool) -> None:
        from clamp_policy.models.checkpoint import load_policy
        from clamp_policy.models.clamp_model import freeze_encoders

        super().__init__(cfg, datasets, progress)
        init = resolve_init(cfg.finetune.clamp_checkpoint)
        policy = load_policy(init, device="cpu")
        if policy.image_encoder is None:
            raise StageError(f"{init}: the policy has no image encoder to keep frozen; train it with stage diffusion")
        self.cfg = dataclasses.replace(cfg, policy=policy.cfg)  # the architecture is the checkpoint's
        self.base = self.dataset = _chunk_dataset(self.cfg, datasets, progress, policy.cfg.action_history)
        new = policy_stats(dataset_stats(self.datasets))
        old = policy.normalization()
        # pretrained weights keep their meaning: the action range only widens
        new["action_min"] = np.minimum(old["action_min"], new["action_min"]).tolist()
        new["action_max"] = np.maximum(old["action_max"], new["action_max"]).tolist()
        policy.set_normalization(new)
        self.encoder_before = params_digest(policy.image_encoder)
        frozen = freeze_encoders(policy, frozen=cfg.finetune.freeze_encoders)
        self.model = policy
        self.info.update(init=str(init), frozen_parameters=len(frozen), encoder_frozen=cfg.finetune.freeze_encoders)
        self._count(policy)

    def train_mode(self, model) -> None:
        from clamp_policy.models.clamp_model import keep_frozen_eval

        model.train()
        keep_frozen_eval(model)

    def finish(self, run: Path, model, ema_model, val_rows: np.ndarray) -> dict:
        unchanged = params_digest(ema_model.image_encoder) == self.encoder_before
        unchanged = unchanged and params_digest(model.image_encoder) == self.encoder_before
        if self.cfg.finetune.freeze_encoders and not unchanged:
            raise StageError("the frozen CLAMP image encoder changed during fine-tuning (a bug: report it)")
        return {"encoder_unchanged": unchanged}


STAGE_CLASSES = {s.name: s for s in (DiffusionStage, PretrainStage, FinetuneStage)}
