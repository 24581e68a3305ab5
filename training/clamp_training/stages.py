"""The three stages of the one training loop (`clamp_training.train.train`): for each, the model it
trains, the samples it reads, its loss, and what it leaves in the run directory besides the policy.

  diffusion  DiffusionPolicy from scratch; loss = the diffusion loss.
  pretrain   ClampModel (the policy with its 3D image encoder + action and text encoders); loss =
             the three-way sigmoid contrastive loss + diffusion_weight x the diffusion loss. Leaves
             RUN/clamp/ (the CLAMP checkpoint, EMA weights) and the held-out retrieval accuracy.
  finetune   the config's policy (rgb, head, noise, ... everything in `policy:`) with the image encoder of
             a CLAMP checkpoint (finetune.clamp_checkpoint): its encoder config and weights, frozen (eval
             mode, bit-identical at the end); everything else is trained from scratch, or, with
             finetune.init_policy, from the checkpoint's pretrained policy (same architecture). The frozen encoder's
             tokens are computed once per camera frame of the data and kept in RAM (`finetune.cache_tokens`).
             A dataset whose views or action layout differ from the checkpoint's is refused first.

Every stage trains on the same rows of a ChunkDataset split by `dataset.split_episodes`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
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
    for key in ("views", "image_tokens", "action_history", "rgb"):
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


def repo_root() -> Path:
    """The repository (CLAMP_ROOT, set by scripts/env.sh; else the checkout this file is in)."""
    env = os.environ.get("CLAMP_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[2]  # training/clamp_training/stages.py


def resolve_init(path) -> Path:
    """The exported policy of a CLAMP pretraining run (RUN/policy), or an exported policy dir.

    A relative path is looked up from the working directory first, then from the repository root, so
    a config's `finetune.clamp_checkpoint: models/clamp_cpu` (the shipped checkpoint) works from anywhere."""
    p = Path(path).expanduser()
    tried = [p] if p.is_absolute() else [Path.cwd() / p, repo_root() / p]
    for c in tried:
        if (c / "policy" / "config.json").is_file():
            return c / "policy"
        if (c / "config.json").is_file() and (c / "model.safetensors").is_file():
            return c
    where = " nor ".join(str(c) for c in dict.fromkeys(tried))
    raise FileNotFoundError(
        f"finetune.clamp_checkpoint {path}: {where} is neither a CLAMP pretraining run (with policy/) nor an "
        "exported policy dir; run `python -m clamp_training pretrain ... --out RUN` first and pass RUN, or use the "
        "shipped checkpoint models/clamp_cpu"
    )


LAYOUT_KEYS = (("view_names", "views"), ("view_channels", "view channels"), ("action_names", "actions"))


def checkpoint_layout(init: Path) -> dict:
    """The views and actions a checkpoint's encoder was trained on: the layout recorded in its
    pretraining data's dataset.json (view and action names, the perception views' geometry) when that
    data is still on this machine, else the rig's (clamp_core.rig: what `convert` writes), which must
    agree with the sizes in the checkpoint's config."""
    from clamp_core import rig
    from clamp_policy.models.checkpoint import read_config

    cfg, doc = read_config(init)
    layout = {
        "view_names": list(rig.VIEW_NAMES),
        "view_channels": list(rig.VIEW_CHANNELS),
        "action_names": list(rig.ACTION_NAMES),
        "geometry": None,
        "source": "the rig layout (clamp_core.rig)",
    }
    for d in (doc.get("metadata") or {}).get("datasets") or []:
        f = Path(d) / "dataset.json"
        j = json.loads(f.read_text()) if f.is_file() else {}
        if all(j.get(k) for k, _ in LAYOUT_KEYS):
            layout.update({k: list(j[k]) for k, _ in LAYOUT_KEYS}, source=f"its pretraining data ({f})")
            layout["geometry"] = (j.get("perception") or {}).get("views")
            break
    enc = cfg.image_encoder
    sizes = {"view_names": enc.num_views, "view_channels": enc.in_channels, "action_names": cfg.action_dim}
    wrong = {k: n for k, n in sizes.items() if len(layout[k]) != n}
    if wrong:
        raise StageError(
            f"the CLAMP checkpoint {init} is configured for {sizes} but {layout['source']} has "
            f"{ {k: len(layout[k]) for k in wrong} }: it was not made for this rig"
        )
    return layout


def check_layout(init: Path, datasets: list, pcfg) -> dict:
    """Refuse fine-tuning data whose views or action layout differ from the checkpoint's, naming both
    (before any data is loaded). Returns the checkpoint's layout."""
    from .dataset import read_dataset_json

    want = checkpoint_layout(init)
    n = len(want["action_names"])
    if (pcfg.action_dim, pcfg.state_dim) != (n, n):
        raise StageError(
            f"the fine-tuning policy has action_dim {pcfg.action_dim} / state_dim {pcfg.state_dim}, but the CLAMP "
            f"checkpoint {init} was trained on {n} joints {want['action_names']}; use its layout"
        )
    for d in datasets:
        doc = read_dataset_json(d)
        problems = []
        for key, what in LAYOUT_KEYS:
            have = doc.get(key)
            if have is None:
                problems.append(f"its dataset.json records no {key} (written by an older converter: re-convert)")
            elif list(have) != want[key]:
                problems.append(f"its {what} are {list(have)}, the checkpoint's {want[key]}")
        if doc.get("view_shape") is None:
            problems.append(f"it has no views (converted with --no-views); the checkpoint reads {want['view_names']}")
        have, ref = (doc.get("perception") or {}).get("views"), want["geometry"]
        if ref and have and have != ref:
            changed = sorted(k for k in set(have) | set(ref) if have.get(k) != ref.get(k))
            problems.append(f"its views {changed} are rendered with other geometry than the checkpoint's (perception)")
        if problems:
            raise StageError(
                f"dataset {d} does not match the CLAMP checkpoint {init} (its layout: {want['source']}): "
                + "; ".join(problems)
                + ". Fine-tune on data converted with the checkpoint's views and actions (`python -m clamp_training "
                "convert BAGS --out DATASET`, with views), or pretrain a checkpoint for this layout"
            )
    return want


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


def _task_conditioning(cfg: TrainConfig, pcfg, ds: ChunkDataset):
    """cfg.task_conditioning resolved against the data (auto: a task vocabulary when it has several tasks)."""
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
    return pcfg


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
        pcfg = _task_conditioning(cfg, pcfg, ds)
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


class TokenDataset(torch.utils.data.Dataset):
    """A ChunkDataset (read without views) whose items carry "image_tokens": the frozen image encoder's
    output for the item's camera frame, looked up in `tokens` (episode -> (M, N, D), one row per frame)."""

    def __init__(self, base: ChunkDataset, tokens: dict[int, torch.Tensor]) -> None:
        self.base, self.tokens = base, tokens

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        e, t = (int(x) for x in self.base.index[i])
        item["image_tokens"] = self.tokens[e][int(self.base.episodes[e].view_index[t])]
        return item


@torch.no_grad()
def encode_frames(policy, episodes, progress: bool = False, block: int = 32, max_bytes: float = 4e9) -> dict:
    """The policy's (frozen) image encoder run once on every camera frame of `episodes` (dataset.Episode
    with views): {episode index: float32 (M, N, D)}, exactly what `encode` computes from obs["views"]."""
    from tqdm import tqdm

    enc = policy.image_encoder
    was_training = enc.training
    enc.eval()
    n_tok, dim = int(enc.num_tokens), int(enc.out_dim)
    frames = sum(int(e.views.shape[0]) for e in episodes)
    need = frames * n_tok * dim * 4
    if need > max_bytes:
        raise StageError(
            f"the frozen encoder's tokens of {frames} camera frames need {need / 1e9:.1f} GB of RAM (cache_gb "
            f"{max_bytes / 1e9:g}); raise cache_gb, or set finetune.cache_tokens: false (the encoder runs per sample)"
        )
    out = {}
    bar = tqdm(total=frames, desc="CLAMP tokens (frozen encoder, once per frame)", unit="frame", disable=not progress)
    try:
        for i, ep in enumerate(episodes):
            m = int(ep.views.shape[0])
            tokens = torch.empty((m, n_tok, dim), dtype=torch.float32)
            for a in range(0, m, block):
                views = torch.from_numpy(np.asarray(ep.views[a : a + block], dtype=np.float32))
                tokens[a : a + len(views)] = enc(policy.prepare_views(views.to(policy.view_mean.device))).cpu()
                bar.update(len(views))
            out[i] = tokens
    finally:
        bar.close()
        enc.train(was_training)
    return out


def init_from_pretrained(policy, pre, init: Path) -> int:
    """Load every weight of `policy` from the pretrained policy `pre` (normalisation excepted: it is the
    new data's); refuses, naming the differences, when the two architectures differ. Returns the number
    of tensors loaded."""
    from clamp_policy.models.diffusion_policy import NORM_KEYS

    mine = {k: v for k, v in policy.state_dict().items() if k not in NORM_KEYS}
    theirs = {k: v for k, v in pre.state_dict().items() if k not in NORM_KEYS}
    shapes = [
        f"{k} {tuple(theirs[k].shape)} in the checkpoint, {tuple(mine[k].shape)} here"
        for k in sorted(set(mine) & set(theirs))
        if mine[k].shape != theirs[k].shape
    ]
    kinds = (
        ("missing in the checkpoint", sorted(set(mine) - set(theirs))),
        ("not in this policy", sorted(set(theirs) - set(mine))),
        ("of another shape", shapes),
    )
    problems = [f"{len(names)} tensors {what} (e.g. {'; '.join(names[:3])})" for what, names in kinds if names]
    if problems:
        raise StageError(
            f"finetune.init_policy: the policy of {init} is not the fine-tuning config's policy "
            f"({', '.join(problems)}). Give the fine-tuning config the checkpoint's policy: section "
            "(its config.json), pretrain with this one, or set finetune.init_policy: false to train "
            "the policy from scratch around the frozen encoder"
        )
    policy.load_state_dict(theirs, strict=False)
    return len(theirs)


class FinetuneStage(Stage):
    """The config's policy with a CLAMP checkpoint's frozen image encoder (see the module doc)."""

    name = "finetune"

    @staticmethod
    def needs_views(cfg: TrainConfig) -> bool:
        from clamp_policy.models.checkpoint import read_config

        return read_config(resolve_init(cfg.finetune.clamp_checkpoint))[0].image_encoder.type != "none"

    def __init__(self, cfg: TrainConfig, datasets: list, progress: bool) -> None:
        from clamp_policy.models import DiffusionPolicy
        from clamp_policy.models.checkpoint import load_policy
        from clamp_policy.models.clamp_model import freeze_encoders

        super().__init__(cfg, datasets, progress)
        ft = cfg.finetune
        init = resolve_init(ft.clamp_checkpoint)
        pre = load_policy(init, device="cpu")  # checksum and strict load of the whole checkpoint
        if pre.image_encoder is None or pre.cfg.image_encoder.type == "none":
            raise StageError(f"{init}: the policy has no image encoder to keep frozen; train it with stage diffusion")
        # the architecture is the config's; only the image encoder (config and weights) is the checkpoint's
        pcfg = dataclasses.replace(cfg.policy, image_encoder=pre.cfg.image_encoder)
        self.layout = check_layout(init, self.datasets, pcfg)
        use_tokens = ft.freeze_encoders and ft.cache_tokens
        if use_tokens:  # views are read once below, to compute the tokens, never per sample
            ds = ChunkDataset(
                self.datasets,
                chunk_length=pcfg.chunk_length,
                action_history=pcfg.action_history,
                use_views=False,
                progress=progress,
                rgb_cameras=pcfg.rgb.cameras,
            )
        else:
            ds = _chunk_dataset(dataclasses.replace(cfg, policy=pcfg), self.datasets, progress, pcfg.action_history)
        pcfg = _task_conditioning(cfg, pcfg, ds)
        self.cfg = dataclasses.replace(cfg, policy=pcfg.validate())
        policy = DiffusionPolicy(self.cfg.policy)
        policy.image_encoder.load_state_dict(pre.image_encoder.state_dict(), strict=True)
        if ft.init_policy:
            self.info["policy_initialised"] = init_from_pretrained(policy, pre, init)
        stats = policy_stats(dataset_stats(self.datasets))
        # the encoder sees views as in pretraining: the checkpoint's view normalisation (the 3D encoder
        # reads metric views and ignores it); state and action statistics are the new data's
        stats["view_mean"], stats["view_std"] = pre.view_mean.tolist(), pre.view_std.tolist()
        policy.set_normalization(stats)
        self.encoder_before = params_digest(policy.image_encoder)
        frozen = freeze_encoders(policy, frozen=ft.freeze_encoders)
        self.find_unused_parameters = not ft.freeze_encoders  # the encoder's pooling head gets no gradient
        self.base = self.dataset = ds
        self.info.update(
            init=str(init),
            image_encoder=dataclasses.asdict(pre.cfg.image_encoder),
            encoder_digest=self.encoder_before,
            frozen_parameters=len(frozen),
            encoder_frozen=ft.freeze_encoders,
            token_cache=use_tokens,
        )
        if use_tokens:
            t0 = time.perf_counter()
            tokens = encode_frames(policy, ds.episodes, progress, max_bytes=cfg.cache_gb * 1e9)
            self.dataset = TokenDataset(ds, tokens)
            self.info["token_frames"] = int(sum(len(v) for v in tokens.values()))
            self.info["token_s"] = round(time.perf_counter() - t0, 1)
        self.model = policy
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
