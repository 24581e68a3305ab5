"""Fine-tune a CLAMP-pretrained diffusion policy on a few demonstrations, CLAMP encoders frozen.

    python -m clamp_training finetune --init PRETRAINED --data DATASET... --out RUN [--unfreeze]

PRETRAINED is a pretraining run (its exported `policy/` is used) or an exported policy dir. As in the
paper the pretrained policy initialises fine-tuning and the CLAMP image encoder stays frozen (its
parameters get no gradient and it stays in eval mode); `--unfreeze` trains it too. The action
normalisation range is widened to cover the new data (pretrained weights keep their meaning), state
statistics come from the new data. Writes RUN/policy (exported: model.safetensors + config.json +
sha256, loadable with clamp_policy.models.load_policy), metrics.jsonl, loss_curves.png and
summary.json (incl. whether the frozen encoder is bit-identical to the pretrained one), and prints
one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

FINETUNE_DEFAULTS = {
    "steps": 200,
    "batch_size": 32,
    "lr": 3e-4,
    "weight_decay": 0.01,
    "warmup_steps": 10,
    "grad_clip": 1.0,
    "seed": 0,
    "log_every": 10,
    "num_workers": 0,
    "cache_bytes": 4.0e9,
    "threads": 0,
}


def params_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's parameters and buffers (bit-exact comparison)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_init(path) -> Path:
    p = Path(path)
    if (p / "policy" / "config.json").is_file():
        return p / "policy"
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return p
    raise FileNotFoundError(
        f"{p} is neither a CLAMP pretraining run (with policy/) nor an exported policy dir; "
        "run `python -m clamp_training pretrain ... --out RUN` first and pass RUN"
    )


def finetune(
    init,
    data: list[str],
    out,
    train: dict | None = None,
    unfreeze: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    from .pretrain_common import cpu_threads

    with cpu_threads((train or {}).get("threads", 0)):
        return _finetune(init, data, out, train, unfreeze, device, progress)


def _finetune(init, data, out, train, unfreeze, device, progress) -> dict:
    from clamp_policy.models.checkpoint import load_policy, save_policy
    from clamp_policy.models.clamp_model import freeze_encoders, keep_frozen_eval
    from tqdm import tqdm

    from .contrastive_data import collate, dataset_stats, open_clamp_data, resolve_data
    from .dataset import policy_stats
    from .pretrain_common import lr_factor, plot_curves, setup_distributed

    tr = {**FINETUNE_DEFAULTS, **(train or {})}
    unknown = sorted(set(tr) - set(FINETUNE_DEFAULTS))
    if unknown:
        raise ValueError(f"finetune: unknown train key(s) {unknown}; known: {sorted(FINETUNE_DEFAULTS)}")
    _, world, dev = setup_distributed(device)
    if world > 1:
        raise NotImplementedError("finetune runs in one process (few demonstrations); start it without torchrun")
    torch.manual_seed(int(tr["seed"]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    init_dir = resolve_init(init)
    policy = load_policy(init_dir, device="cpu")
    cfg = policy.cfg
    encoder_before = params_digest(policy.image_encoder)

    data = resolve_data(data, out, progress=progress)
    base = open_clamp_data(
        data, cfg.chunk_length, cfg.action_history, cfg.image_encoder.view_size, float(tr["cache_bytes"])
    )
    new = policy_stats(dataset_stats(data))
    old = policy.normalization()
    new["action_min"] = np.minimum(old["action_min"], new["action_min"]).tolist()
    new["action_max"] = np.maximum(old["action_max"], new["action_max"]).tolist()
    policy.set_normalization(new)
    frozen = freeze_encoders(policy, frozen=not unfreeze)
    policy.to(dev).train()
    keep_frozen_eval(policy)

    params = [p for p in policy.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=float(tr["lr"]), weight_decay=float(tr["weight_decay"]))
    steps = int(tr["steps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, int(tr["warmup_steps"]), steps))
    bs = min(int(tr["batch_size"]), len(base))
    loader = torch.utils.data.DataLoader(
        base, batch_size=bs, shuffle=True, drop_last=True, num_workers=int(tr["num_workers"]), collate_fn=collate
    )
    keys = policy.required_obs_keys()
    metrics, step, seen, t_train = [], 0, 0, 0.0
    bar = tqdm(total=steps, desc="CLAMP finetune", unit="step", disable=not progress)
    while step < steps:
        for batch in loader:
            if step >= steps:
                break
            t0 = time.perf_counter()
            obs = {k: (batch[k].to(dev) if isinstance(batch[k], torch.Tensor) else batch[k]) for k in keys}
            loss = policy.loss(obs, batch["actions"].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, float(tr["grad_clip"]))
            opt.step()
            sched.step()
            t_train += time.perf_counter() - t0
            seen += bs
            step += 1
            bar.update(1)
            if step % int(tr["log_every"]) == 0 or step == steps:
                metrics.append({"step": step, "diffusion": float(loss.detach()), "samples_per_s": seen / t_train})
                bar.set_postfix(loss=f"{metrics[-1]['diffusion']:.3f}")
    bar.close()
    policy.eval()
    encoder_after = params_digest(policy.image_encoder)
    summary = {
        "init": str(init_dir),
        "steps": steps,
        "frozen_parameters": len(frozen),
        "trainable_parameters": n_train,
        "encoder_frozen": not unfreeze,
        "encoder_unchanged": encoder_before == encoder_after,
        "final_diffusion_loss": metrics[-1]["diffusion"] if metrics else None,
        "samples_per_s": seen / max(t_train, 1e-9),
    }
    if not unfreeze and not summary["encoder_unchanged"]:
        raise RuntimeError("the frozen CLAMP image encoder changed during fine-tuning (a bug: report it)")
    with open(out / "metrics.jsonl", "w") as f:
        for row in metrics:
            f.write(json.dumps(row) + "\n")
    plot_curves(metrics, out / "loss_curves.png", ["diffusion"], "CLAMP fine-tuning (diffusion loss)")
    meta = {"source": "clamp_training.finetune", "init": str(init_dir), "data": [str(d) for d in data], **summary}
    save_policy(policy.cpu(), out / "policy", metadata=meta)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_training finetune", description=__doc__.split("\n")[0])
    ap.add_argument("--init", required=True, help="pretraining run dir (or an exported policy dir)")
    ap.add_argument("--data", nargs="+", required=True, help="converted dataset dirs and/or episode bag dirs")
    ap.add_argument("--out", required=True, help="run directory to create")
    ap.add_argument("--config", default=None, help="YAML; its `train` section overrides the fine-tuning defaults")
    ap.add_argument("--unfreeze", action="store_true", help="also train the CLAMP image encoder")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    train = {}
    if args.config:
        import yaml

        doc = yaml.safe_load(Path(args.config).read_text()) or {}
        section = doc.get("train", {}) if isinstance(doc, dict) else {}
        ignored = sorted(set(section) - set(FINETUNE_DEFAULTS))
        if ignored:
            print(f"finetune: ignoring train keys it does not use: {ignored}", file=sys.stderr)
        train.update({k: v for k, v in section.items() if k in FINETUNE_DEFAULTS})
    for key, val in (
        ("steps", args.steps),
        ("batch_size", args.batch_size),
        ("lr", args.lr),
        ("threads", args.threads),
    ):
        if val is not None:
            train[key] = val
    summary = finetune(args.init, args.data, args.out, train, args.unfreeze, args.device, not args.no_progress)
    print(json.dumps({"finetune": summary, "run": str(args.out)}))
    return 0
