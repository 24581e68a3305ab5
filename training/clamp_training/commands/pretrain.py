"""`python -m clamp_training pretrain --data DATASET... --out RUN [--config FILE]`: CLAMP pretraining.

The `train` command with stage `pretrain` (preset `clamp_small`; `--preset clamp_paper` for GPUs):
the 3D-aware image encoder, the action and text encoders with the three-way sigmoid contrastive loss,
jointly with the diffusion policy. Leaves RUN/clamp/ (the CLAMP checkpoint), RUN/policy/ (the
pretrained policy: `finetune --init RUN` starts from it), retrieval.json, embeddings.png. With
`--synthetic N`, N contrastive_synthetic episodes are written to RUN/synthetic_data and used as data.

From nothing: a config with a `demonstrations:` section (tasks, episodes per task, first_seed,
image_size, camera_hz, workers, cache) generates those scripted demonstrations with clamp_sim and
converts them with the CLAMP views (`clamp_training.experiment.episode_datasets`: cached, so a rerun
reuses them) before pretraining on them; `--ship DIR` then writes the shipped checkpoint (clamp/,
policy/, reference embeddings, loss.png, MODEL_CARD.md with the sha256 of every file):

    python -m clamp_training pretrain --config training/configs/pretrain_cpu.yaml --out RUN --ship models/clamp_cpu
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from pathlib import Path

OLD_PRESETS = {"small": "clamp_small", "paper": "clamp_paper"}
DEMO_KEYS = {
    "tasks": None,
    "episodes": None,
    "first_seed": 0,
    "image_size": [96, 128],
    "camera_hz": 10.0,
    "workers": 2,
    "cache": ".build/clamp_cache",
}
REFERENCE = "reference.safetensors"
REFERENCE_SAMPLES = 4
CARD = "MODEL_CARD.md"


def main(argv: list[str] | None = None) -> int:
    from clamp_training.commands.common import parser, run

    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m clamp_training pretrain " + shlex.join(argv)
    for i, a in enumerate(argv[:-1]):  # the preset names this command had before it was `train --stage pretrain`
        if a == "--preset" and argv[i + 1] in OLD_PRESETS:
            argv[i + 1] = OLD_PRESETS[argv[i + 1]]
    ap = parser("python -m clamp_training pretrain", __doc__.split("\n\n")[0], data_required=False)
    ap.add_argument("--synthetic", type=int, default=0, metavar="EPISODES", help="train on synthetic episodes")
    ap.add_argument(
        "--ship", default=None, metavar="DIR", help="write the checkpoint + model card to DIR (e.g. models/clamp_cpu)"
    )
    ap.add_argument("--cache", default=None, help="where the demonstrations go (default: demonstrations.cache)")
    args = ap.parse_args(argv)
    data = list(args.data or [])
    from clamp_core.config import ConfigError

    t0 = time.perf_counter()
    times: dict = {}
    demos = None
    try:
        if args.config:
            demos, args.config = _split_demonstrations(args.config, Path(args.out))
        if demos and args.cache:
            demos["cache"] = args.cache
        if demos:
            data += [str(p) for p in _demonstrations(demos, not args.no_progress)]
            times["demonstrations_s"] = time.perf_counter() - t0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.synthetic:
        from clamp_training.config import build_config
        from clamp_training.contrastive_data import write_synthetic_dataset

        try:
            size = build_config(args.preset, args.config, {"stage": "pretrain"}).policy.image_encoder.view_size
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        data.append(str(write_synthetic_dataset(Path(args.out) / "synthetic_data", args.synthetic, size=size)))
    if not data:
        ap.error("give --data DATASET... (datasets or episode bags), a config with demonstrations:, or --synthetic N")
    args.data = data
    t1 = time.perf_counter()
    rc = run(args, {"stage": "pretrain"})
    times["pretrain_s"] = time.perf_counter() - t1
    if rc != 0 or not args.ship:
        return rc
    if not (Path(args.out) / "summary.json").is_file():
        print(f"error: {args.out} did not finish (no summary.json); nothing shipped", file=sys.stderr)
        return 1
    times["total_s"] = time.perf_counter() - t0
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    times["trained_steps"] = summary["step"] - summary["start_step"]
    times["train_loop_s"] = summary["train_s"]
    _record_times(Path(args.out), times)
    out = ship(Path(args.out), Path(args.ship), command, demos)
    print(json.dumps({"shipped": str(out), "card": str(out / CARD)}))
    return 0


# ------------------------------------------------------------------------- scripted demonstrations
def _split_demonstrations(config: str, run: Path):
    """(demonstrations section or None, the path of the training config without it)."""
    from clamp_core.config import ConfigError, check_keys, read_yaml

    doc = read_yaml(config, "training config")
    if "demonstrations" not in doc:
        return None, config
    demos = dict(doc.pop("demonstrations") or {})
    where = f"{config}: demonstrations"
    check_keys(demos, list(DEMO_KEYS), where)
    demos = {**DEMO_KEYS, **demos}
    if not demos["tasks"] or not demos["episodes"]:
        raise ConfigError(f"{where}: give tasks (clamp_sim task names) and episodes (per task)")
    import yaml

    run.mkdir(parents=True, exist_ok=True)
    rest = run / "pretrain_config.yaml"  # what the training loop reads (TrainConfig keys only)
    rest.write_text(f"# {config} without its demonstrations: section\n" + yaml.safe_dump(doc, sort_keys=False))
    return demos, str(rest)


def _demonstrations(demos: dict, progress: bool) -> list[Path]:
    """Successful scripted demonstrations of each task, converted with the CLAMP views (cached)."""
    from clamp_training.experiment import episode_datasets

    paths: list[Path] = []
    for task in demos["tasks"]:
        paths += episode_datasets(
            task,
            int(demos["episodes"]),
            int(demos["first_seed"]),
            demos["image_size"],
            float(demos["camera_hz"]),
            demos["cache"],
            workers=int(demos["workers"]),
            progress=progress,
            views=True,
        )
    return paths


def _record_times(run: Path, times: dict) -> None:
    """RUN/pretrain_times.json: wall seconds per phase, per invocation (a resumed run has several)."""
    f = run / "pretrain_times.json"
    doc = json.loads(f.read_text()) if f.is_file() else {"invocations": []}
    doc["invocations"].append({k: round(v, 1) for k, v in times.items()})
    f.write_text(json.dumps(doc, indent=2) + "\n")


# ------------------------------------------------------------------------------------ shipping
def reference_outputs(model, batch: dict) -> dict:
    """What the shipped test recomputes: the three embeddings and a seeded DDIM chunk."""
    import torch

    policy = model.policy
    obs = {k: batch[k] for k in policy.required_obs_keys()}
    with torch.no_grad():
        return {
            "image_embedding": model.embed_image(batch["views"]),
            "action_embedding": model.embed_action(batch["action_history"]),
            "text_embedding": model.embed_text(list(batch["prompt"])),
            "policy_chunk": policy.sample(obs, generator=torch.Generator().manual_seed(0)),
        }


def _reference(model, cfg, data: list[str], out: Path) -> dict:
    """REFERENCE_SAMPLES held-out samples (inputs) and the model's outputs on them -> out/REFERENCE."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from clamp_training.contrastive_data import ClampDataset, collate, open_clamp_data
    from clamp_training.dataset import split_episodes

    pcfg = model.policy.cfg
    # four samples: pooled when read, not the whole data into RAM first
    base = open_clamp_data(
        data,
        pcfg.chunk_length,
        model.history,
        pcfg.image_encoder.view_size,
        cache_bytes=0,
        rgb_cameras=pcfg.rgb.cameras,
    )
    ds = ClampDataset(
        base, None, {"position_bins": cfg.prompt.position_bins, "progress_bins": cfg.prompt.progress_bins}
    )
    _, rows = split_episodes(base, cfg.val_episodes, cfg.val_fraction)
    rows = rows if len(rows) else np.arange(len(base.index))
    pick = rows[np.linspace(0, len(rows) - 1, REFERENCE_SAMPLES).astype(int)]
    batch = collate([ds[int(i)] for i in pick])
    inputs = {  # colour images stay uint8, as the cameras send them
        k: (v.float() if v.is_floating_point() else v).contiguous()
        for k, v in batch.items()
        if isinstance(v, torch.Tensor)
    }
    outputs = {k: v.float().contiguous() for k, v in reference_outputs(model, batch).items()}
    strings = {k: list(v) for k, v in batch.items() if isinstance(v, list) and v and isinstance(v[0], str)}
    save_file(
        {**{f"input.{k}": v for k, v in inputs.items()}, **{f"output.{k}": v for k, v in outputs.items()}},
        str(out / REFERENCE),
        metadata={"strings": json.dumps(strings), "rows": json.dumps([int(i) for i in pick])},
    )
    return {"samples": REFERENCE_SAMPLES, "inputs": sorted(inputs) + sorted(strings), "outputs": sorted(outputs)}


def ship(run: Path, out: Path, command: str, demos: dict | None) -> Path:
    """RUN -> out/: clamp/, policy/, reference.safetensors, loss.png, embeddings.png, log.csv, val.csv,
    retrieval.json, train_config.json, pretrain_times.json, SHA256SUMS, MODEL_CARD.md."""
    from clamp_policy.models.checkpoint import sha256_file

    from clamp_training.clamp_checkpoint import load_clamp

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for d in ("clamp", "policy"):
        shutil.copytree(run / d, tmp / d)
    for f in ("loss.png", "embeddings.png", "log.csv", "val.csv", "retrieval.json", "train_config.json"):
        if (run / f).is_file():
            shutil.copy2(run / f, tmp / f)
    if (run / "pretrain_times.json").is_file():
        shutil.copy2(run / "pretrain_times.json", tmp / "pretrain_times.json")
    model, cfg, meta = load_clamp(tmp)
    ref = _reference(model, cfg, list(meta["data"]), tmp)
    summary = json.loads((run / "summary.json").read_text())
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    sums = {f: sha256_file(tmp / f) for f in files}
    (tmp / "SHA256SUMS").write_text("".join(f"{h}  {f}\n" for f, h in sums.items()))
    (tmp / CARD).write_text(_card(tmp, command, demos, cfg, meta, summary, ref, sums))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _card(d: Path, command, demos, cfg, meta, summary, ref, sums) -> str:
    import numpy as np

    data = [Path(p).name for p in meta.get("data", [])]
    per_task: dict[str, list[str]] = {}
    for name in data:
        per_task.setdefault(name.rsplit("_seed", 1)[0], []).append(name)
    times = (
        json.loads((d / "pretrain_times.json").read_text())["invocations"]
        if (d / "pretrain_times.json").is_file()
        else []
    )
    retrieval = json.loads((d / "retrieval.json").read_text()) if (d / "retrieval.json").is_file() else {}
    size = sum((d / f).stat().st_size for f in sums)
    params = sum(int(np.prod(v)) for v in _shapes(d / "clamp" / "model.safetensors").values())
    held = summary.get("held_out_episodes")
    p = cfg.policy
    lines = [
        "# CLAMP CPU checkpoint",
        "",
        "A CLAMP model pretrained by this repository's one training pipeline (stage `pretrain`): the 3D-aware",
        "image encoder of the diffusion policy, the action-history and text encoders, trained with the",
        "three-way sigmoid contrastive loss jointly with the diffusion-policy loss. The demo's task",
        "(place_cube) is not in its data: fine-tuning on it is the few-shot transfer CLAMP is about.",
        f"The policy: colour cameras {list(p.rgb.cameras) or 'none'}, the 3D encoder's tokens, the state; "
        f"{p.head} denoiser, actions {p.action_frame}, {p.prediction_type} prediction.",
        "",
        "- `clamp/`: the whole CLAMP model (EMA weights; `clamp_training.clamp_checkpoint.load_clamp`)",
        "- `policy/`: the pretrained diffusion policy with its CLAMP image encoder (`load_policy`);",
        "  fine-tune with `python -m clamp_training finetune --init models/clamp_cpu --data ...`",
        "  (= `finetune.clamp_checkpoint: models/clamp_cpu`)",
        f"- `{REFERENCE}`: {ref['samples']} held-out samples and the model's outputs on them "
        f"({', '.join(ref['outputs'])}); `tests/clamp/test_shipped_checkpoint.py` recomputes them",
        "",
        "## Command",
        "",
        "```bash",
        command,
        "```",
        "",
        "(`make pretrained` runs it under `nice`; it resumes when interrupted, and the converted demonstrations",
        "are cached, so a rerun only trains.)",
        "",
        "## Data",
        "",
    ]
    if demos:
        lines += [
            f"Scripted demonstrations (`clamp_sim`, successful ones only, seeds from {demos['first_seed']}), "
            f"rendered at {demos['image_size'][0]}x{demos['image_size'][1]}, cameras at {demos['camera_hz']} Hz, "
            "converted with the CLAMP views (5 x depth + world xyz, 224 px, pooled to "
            f"{p.image_encoder.view_size} px by the model):",
            "",
        ]
    lines += ["| task | episodes |", "|---|---|"]
    lines += [f"| {t} | {len(v)} ({v[0]} .. {v[-1]}) |" for t, v in per_task.items()]
    lines += [
        "",
        f"Held out (not trained on; validation loss and retrieval): the last {held} episode(s) by name "
        f"(`val_episodes: {cfg.val_episodes}`, `val_fraction: {cfg.val_fraction}`); training samples "
        f"{summary.get('train_samples')}, held-out samples {summary.get('held_out_samples')}.",
        "",
        "## Training",
        "",
        f"- {params:,} parameters in `clamp/` (policy d_model {p.d_model}, views {p.image_encoder.view_size} px, "
        f"patch {p.image_encoder.patch_size}, embed_dim {cfg.clamp.embed_dim})",
        f"- steps {summary['steps']}, batch {cfg.batch_size}, lr {cfg.lr} (warm-up {cfg.warmup_steps}, cosine), "
        f"EMA {cfg.ema_decay}, threads {cfg.threads}, seed {cfg.seed}",
        f"- training loss at the last logged step {_last(d / 'log.csv', 'loss')}, held-out loss (EMA model) at the "
        f"last checkpoint {_last(d / 'val.csv', 'val_loss')}",
        f"- training loop {sum(t.get('train_loop_s', 0.0) for t in times) / 60:.1f} min for "
        f"{sum(t.get('trained_steps', 0) for t in times)} steps",
        "- wall time per invocation (s): " + ("; ".join(json.dumps(t) for t in times) if times else "n/a"),
        "",
        "![loss](loss.png)",
        "",
        "## Held-out retrieval (`python -m clamp_training retrieval --run models/clamp_cpu --data DATASETS...`)",
        "",
        "```json",
        json.dumps(retrieval, indent=1),
        "```",
        "",
        "![embeddings](embeddings.png)",
        "",
        "## sha256",
        "",
        "| file | sha256 |",
        "|---|---|",
    ]
    lines += [f"| `{f}` | `{h}` |" for f, h in sums.items()]
    lines += ["", f"Total size {size / 1e6:.2f} MB (this card excluded).", ""]
    return "\n".join(lines)


def _last(csv: Path, column: str) -> str:
    import csv as csv_module

    rows = list(csv_module.DictReader(csv.open())) if csv.is_file() else []
    return f"{float(rows[-1][column]):.4f} (step {rows[-1]['step']})" if rows else "n/a"


def _shapes(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_slice(k).get_shape() for k in f.keys()}


if __name__ == "__main__":
    sys.exit(main())
