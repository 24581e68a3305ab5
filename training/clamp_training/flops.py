"""`python -m clamp_training.flops --config EXPERIMENT.yaml`: what a training step of an experiment costs.

Counts the floating-point operations (torch.utils.flop_counter) of one CLAMP pretraining step (the
three contrastive losses + the joint diffusion loss, forward + backward) and of one fine-tuning step
(the policy around the frozen encoder, its tokens cached) per sample, on the experiment config's
pretraining architecture, and the time a step would take at an assumed sustained throughput. This is
how training/configs/experiment_gpu.yaml's expected time was estimated without a GPU: the counts are
exact for the model; the throughput (--tflops) is an assumption, stated in the output.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

PROMPT = "put the red cube on the green plate"


def _batch(policy_cfg, batch: int, image_size: tuple[int, int], history: int) -> dict:
    import torch
    from clamp_core import rig

    enc = policy_cfg.image_encoder
    s = enc.view_size
    h, w = image_size
    return {
        "views": torch.rand(batch, len(rig.VIEW_NAMES), len(rig.VIEW_CHANNELS), s, s),
        "action_history": torch.randn(batch, history, rig.ACTION_DIM),
        "actions": torch.randn(batch, policy_cfg.chunk_length, rig.ACTION_DIM),
        "state": torch.randn(batch, rig.ACTION_DIM),
        "rgb": torch.randint(0, 255, (batch, len(policy_cfg.rgb.cameras), 3, h, w), dtype=torch.uint8),
        "prompts": [PROMPT] * batch,
    }


def _step_flops(experiment: dict, batch: int) -> tuple[float, float, dict]:
    """FLOPs of one pretraining and one fine-tuning step at `batch`, and the model's sizes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .clamp_checkpoint import build_clamp_model
    from .experiment import pretrain_config

    torch.manual_seed(0)
    cfg = pretrain_config(experiment["pretrain"], device="cpu")
    model, policy_cfg = build_clamp_model(cfg)
    data = _batch(policy_cfg, batch, tuple(experiment["data"]["image_size"]), model.history)
    with FlopCounterMode(display=False) as pre:
        model(data)["total"].backward()
    policy = model.policy
    obs = {k: data[k] for k in policy.required_obs_keys() if k != "views"}
    with torch.no_grad():  # the fine-tuning stage caches the frozen encoder's tokens once per camera frame
        obs["image_tokens"] = policy.image_encoder(policy.prepare_views(data["views"]))
    with FlopCounterMode(display=False) as fine:
        policy.loss(obs, data["actions"]).backward()
    sizes = {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "image_encoder_params_m": round(sum(p.numel() for p in model.image.parameters()) / 1e6, 2),
        "tokens": int(policy.image_encoder.num_tokens),
    }
    return pre.get_total_flops(), fine.get_total_flops(), sizes


def count(experiment: dict, small: int = 2) -> dict:
    """GFLOP of a pretraining and a fine-tuning step of the experiment's architecture, per sample and at the
    experiment's batch sizes. Counted at batches `small` and 2 x `small` and extended linearly: part of a step
    does not grow with the batch (a batch's prompts are few and encoded once)."""
    from .experiment import train_doc

    # a fresh model per count: the text encoder caches each prompt's features, so a reused model would skip
    # encoding them in the second count and the per-sample difference would absorb that fixed cost
    pre1, fine1, sizes = _step_flops(experiment, small)
    pre2, fine2, _ = _step_flops(experiment, 2 * small)
    out = dict(sizes)
    for stage, (f1, f2) in {"pretrain": (pre1, pre2), "finetune": (fine1, fine2)}.items():
        per_sample = (f2 - f1) / small
        fixed = f1 - small * per_sample
        batch = int(train_doc(experiment.get(stage) or {}).get("batch_size", 64))
        out[f"{stage}_gflop_per_sample"] = float(f"{per_sample / 1e9:.4g}")
        out[f"{stage}_batch"] = batch
        out[f"{stage}_gflop_per_step"] = float(f"{(fixed + batch * per_sample) / 1e9:.4g}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_training.flops", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="experiment YAML (its pretrain: section is the architecture)")
    ap.add_argument(
        "--tflops", type=float, default=300.0, help="assumed sustained TFLOP/s (300: ~30%% of an H100's bf16)"
    )
    a = ap.parse_args(argv)
    import torch

    from .experiment import load_config

    torch.set_num_threads(1)
    experiment = load_config(a.config)
    out = {"config": a.config, **count(experiment)}
    for stage in ("pretrain", "finetune"):
        seconds = out[f"{stage}_gflop_per_step"] / (a.tflops * 1e3)
        out[f"{stage}_step_s_at_{a.tflops:g}_tflops"] = float(f"{seconds:.3g}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
