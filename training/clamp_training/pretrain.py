"""CLAMP pretraining: image / action / text encoders with the tri-modal sigmoid loss, jointly with the
diffusion policy (which shares the image encoder).

    python -m clamp_training pretrain --config CONFIG.yaml --data DATASET... --out RUN
    torchrun --nproc_per_node=N -m clamp_training pretrain ...      # DDP (gloo on CPU, nccl on GPU)
    python -m clamp_training pretrain --synthetic 24 --out RUN      # smoke run on contrastive_synthetic data

Writes the run directory described in clamp_training.pretrain_common (the CLAMP checkpoint, the exported
pretrained policy for `finetune --init RUN`, metrics.jsonl, loss_curves.png, held-out retrieval.json and
embeddings.png) and prints one JSON line with the final losses, retrieval accuracy and samples/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

LOSS_KEYS = ["total", "image_action", "image_text", "action_text", "diffusion"]


def _log(rank: int, *a):
    if rank == 0:
        print(*a, flush=True)


def pretrain(cfg: dict, data: list[str], out: str | Path, device: str = "cpu", progress: bool = True) -> dict:
    """Run pretraining as configured; returns the summary (also written to RUN/summary.json)."""
    from .pretrain_common import cpu_threads

    with cpu_threads(cfg["train"].get("threads", 0)):
        return _pretrain(cfg, data, out, device, progress)


def _pretrain(cfg: dict, data: list[str], out: str | Path, device: str, progress: bool) -> dict:
    from clamp_policy.models.checkpoint import save_policy
    from clamp_policy.models.siglip import distributed
    from tqdm import tqdm

    from .contrastive_data import ClampDataset, collate, dataset_stats, open_clamp_data, resolve_data, split_episodes
    from .dataset import policy_stats
    from .pretrain_common import build_model, lr_factor, plot_curves, save_clamp, setup_distributed
    from .prompts import prompt_ids
    from .retrieval import evaluate

    tr = cfg["train"]
    rank, world, dev = setup_distributed(device)
    torch.manual_seed(int(tr["seed"]) + rank)
    out = Path(out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        import yaml

        (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    model, policy_cfg = build_model(cfg)
    data = resolve_data(data, out, rank, world, progress)
    base = open_clamp_data(
        data,
        chunk_length=policy_cfg.chunk_length,
        history=model.history,
        view_size=policy_cfg.image_encoder.view_size,
        cache_bytes=float(tr["cache_bytes"]),
    )
    train_eps, val_eps = split_episodes(len(base.episodes), float(tr["val_fraction"]), int(tr["seed"]))
    train_ds = ClampDataset(base, train_eps, cfg.get("prompt"))
    val_ds = ClampDataset(base, val_eps, cfg.get("prompt")) if val_eps else None
    model.policy.set_normalization(policy_stats(dataset_stats(data)))
    model.text.fit_standardisation(train_ds.all_prompts())
    model.to(dev)

    batch_size = int(tr["batch_size"])
    sampler = None
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(train_ds, shuffle=True, seed=int(tr["seed"]), drop_last=True)
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        num_workers=int(tr["num_workers"]),
        collate_fn=collate,
    )
    if len(loader) == 0:
        raise ValueError(
            f"{len(train_ds)} training samples are fewer than batch_size {batch_size} x {world} ranks; "
            "lower train.batch_size or add data"
        )
    net = model
    if world > 1:
        if dev.type == "cuda":  # projection heads see the global batch (SyncBatchNorm is GPU-only)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True
        )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(tr["lr"]), weight_decay=float(tr["weight_decay"]))
    steps = int(tr["steps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, int(tr["warmup_steps"]), steps))

    metrics: list[dict] = []
    step, epoch, seen, t_train = 0, 0, 0, 0.0
    bar = tqdm(total=steps, desc="CLAMP pretrain", unit="step", disable=not progress or rank != 0)
    model.train()
    while step < steps:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            if step >= steps:
                break
            t0 = time.perf_counter()
            batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            batch["prompts"] = batch.pop("prompt")
            ids = torch.as_tensor(prompt_ids(batch["prompts"]), device=dev)
            losses = net(batch, ids)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, float(tr["grad_clip"]))
            opt.step()
            sched.step()
            t_train += time.perf_counter() - t0
            seen += batch_size * world
            step += 1
            bar.update(1)
            if step % int(tr["log_every"]) == 0 or step == steps:
                row = {"step": step, **{k: float(v.detach()) for k, v in losses.items()}}
                row.update(grad_norm=float(gnorm), lr=sched.get_last_lr()[0], samples_per_s=seen / t_train)
                for pair, (t, b) in model.temperatures().items():
                    row[f"t_{pair}"], row[f"b_{pair}"] = t, b
                metrics.append(row)
                bar.set_postfix(loss=f"{row['total']:.3f}")
        epoch += 1
    bar.close()

    summary = {"steps": steps, "world_size": world, "samples_per_s": seen / max(t_train, 1e-9)}
    summary["final"] = {k: metrics[-1][k] for k in LOSS_KEYS if k in metrics[-1]}
    if rank == 0:
        with open(out / "metrics.jsonl", "w") as f:
            for row in metrics:
                f.write(json.dumps(row) + "\n")
        plot_curves(metrics, out / "loss_curves.png", LOSS_KEYS, f"CLAMP pretraining ({world} process(es))")
        model.eval()
        if val_ds is not None:
            summary["retrieval"] = evaluate(model, val_ds, out, max_samples=int(tr["retrieval_samples"]))
            summary["held_out_episodes"] = len(val_eps)
        meta = {"source": "clamp_training.pretrain", "data": [str(d) for d in data], "steps": steps}
        save_clamp(model, cfg, out / "clamp", metadata=meta)
        save_policy(model.policy, out / "policy", metadata={**meta, "clamp_pretrained": True})
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if distributed():
        torch.distributed.barrier()
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_training pretrain", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="YAML with sections policy / clamp / prompt / train")
    ap.add_argument(
        "--preset",
        default="small",
        choices=("small", "paper"),
        help="small: CPU-sized (32 px views); paper: 224 px views, ViT-S-like encoder (GPU)",
    )
    ap.add_argument(
        "--data",
        nargs="+",
        default=[],
        help="converted dataset dirs and/or episode bag dirs (converted into RUN/dataset)",
    )
    ap.add_argument("--out", required=True, help="run directory to create")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="EPISODES",
        help="write this many contrastive_synthetic episodes to RUN/synthetic_data and train on them",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from .pretrain_common import load_config

    overrides = {"train": {}}
    for key, val in (
        ("steps", args.steps),
        ("batch_size", args.batch_size),
        ("lr", args.lr),
        ("seed", args.seed),
        ("threads", args.threads),
    ):
        if val is not None:
            overrides["train"][key] = val
    cfg = load_config(args.config, overrides, args.preset)
    data = list(args.data)
    if args.synthetic:
        from .contrastive_data import write_synthetic_dataset

        size = int(cfg["policy"]["image_encoder"]["view_size"])
        data.append(str(write_synthetic_dataset(Path(args.out) / "synthetic_data", args.synthetic, size=size)))
    if not data:
        ap.error("give --data DATASET... (converted datasets) or --synthetic EPISODES")
    summary = pretrain(cfg, data, args.out, device=args.device, progress=not args.no_progress)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(json.dumps({"pretrain": summary, "run": str(args.out)}))  # one JSON line for logs / benchmarks
    return 0
