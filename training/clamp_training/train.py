"""The one training loop of clamp_training, for every stage (`TrainConfig.stage`): the diffusion
policy from scratch, CLAMP pretraining, fine-tuning with the frozen CLAMP encoders
(clamp_training.stages). The command is `python -m clamp_training train` (clamp_training.commands.train).

From episode bags (converted first, into RUN/dataset) or converted datasets to an exported policy
(RUN/policy: the EMA weights as model.safetensors + config.json + sha256, loadable with
clamp_policy.models.load_policy). The run directory:

    RUN/train_config.json   the resolved TrainConfig
    RUN/checkpoint/         resumable state: model, EMA, optimizer, RNG (safetensors + JSON; no pickle)
    RUN/log.csv, val.csv    training loss (+ the stage's loss terms), lr, samples/s; held-out loss
    RUN/loss.png            the curves; RUN/tensorboard/ the same scalars as TensorBoard event files
    RUN/summary.json        what `train` returns
    RUN/policy/             the exported policy (+ RUN/clamp/, retrieval.json for stage pretrain)

Re-running with the same config resumes from RUN/checkpoint: same step, same LR schedule, same data
order and noise. Scale out with torchrun (clamp_training.distributed): batch_size is global.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .config import PRESETS, TrainConfig, build_config  # noqa: F401  (the API others import from here)
from .distributed import Dist, barrier, init_distributed, shutdown
from .run_state import CHECKPOINT_DIR, _sub, _unflatten_optimizer, load_train_state, save_train_state
from .stages import STAGE_CLASSES, obs_from_batch  # noqa: F401

POLICY_DIR = "policy"
TENSORBOARD_DIR = "tensorboard"


class TrainError(RuntimeError):
    """A run that cannot start or continue as asked; the message names the fix."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The one LR schedule: linear warm-up over warmup_steps, then cosine decay to 10% at `steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


class StepBatches(torch.utils.data.Sampler):
    """Row indices per step from `start_step` on: epoch e is a permutation of the training rows seeded
    by (seed, e), cut across ranks like DistributedSampler (drop_last). A resumed run therefore sees
    exactly the batches an uninterrupted one would."""

    def __init__(self, rows: np.ndarray, per_rank: int, rank: int, world: int, seed: int, start_step: int):
        self.rows, self.per_rank, self.rank, self.world = np.asarray(rows), per_rank, rank, world
        self.seed, self.start_step = seed, start_step
        self.per_epoch = max(1, (len(self.rows) // world) // per_rank)

    def __iter__(self):
        n_rank = len(self.rows) // self.world
        epoch, skip = divmod(self.start_step, self.per_epoch)
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = self.rows[torch.randperm(len(self.rows), generator=g).numpy()]
            mine = order[: n_rank * self.world][self.rank :: self.world]
            if len(mine) < self.per_rank:  # fewer samples than a batch: the whole set each step
                batches = [mine]
            else:
                batches = [mine[i : i + self.per_rank] for i in range(0, len(mine) - self.per_rank + 1, self.per_rank)]
            for b in batches[skip:]:
                yield b.tolist()
            skip, epoch = 0, epoch + 1


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


@torch.no_grad()
def validation_loss(stage, model, rows: np.ndarray, batch_size: int, device: str) -> float:
    """Mean loss on held-out rows with fixed noise and timesteps (comparable across checkpoints)."""
    from clamp_policy.models.siglip import local_only

    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    devices = [torch.device(device)] if device.startswith("cuda") else []
    # rank 0 alone: no cross-rank gathering in the loss (the other ranks are not computing it)
    with torch.random.fork_rng(devices=devices), local_only():
        torch.manual_seed(1234)
        sub = torch.utils.data.Subset(stage.dataset, rows.tolist())
        for batch in torch.utils.data.DataLoader(sub, batch_size=batch_size):
            loss, _ = stage.loss(model, batch, device)
            b = batch["actions"].shape[0]
            total += float(loss) * b
            n += b
    model.train(was_training)
    return total / max(n, 1)


# ---------------------------------------------------------------------------------- logging
class RunLog:
    """log.csv / val.csv, TensorBoard event files (RUN/tensorboard) and loss.png; rank 0 only.
    On resume the rows after the checkpoint's step (written before an interruption) are dropped."""

    def __init__(self, run: Path, extra: tuple[str, ...], start_step: int, enabled: bool) -> None:
        self.run, self.extra, self.enabled = run, extra, enabled
        self.columns = ["step", "loss", "lr", "samples_per_s", "elapsed_s", *extra]
        self.log_csv, self.val_csv = run / "log.csv", run / "val.csv"
        self.tb = None
        if not enabled:
            return
        self._truncate(self.log_csv, self.columns, start_step)
        self._truncate(self.val_csv, ["step", "val_loss"], start_step)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run / TENSORBOARD_DIR), purge_step=start_step if start_step else None)

    @staticmethod
    def _truncate(path: Path, header: list[str], start_step: int) -> None:
        rows = []
        if start_step and path.exists():
            old = list(csv.DictReader(open(path)))
            if old and list(old[0]) == header:
                rows = [r for r in old if int(r["step"]) <= start_step]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header)
            w.writeheader()
            w.writerows(rows)

    def train_row(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.log_csv, "a", newline="") as f:
            csv.writer(f).writerow([step, *(f"{values[c]:.6g}" for c in self.columns[1:])])
        for c in self.columns[1:]:
            if c != "elapsed_s":
                self.tb.add_scalar(f"train/{c}", values[c], step)

    def val_row(self, step: int, val: float) -> None:
        if not self.enabled:
            return
        with open(self.val_csv, "a", newline="") as f:
            csv.writer(f).writerow([step, f"{val:.6g}"])
        self.tb.add_scalar("val/loss", val, step)

    def flush(self) -> None:
        if self.enabled:
            self.tb.flush()
            plot_losses(self.log_csv, self.run / "loss.png", self.extra)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_losses(log_csv: Path, out_png: Path, extra: tuple[str, ...] = ()) -> None:
    """The total loss (+ held-out loss from val.csv) and, beside it, each of the stage's loss terms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_csv)))
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows])
    keys = [k for k in extra if rows[0].get(k) not in (None, "", "nan")]
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(7 + 3.2 * len(keys), 4), squeeze=False)
    ax = axes[0][0]
    loss = np.array([float(r["loss"]) for r in rows])
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss (per log interval)")
    if len(loss) >= 5:
        k = max(2, len(loss) // 20)
        ax.plot(steps[k - 1 :], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=1.8, label=f"moving mean ({k})")
    val_csv = log_csv.parent / "val.csv"
    val = list(csv.DictReader(open(val_csv))) if val_csv.exists() else []
    if val:
        ax.plot(
            [int(r["step"]) for r in val],
            [float(r["val_loss"]) for r in val],
            "o-",
            lw=1.5,
            label="held-out episodes (EMA weights)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if (loss > 0).all():
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"training loss - {log_csv.parent.name}")
    for ax, key in zip(axes[0][1:], keys, strict=True):
        ax.plot(steps, [float(r[key]) for r in rows])
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
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
    until: int | None = None,
) -> dict:
    """Train (resuming from RUN/checkpoint when present); returns a summary dict (also RUN/summary.json).

    until: stop after this step of the schedule (checkpointed; the same call without it continues)."""
    threads = torch.get_num_threads()
    try:
        return _train(cfg, data, Path(run_dir), resume, export, progress, convert_workers, until)
    finally:
        torch.set_num_threads(threads)  # in-process callers (tests, notebooks) keep their setting


def _train(cfg, data, run: Path, resume, export, progress, convert_workers, until) -> dict:
    from clamp_policy.models import EMA
    from tqdm import tqdm

    from .dataset import split_episodes

    d = init_distributed(cfg.device)
    device = d.device
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
    barrier(d)
    if cfg.batch_size % d.world:
        raise TrainError(f"batch_size {cfg.batch_size} must be divisible by the {d.world} processes")
    per_rank = cfg.batch_size // d.world
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + d.rank)
    np.random.seed(cfg.seed + d.rank)

    stage_cls = STAGE_CLASSES[cfg.stage]
    datasets = prepare_data(data, run, d, convert_workers, progress and d.main, views=stage_cls.needs_views(cfg))
    stage = stage_cls(cfg, datasets, progress and d.main)
    cfg = stage.cfg
    train_rows, val_rows = split_episodes(stage.base, cfg.val_episodes, cfg.val_fraction)
    if cfg.epochs > 0:  # steps scaled with the dataset: the same number of passes whatever its size
        cfg = dataclasses.replace(cfg, steps=max(1, int(round(cfg.epochs * len(train_rows) / cfg.batch_size))))
    if len(val_rows) > cfg.val_samples:  # evenly spaced, the same every time
        val_rows = val_rows[np.linspace(0, len(val_rows) - 1, cfg.val_samples).astype(int)]
    stage.on_split(train_rows)

    model = stage.model.to(device)
    ema = EMA(model, cfg.ema_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    start_step = 0
    state = load_train_state(run) if resume else None
    if state is not None:
        tensors, meta = state
        saved, now = meta["train_config"], cfg.to_dict()
        diff = [k for k in ("stage", "clamp") if saved.get(k) != now[k]]
        diff += [
            f"policy.{k}"
            for k in sorted(set(saved["policy"]) | set(now["policy"]))
            if saved["policy"].get(k) != now["policy"].get(k)
        ]
        if diff:
            raise TrainError(
                f"{run / CHECKPOINT_DIR} was trained with a different config ({diff}); use the same config to "
                "resume, --no-resume to start over in this run dir, or another --out"
            )
        model.load_state_dict(_sub(tensors, "model."))
        ema.load_state_dict({**meta["ema"], "model": _sub(tensors, "ema.")})
        opt.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
        start_step = int(meta["step"])

    net = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if device.startswith("cuda") and stage.find_unused_parameters:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # projection heads see the global batch
        net = DDP(
            model,
            device_ids=[d.local_rank] if device.startswith("cuda") else None,
            find_unused_parameters=stage.find_unused_parameters,
        )
    loader = torch.utils.data.DataLoader(
        stage.dataset,
        batch_sampler=StepBatches(train_rows, per_rank, d.rank, d.world, cfg.seed, start_step),
        num_workers=cfg.num_workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=cfg.num_workers > 0,
    )
    batches = iter(loader)  # (draws its base seed from the global RNG: before the RNG is restored)
    if state is not None:
        if d.main and "rng.torch" in state[0]:
            torch.set_rng_state(state[0]["rng.torch"])
        else:
            torch.manual_seed(cfg.seed + d.rank + 1_000_003 * start_step)

    if d.main:
        (run / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    log = RunLog(run, stage.extra_keys, start_step, d.main)
    end = cfg.steps if until is None else max(start_step, min(int(until), cfg.steps))
    amp = cfg.amp and device.startswith("cuda")
    stage.train_mode(model)
    bar = tqdm(
        total=cfg.steps,
        initial=start_step,
        desc=f"training ({cfg.stage})",
        unit="step",
        disable=not (progress and d.main),
    )
    t_start = time.perf_counter()
    window: dict[str, float] = {}
    window_n, window_t, train_t = 0, time.perf_counter(), 0.0
    last_loss, summary_val = float("nan"), None
    extra: dict = {"datasets": [str(p) for p in datasets]}
    for step in range(start_step, end):
        t0 = time.perf_counter()
        batch = next(batches)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss, parts = stage.loss(net, batch, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        ema.update(model)
        train_t += time.perf_counter() - t0
        last_loss = float(loss.detach())
        if not np.isfinite(last_loss):
            raise FloatingPointError(f"loss became {last_loss} at step {step}; lower lr or check the data stats")
        for k, v in {"loss": last_loss, **{k: float(v.detach()) for k, v in parts.items()}}.items():
            window[k] = window.get(k, 0.0) + v
        window_n += 1
        bar.update()
        done = step + 1
        if done % cfg.log_every == 0 or done == end:
            now = time.perf_counter()
            values = {k: v / window_n for k, v in window.items()}
            values.update(lr=lr, samples_per_s=window_n * cfg.batch_size / max(now - window_t, 1e-9))
            values["elapsed_s"] = now - t_start
            for k in stage.extra_keys:
                values.setdefault(k, float("nan"))
            log.train_row(done, values)
            bar.set_postfix(loss=f"{values['loss']:.4f}", sps=f"{values['samples_per_s']:.1f}")
            window, window_n, window_t = {}, 0, now
        if done % cfg.ckpt_every == 0 or done == end:
            if d.main:
                save_train_state(run, done, model, ema, opt, cfg, extra)
                if len(val_rows):
                    summary_val = validation_loss(stage, ema.model, val_rows, per_rank, device)
                    log.val_row(done, summary_val)
                log.flush()
            barrier(d)
    bar.close()
    log.close()
    barrier(d)
    finished = end >= cfg.steps
    summary = {
        "run": str(run),
        "stage": cfg.stage,
        "steps": cfg.steps,
        "start_step": start_step,
        "step": end,
        "finished": finished,
        "final_loss": last_loss,
        "val_loss": summary_val,
        "train_samples": int(len(train_rows)),
        "held_out_samples": int(len(val_rows)),
        "world_size": d.world,
        "train_s": time.perf_counter() - t_start,
        "samples_per_s": (end - start_step) * cfg.batch_size / max(train_t, 1e-9),
        **stage.info,
    }
    if d.main and finished:
        from .export import export_run

        summary.update(stage.finish(run, model, ema.model, val_rows))
        if export:
            summary["policy"] = str(export_run(run, run / POLICY_DIR, metadata={"stage_info": stage.info}))
        (run / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    barrier(d)
    shutdown(d)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Kept for callers of `clamp_training.train.main`: the command is clamp_training.commands.train."""
    from .__main__ import main as dispatch

    return dispatch(["train", *(argv if argv is not None else sys.argv[1:])])
