"""`python -m clamp_training.bench`: conversion, loader and training throughput as one JSON line.

Each figure is measured against a baseline in the same run:
- conversion: episode-seconds converted per second, parallel across episodes (--workers) vs one
  at a time (views rendered by clamp_perception from synthetic 4-camera bags with TF);
- loader: samples/s of ChunkDataset with the view cache (views pooled once to the model's input
  size, kept in RAM) vs reading + decompressing full-size views from zarr per sample;
- training: samples/s of full training steps of the default policy with vs without that cache
  (same model, same batches; without it the model pools the full-size views itself).
On a CUDA machine the training figures are also measured on the GPU (bf16 autocast).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def _bench_convert(root: Path, episodes: int, duration: float, size: tuple[int, int], camera_hz: float, workers: int):
    from .convert import convert
    from .synthetic import write_synthetic_episode

    bags = root / "bags"
    for i in range(episodes):
        write_synthetic_episode(bags / f"ep{i}", duration_s=duration, seed=i, camera_hz=camera_hz, image_size=size)
    out = {}
    for name, w in (("sequential", 1), ("parallel", workers)):
        t = time.perf_counter()
        convert([bags], root / f"ds_{name}", workers=w, progress=False)
        out[name] = episodes * duration / (time.perf_counter() - t)
    return root / "ds_parallel", out


def _loader_rate(ds, n: int, batch: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # warm-up
    t, seen = time.perf_counter(), 0
    while seen < n:
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        seen += len(b["state"])
    return seen / (time.perf_counter() - t)


def _train_rate(ds, policy_cfg, steps: int, batch: int, device: str, amp: bool) -> float:
    from clamp_policy.models import DiffusionPolicy

    from .train import obs_from_batch

    torch.manual_seed(0)
    model = DiffusionPolicy(policy_cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)
    )

    def batches():
        while True:
            yield from loader

    it = batches()

    def step():
        b = next(it)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = model(obs_from_batch(b, device), b["actions"].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def run(args) -> dict:
    from .dataset import ChunkDataset
    from .train import PRESETS

    if args.threads:
        torch.set_num_threads(args.threads)
    policy_cfg = PRESETS["default"]().policy
    size = policy_cfg.image_encoder.view_size
    result: dict = {"bench": "clamp_training", "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="clamp_training_bench_") as tmp:
        ds_dir, conv = _bench_convert(
            Path(tmp), args.episodes, args.duration, (args.height, args.width), args.camera_hz, args.workers
        )
        result["convert_episode_s_per_s"] = round(conv["parallel"], 3)
        result["convert_baseline_sequential_episode_s_per_s"] = round(conv["sequential"], 3)
        result["convert_speedup"] = round(conv["parallel"] / conv["sequential"], 2)
        result["convert_setup"] = (
            f"{args.episodes} episodes x {args.duration}s, 4 cams {args.height}x{args.width} "
            f"@ {args.camera_hz} Hz, workers={args.workers}"
        )
        plain = ChunkDataset([ds_dir], chunk_length=policy_cfg.chunk_length, progress=False)
        cached = ChunkDataset([ds_dir], chunk_length=policy_cfg.chunk_length, view_cache_size=size, progress=False)
        result["dataset_samples"] = len(plain)
        lb, lc = (
            _loader_rate(plain, args.loader_samples, args.batch),
            _loader_rate(cached, args.loader_samples, args.batch),
        )
        result["loader_samples_per_s"] = round(lc, 1)
        result["loader_baseline_no_cache_samples_per_s"] = round(lb, 1)
        result["loader_speedup"] = round(lc / lb, 2)
        tb = _train_rate(plain, policy_cfg, args.train_steps, args.batch, "cpu", False)
        tc = _train_rate(cached, policy_cfg, args.train_steps, args.batch, "cpu", False)
        result["train_samples_per_s"] = round(tc, 2)
        result["train_baseline_no_cache_samples_per_s"] = round(tb, 2)
        result["train_speedup"] = round(tc / tb, 2)
        from clamp_policy.models import DiffusionPolicy

        n_params = sum(p.numel() for p in DiffusionPolicy(policy_cfg).parameters())
        result["train_setup"] = (
            f"default policy ({n_params / 1e6:.2f}M params, views pooled to {size}), batch {args.batch}"
        )
        if torch.cuda.is_available():
            gb = _train_rate(plain, policy_cfg, args.train_steps * 5, args.batch * 4, "cuda", True)
            gc = _train_rate(cached, policy_cfg, args.train_steps * 5, args.batch * 4, "cuda", True)
            result["gpu"] = torch.cuda.get_device_name(0)
            result["gpu_train_samples_per_s"] = round(gc, 1)
            result["gpu_train_baseline_no_cache_samples_per_s"] = round(gb, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_training.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per synthetic episode")
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--camera-hz", type=float, default=15.0)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--loader-samples", type=int, default=256)
    ap.add_argument("--train-steps", type=int, default=6)
    # 1 thread: on a shared 2-core CPU, OpenMP's 2 threads run several times slower (spin-waiting)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    args = ap.parse_args(argv)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
