"""`python -m clamp_training train --data DATASET_OR_BAGS... --out RUN [--config CONFIG]`

One command from episode bags (converted first, into RUN/dataset) or converted datasets to an
exported policy (RUN/policy: model.safetensors + config.json + sha256, loadable with
clamp_policy.models.load_policy). Also RUN/log.csv, RUN/loss.png, RUN/train_config.json and a
resumable training checkpoint RUN/checkpoint/ (safetensors + JSON; no pickle). Re-running the same
command resumes from it.

Scale out: `torchrun --nproc_per_node N -m clamp_training train ...` (DDP; gloo on CPU, NCCL on
GPU). --batch-size is the global batch, split across processes; mixed precision (bf16 autocast) on
GPU with --amp.

Config: `--preset tiny|default|paper` then `--config FILE` (YAML/JSON, read with yaml.safe_load:
TrainConfig keys, with `policy:` overriding PolicyConfig keys, `policy.image_encoder:` likewise),
then the command-line flags.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from clamp_policy.models.config import ImageEncoderConfig, PolicyConfig, paper_config, tiny_config

from .dataset import ChunkDataset, merge_stats, policy_stats, read_stats
from .run_state import CHECKPOINT_DIR, _sub, _unflatten_optimizer, load_train_state, save_train_state

POLICY_DIR = "policy"


@dataclass
class TrainConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    steps: int = 2000
    batch_size: int = 32  # global (split across DDP processes)
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 10
    ckpt_every: int = 250
    seed: int = 0
    num_workers: int = 0  # DataLoader workers per process (the view cache makes 0 fine on a CPU)
    cache_views: bool = True  # pool views to the model's size once and keep them in RAM
    cache_gb: float = 4.0
    amp: bool = False  # bf16 autocast on CUDA
    device: str = "auto"
    task_conditioning: str = "auto"  # auto: "vocab" when the data has several tasks, else "none"
    # torch intra-op threads per process (0: torch's default). On a busy CPU, small models train
    # far faster on 1 thread: OpenMP workers spin waiting for cores other processes hold.
    threads: int = 0
    # episodes held out (the last N by name) for a validation loss of the EMA model at each checkpoint
    val_episodes: int = 0
    val_samples: int = 256
    # > 0: steps = epochs * training samples / batch_size (overrides `steps`)
    epochs: float = 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["policy"] = self.policy.to_dict()
        return d


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
}


def build_config(preset: str, config_file: str | None, overrides: dict) -> TrainConfig:
    if preset not in PRESETS:
        raise SystemExit(f"unknown --preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset]()
    doc: dict = {}
    if config_file:
        import yaml

        with open(config_file) as f:
            doc = yaml.safe_load(f) or {}
        if not isinstance(doc, dict):
            raise SystemExit(f"{config_file}: expected a mapping of TrainConfig keys")
    doc = {**doc, **{k: v for k, v in overrides.items() if v is not None}}
    pol = cfg.policy.to_dict()
    pol_over = dict(doc.pop("policy", None) or {})
    enc_over = pol_over.pop("image_encoder", None) or {}
    pol.update(pol_over)
    pol["image_encoder"] = {**pol["image_encoder"], **enc_over}
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"policy"}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise SystemExit(f"unknown training config keys {unknown}; known: {sorted(names)} and 'policy'")
    try:
        policy = PolicyConfig.from_dict(pol)
    except ValueError as exc:
        raise SystemExit(f"policy config: {exc}") from exc
    return dataclasses.replace(cfg, policy=policy, **doc)


# ---------------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return d


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


# ---------------------------------------------------------------------------------- data
def prepare_data(data: list[str], run: Path, d: Dist, workers: int, progress: bool, views: bool = True) -> list[Path]:
    """Dataset dirs as given; bag dirs are converted (once, by rank 0) into RUN/dataset."""
    from .convert import ConvertOptions, convert
    from .dataset import is_dataset

    datasets = [Path(p) for p in data if is_dataset(p)]
    bags = [p for p in data if not is_dataset(p)]
    if bags:
        out = run / "dataset"
        if d.main:
            convert(bags, out, ConvertOptions(views=views), workers=workers, progress=progress)
        barrier(d)
        datasets.append(out)
    return datasets


def _infinite(loader, sampler):
    epoch = 0
    while True:
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def obs_from_batch(batch: dict, device) -> dict:
    obs = {"state": batch["state"].to(device, non_blocking=True), "task": batch["task"]}
    if "views" in batch:
        obs["views"] = batch["views"].to(device, non_blocking=True)
    if "action_history" in batch:
        obs["action_history"] = batch["action_history"].to(device, non_blocking=True)
    if "rgb" in batch:
        obs["rgb"] = batch["rgb"].to(device, non_blocking=True)
    return obs


def split_episodes(ds: ChunkDataset, val_episodes: int, val_samples: int):
    """(train subset, validation subset or None): the last `val_episodes` episodes by name are held
    out; validation uses up to `val_samples` evenly spaced samples of them (the same every time)."""
    if val_episodes <= 0:
        return ds, None
    names = sorted(e.name for e in ds.episodes)
    if val_episodes >= len(names):
        raise SystemExit(f"val_episodes={val_episodes} leaves no training episode (the data has {len(names)})")
    held = {ds.episodes.index(e) for e in ds.episodes if e.name in set(names[-val_episodes:])}
    is_val = np.isin(ds.index[:, 0], list(held))
    val_idx = np.flatnonzero(is_val)
    val_idx = val_idx[np.linspace(0, len(val_idx) - 1, min(val_samples, len(val_idx))).astype(int)]
    return (
        torch.utils.data.Subset(ds, np.flatnonzero(~is_val).tolist()),
        torch.utils.data.Subset(ds, sorted(set(val_idx.tolist()))),
    )


@torch.no_grad()
def validation_loss(model, val_ds, batch_size: int, device: str) -> float:
    """Mean diffusion loss with fixed noise and timesteps (comparable across checkpoints)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    total, n = 0.0, 0
    for batch in torch.utils.data.DataLoader(val_ds, batch_size=batch_size):
        actions = batch["actions"]
        b = actions.shape[0]
        noise = torch.randn(actions.shape, generator=gen)
        t = torch.randint(0, model.cfg.train_timesteps, (b,), generator=gen)
        loss = model.loss(obs_from_batch(batch, device), actions.to(device), noise=noise, timesteps=t)
        total += float(loss) * b
        n += b
    model.train(was_training)
    return total / max(n, 1)


# ---------------------------------------------------------------------------------- plotting
def plot_losses(log_csv: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_csv)))
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss (per log interval)")
    if len(loss) >= 5:
        k = max(2, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=1.8, label=f"moving mean ({k})")
    val_csv = log_csv.parent / "val.csv"
    if val_csv.exists():
        val = list(csv.DictReader(open(val_csv)))
        if val:
            ax.plot(
                [int(r["step"]) for r in val],
                [float(r["val_loss"]) for r in val],
                "o-",
                lw=1.5,
                label="held-out episodes (EMA weights)",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("diffusion loss (MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"training loss - {log_csv.parent.name}")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------- training
def train(
    cfg: TrainConfig,
    data: list[str],
    run_dir: str | os.PathLike,
    resume: bool = True,
    export: bool = True,
    progress: bool = True,
    convert_workers: int = 1,
) -> dict:
    """Train (resuming from RUN/checkpoint when present); returns a summary dict."""
    threads = torch.get_num_threads()
    try:
        return _train(cfg, data, run_dir, resume, export, progress, convert_workers)
    finally:
        torch.set_num_threads(threads)  # in-process callers (tests, notebooks) keep their setting


def _train(
    cfg: TrainConfig,
    data: list[str],
    run_dir: str | os.PathLike,
    resume: bool,
    export: bool,
    progress: bool,
    convert_workers: int,
) -> dict:
    from clamp_policy.models import EMA, DiffusionPolicy
    from tqdm import tqdm

    run = Path(run_dir)
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    d = init_distributed(device)
    if device == "cuda":
        device = f"cuda:{d.local_rank}"
        torch.cuda.set_device(d.local_rank)
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
    barrier(d)
    if cfg.batch_size % d.world:
        raise SystemExit(f"--batch-size {cfg.batch_size} must be divisible by the {d.world} processes")
    per_rank = cfg.batch_size // d.world
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + d.rank)
    np.random.seed(cfg.seed + d.rank)

    views = cfg.policy.image_encoder.type != "none"
    datasets = prepare_data(data, run, d, convert_workers, progress and d.main, views=views)
    stats = merge_stats([read_stats(p) for p in datasets])
    pcfg = cfg.policy
    view_size = pcfg.image_encoder.view_size if pcfg.image_encoder.type != "clamp_vit3d" else None
    ds = ChunkDataset(
        datasets,
        chunk_length=pcfg.chunk_length,
        action_history=pcfg.action_history,
        use_views=pcfg.image_encoder.type != "none",
        view_cache_size=view_size if cfg.cache_views else None,
        cache_bytes=cfg.cache_gb * 1e9,
        progress=progress and d.main,
        rgb_cameras=pcfg.rgb.cameras,
    )
    train_ds, val_ds = split_episodes(ds, cfg.val_episodes, cfg.val_samples)
    if cfg.epochs > 0:  # steps scaled with the dataset: the same number of passes whatever its size
        cfg = dataclasses.replace(cfg, steps=max(1, int(round(cfg.epochs * len(train_ds) / cfg.batch_size))))
    tc = cfg.task_conditioning
    if tc == "auto":
        tc = "vocab" if len(ds.tasks) > 1 else pcfg.task_conditioning
    if tc == "vocab" and not pcfg.task_vocab:
        pcfg = dataclasses.replace(pcfg, task_conditioning="vocab", task_vocab=list(ds.tasks))
    elif tc != pcfg.task_conditioning:
        pcfg = dataclasses.replace(pcfg, task_conditioning=tc)
    if pcfg.task_conditioning == "embedding":
        raise SystemExit("task_conditioning='embedding' needs text embeddings: train it with `clamp_training finetune`")
    if pcfg.task_conditioning == "vocab":
        unknown = sorted(set(ds.tasks) - set(pcfg.task_vocab))
        if unknown:
            raise SystemExit(f"tasks {unknown} are in the data but not in policy.task_vocab {pcfg.task_vocab}")
    cfg = dataclasses.replace(cfg, policy=pcfg.validate())

    model = DiffusionPolicy(cfg.policy)
    model.set_normalization(policy_stats(stats))
    model.to(device)
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    start_step = 0
    state = load_train_state(run) if resume else None
    if state is not None:
        tensors, meta = state
        saved = meta["train_config"]["policy"]
        if saved != cfg.policy.to_dict():
            now = cfg.policy.to_dict()
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise SystemExit(
                f"{run / CHECKPOINT_DIR} was trained with a different policy config (keys {diff}); use the same "
                "config to resume, --no-resume to start over in this run dir, or another --out"
            )
        model.load_state_dict(_sub(tensors, "model."))
        ema.load_state_dict({**meta["ema"], "model": _sub(tensors, "ema.")})
        opt.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
        start_step = int(meta["step"])

    net = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[d.local_rank] if device.startswith("cuda") else None)

    if d.world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(
            train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
    else:
        sampler = torch.utils.data.RandomSampler(
            train_ds, generator=torch.Generator().manual_seed(cfg.seed + start_step)
        )
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.num_workers,
        drop_last=len(train_ds) >= per_rank,
        pin_memory=device.startswith("cuda"),
        persistent_workers=cfg.num_workers > 0,
    )
    batches = _infinite(loader, sampler)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(p, 1.0))))

    log_csv = run / "log.csv"
    if d.main:
        (run / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if start_step == 0 or not log_csv.exists():
            with open(log_csv, "w", newline="") as f:
                csv.writer(f).writerow(["step", "loss", "lr", "samples_per_s", "elapsed_s"])
    amp = cfg.amp and device.startswith("cuda")
    model.train()
    bar = tqdm(total=cfg.steps, initial=start_step, desc="training", unit="step", disable=not (progress and d.main))
    t_start = time.perf_counter()
    window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
    last_loss = float("nan")
    summary_val = None
    if d.main and val_ds is not None and (start_step == 0 or not (run / "val.csv").exists()):
        with open(run / "val.csv", "w", newline="") as f:
            csv.writer(f).writerow(["step", "val_loss"])
    step = start_step
    for step in range(start_step, cfg.steps):
        batch = next(batches)
        obs = obs_from_batch(batch, device)
        actions = batch["actions"].to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = net(obs, actions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(model)
        last_loss = float(loss.detach())
        if not np.isfinite(last_loss):
            raise FloatingPointError(f"loss became {last_loss} at step {step}; lower --lr or check the data stats")
        window_loss += last_loss
        window_n += 1
        bar.update()
        done = step + 1
        if d.main and (done % cfg.log_every == 0 or done == cfg.steps):
            now = time.perf_counter()
            sps = window_n * cfg.batch_size / max(now - window_t, 1e-9)
            with open(log_csv, "a", newline="") as f:
                csv.writer(f).writerow(
                    [done, f"{window_loss / window_n:.6g}", f"{lr_at(step):.3g}", f"{sps:.2f}", f"{now - t_start:.1f}"]
                )
            bar.set_postfix(loss=f"{window_loss / window_n:.4f}", sps=f"{sps:.1f}")
            window_loss, window_n, window_t = 0.0, 0, now
        if d.main and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            save_train_state(run, done, model, ema, opt, cfg, {"datasets": [str(p) for p in datasets]})
            if val_ds is not None:
                val = validation_loss(ema.model, val_ds, per_rank, device)
                summary_val = val
                with open(run / "val.csv", "a", newline="") as f:
                    csv.writer(f).writerow([done, f"{val:.6g}"])
            plot_losses(log_csv, run / "loss.png")
    bar.close()
    barrier(d)
    summary = {
        "run": str(run),
        "steps": cfg.steps,
        "start_step": start_step,
        "final_loss": last_loss,
        "val_loss": summary_val,
        "train_samples": len(train_ds),
        "world_size": d.world,
        "train_s": time.perf_counter() - t_start,
    }
    if d.main and export:
        from .export import export_run

        summary["policy"] = str(export_run(run, run / POLICY_DIR))
    if d.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_training train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="converted dataset dirs and/or episode bag dirs")
    ap.add_argument("--out", required=True, help="run directory (resumed when it holds a checkpoint)")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--config", default=None, help="YAML/JSON with TrainConfig keys (and policy: {...})")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch-size", type=int, dest="batch_size")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--device")
    ap.add_argument("--num-workers", type=int, dest="num_workers")
    ap.add_argument("--threads", type=int, help="torch threads per process (0: torch default)")
    ap.add_argument("--amp", action="store_true", default=None, help="bf16 autocast on CUDA")
    ap.add_argument("--no-cache-views", dest="cache_views", action="store_false", default=None)
    ap.add_argument("--no-resume", action="store_true", help="ignore RUN/checkpoint and start over")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--convert-workers", type=int, default=min(4, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    overrides = {
        k: getattr(args, k)
        for k in ("steps", "batch_size", "lr", "seed", "device", "num_workers", "amp", "cache_views", "threads")
    }
    cfg = build_config(args.preset, args.config, overrides)
    from .convert import ConvertError
    from .dataset import DatasetError

    try:
        summary = train(
            cfg,
            args.data,
            args.out,
            resume=not args.no_resume,
            export=not args.no_export,
            convert_workers=args.convert_workers,
        )
    except (ConvertError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
