"""The one training loop's CLAMP stages: short CPU pretraining (stage pretrain) on clamp_sim-like data ->
held-out retrieval above chance; the retrieval tool; fine-tuning (stage finetune) from the pretrained run
keeps the CLAMP encoder frozen (bit-identical), or trains it when unfrozen; the exported policies (EMA
weights) load and sample."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from clamp_core.config import ConfigError
from clamp_training.commands import finetune as finetune_cmd
from clamp_training.commands import pretrain as pretrain_cmd
from clamp_training.commands import retrieval as retrieval_cmd
from clamp_training.contrastive_data import write_synthetic_dataset

pytestmark = pytest.mark.slow

CONFIG = {
    "stage": "pretrain",
    "policy": {
        "image_encoder": {
            "type": "clamp_vit3d",
            "view_size": 32,
            "patch_size": 8,
            "dim": 48,
            "options": {"depth": 2, "heads": 4},
        },
        "d_model": 32,
        "nhead": 2,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "ff_dim": 64,
        "train_timesteps": 20,
        "inference_steps": 2,
    },
    "clamp": {"embed_dim": 32, "action_encoder": {"history": 8, "dim": 32, "depth": 1, "heads": 4}},
    **{"steps": 120, "batch_size": 24, "lr": 2e-3, "val_fraction": 0.25, "retrieval_samples": 64, "threads": 1},
    # one checkpoint, at the end: clamp_small's ckpt_every (100) would add one at step 100 (train state,
    # held-out loss and loss.png: ~4 s on the 2-core VM) that nothing here reads
    "ckpt_every": 120,
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("clamp")
    data = write_synthetic_dataset(root / "data", episodes=16, steps=30, size=32, seed=0)
    cfg_path = root / "clamp.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    run = root / "run"
    torch.manual_seed(0)
    rc = pretrain_cmd.main(["--config", str(cfg_path), "--data", str(data), "--out", str(run), "--no-progress"])
    assert rc == 0
    return run, data, root


def test_pretraining_reaches_held_out_retrieval_well_above_chance(pretrained):
    run, _, _ = pretrained
    summary = json.loads((run / "summary.json").read_text())
    r = summary["retrieval"]
    assert summary["held_out_episodes"] == 4 and r["samples"] == 64
    # chance: 1/64 top-1, 5/64 top-5 among the held-out samples
    assert r["image_to_action_top5"] >= 3 * r["chance_top5"], r
    assert r["action_to_image_top5"] >= 3 * r["chance_top5"], r
    assert r["image_to_action_top1"] >= 3 * r["chance_top1"], r
    assert r["image_to_text_top5"] >= 2 * r["text_chance_top5"] or r["image_to_text_top5"] == 1.0, r
    rows = list(csv.DictReader(open(run / "log.csv")))
    first, last = rows[0], rows[-1]
    for key in ("image_action", "image_text", "action_text"):
        assert float(last[key]) < float(first[key]), (key, first[key], last[key])
    assert summary["samples_per_s"] > 0 and summary["stage"] == "pretrain"
    for name in ("loss.png", "embeddings.png", "retrieval.json", "train_config.json"):
        assert (run / name).stat().st_size > 0, name
    # the contrastive terms are TensorBoard scalars too
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("train/image_action")
    assert [e.value for e in events] == pytest.approx([float(r["image_action"]) for r in rows], rel=1e-5)
    for name in ("model.safetensors", "config.json", "model.safetensors.sha256"):
        assert (run / "clamp" / name).is_file() and (run / "policy" / name).is_file()


def test_retrieval_tool_reproduces_the_run_numbers(pretrained, tmp_path, capsys):
    run, data, _ = pretrained
    assert (
        retrieval_cmd.main(["--run", str(run), "--data", str(data), "--max-samples", "64", "--out", str(tmp_path)]) == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    again = line["retrieval"]
    saved = json.loads((run / "retrieval.json").read_text())
    for key in ("image_to_action_top1", "image_to_action_top5", "image_to_text_top1"):
        assert again[key] == pytest.approx(saved[key]), key
    assert (tmp_path / "embeddings.png").stat().st_size > 0
    # without --data the run's recorded datasets are used
    assert retrieval_cmd.main(["--run", str(run), "--max-samples", "64", "--out", str(tmp_path / "b")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["retrieval"]["image_to_action_top5"] == pytest.approx(saved["image_to_action_top5"])


def test_finetune_keeps_the_pretrained_encoder_frozen(pretrained, tmp_path):
    from clamp_policy.models import load_policy
    from clamp_training.stages import params_digest

    run, _, root = pretrained
    demos = write_synthetic_dataset(root / "demos", episodes=3, steps=30, size=32, seed=7)
    pre = load_policy(run / "policy")
    out = tmp_path / "ft"
    rc = finetune_cmd.main(
        [
            "--init",
            str(run),
            "--data",
            str(demos),
            "--out",
            str(out),
            "--steps",
            "6",
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
            "--threads",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "finetune" and summary["init"] == str(run / "policy")
    assert summary["encoder_frozen"] and summary["encoder_unchanged"] and summary["frozen_parameters"] > 0
    post = load_policy(out / "policy")
    assert params_digest(post.image_encoder) == params_digest(pre.image_encoder)
    # ...and it is the pretrained encoder, not a fresh one
    from clamp_policy.models import DiffusionPolicy

    torch.manual_seed(0)
    fresh = DiffusionPolicy(pre.cfg)
    assert params_digest(fresh.image_encoder) != params_digest(pre.image_encoder)
    # ...inside the config's policy (here the finetune preset's, d_model 64; task-conditioned: the demos
    # have several tasks), trained from scratch around it: every other parameter is trainable
    assert post.cfg.image_encoder == pre.cfg.image_encoder and (post.cfg.d_model, pre.cfg.d_model) == (64, 32)
    assert post.cfg.task_conditioning == "vocab" and summary["token_cache"]
    rest = sum(p.numel() for n, p in post.named_parameters() if not n.startswith("image_encoder."))
    assert summary["trainable_parameters"] == rest
    views = torch.zeros(1, 5, 4, 32, 32)
    chunk = post.sample({"views": views, "state": torch.zeros(1, 14), "task": [post.cfg.task_vocab[0]]})
    assert chunk.shape == (1, 50, 14) and torch.isfinite(chunk).all()

    out2 = tmp_path / "ft_unfrozen"
    rc = finetune_cmd.main(
        [
            "--init",
            str(run / "policy"),
            "--data",
            str(demos),
            "--out",
            str(out2),
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--unfreeze",
            "--threads",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert not json.loads((out2 / "summary.json").read_text())["encoder_unchanged"]


def test_finetune_can_start_the_policy_from_the_pretrained_one(pretrained):
    # CLAMP fine-tunes the diffusion policy pretrained jointly with the encoders (finetune.init_policy);
    # a policy of another architecture is refused, naming the tensors that differ
    from clamp_policy.models import load_policy
    from clamp_policy.models.diffusion_policy import NORM_KEYS
    from clamp_training.config import build_config
    from clamp_training.stages import FinetuneStage, StageError

    run, data, _ = pretrained
    pre = load_policy(run / "policy")
    # as pretrained: no task token (the pretrain stage conditions on no task; auto would add one here)
    same = {"stage": "finetune", "policy": pre.cfg.to_dict(), "task_conditioning": "none", "threads": 1}
    same["finetune"] = {"clamp_checkpoint": str(run), "init_policy": True}
    stage = FinetuneStage(build_config(None, None, same), [str(data)], progress=False)
    theirs = pre.state_dict()
    mine = stage.model.state_dict()
    assert stage.info["policy_initialised"] == len(theirs) - len(NORM_KEYS)
    for k, v in mine.items():
        if k not in NORM_KEYS:
            assert torch.equal(v, theirs[k]), k

    other = {"stage": "finetune", "finetune": {"clamp_checkpoint": str(run), "init_policy": True}}
    with pytest.raises(
        StageError,
        match=r"not the fine-tuning config's policy \(.*of another shape \(e.g. .* in the checkpoint, .* here"
        r".*init_policy: false",
    ):
        FinetuneStage(build_config(None, None, other), [str(data)], progress=False)  # d_model 64, not 32


def test_bad_inputs_name_the_problem(tmp_path):
    from clamp_training.clamp_checkpoint import build_clamp_model
    from clamp_training.train import build_config, train

    cfg = build_config(None, None, {"stage": "finetune", "finetune": {"clamp_checkpoint": str(tmp_path)}})
    with pytest.raises(FileNotFoundError, match="pretraining run"):
        train(cfg, [str(tmp_path)], tmp_path / "out", progress=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"stage": "pretrain", "policy": {"image_encoder": {"type": "patch"}}}))
    with pytest.raises(ConfigError, match="clamp_vit3d"):
        build_clamp_model(build_config(None, str(bad)))
    bad.write_text(yaml.safe_dump({"stage": "pretrain", "trian": {}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['trian'\]"):
        build_config(None, str(bad))
    bad.write_text(yaml.safe_dump({"stage": "pretrain", "train": {"steps": 3}}))
    with pytest.raises(ConfigError, match="older CLAMP layout; put its keys at the top level"):
        build_config(None, str(bad))
    bad.write_text(yaml.safe_dump({"stage": "pretrain", "clamp": {"embed": 8}}))
    with pytest.raises(ConfigError, match=r"clamp: unknown key\(s\) \['embed'\]; known: \[.*'embed_dim'"):
        build_config(None, str(bad))


def test_pretraining_runs_under_torchrun_with_two_gloo_processes(tmp_path):
    """The same loop under DDP for the CLAMP model (encoders unused by some losses: find_unused_parameters)."""
    import os
    import subprocess
    import sys

    from clamp_policy.models import load_policy

    data = write_synthetic_dataset(tmp_path / "data", episodes=6, steps=16, size=16, seed=3)
    cfg = {
        **CONFIG,
        "policy": {**CONFIG["policy"], "image_encoder": {**CONFIG["policy"]["image_encoder"], "view_size": 16}},
        **{"steps": 4, "batch_size": 8, "val_fraction": 0.2, "retrieval_samples": 8, "ckpt_every": 2},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = str(29900 + os.getpid() % 97)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    cmd += ["-m", "clamp_training", "pretrain", "--config", str(tmp_path / "cfg.yaml"), "--data", str(data)]
    r = subprocess.run([*cmd, "--out", str(run), "--no-progress"], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["world_size"] == 2 and summary["step"] == 4 and summary["held_out_episodes"] == 1
    assert [int(row["step"]) for row in csv.DictReader(open(run / "log.csv"))] == [4]
    assert (run / "clamp" / "model.safetensors").is_file()
    policy = load_policy(run / "policy")
    assert policy.cfg.image_encoder.type == "clamp_vit3d" and policy.cfg.image_encoder.view_size == 16
