"""Training (the one loop, stage diffusion): one command from bags to a loadable policy, the loss falls,
exact resume, TensorBoard curves, export, DDP."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clamp_core.config import ConfigError
from clamp_policy.models import load_policy
from clamp_training.dataset import ChunkDataset, DatasetError
from clamp_training.train import PRESETS, TrainError, build_config, train

HERE = Path(__file__).parent


def _losses(run: Path) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(run / "log.csv"))]


@pytest.fixture(scope="module")
def tiny_run(synthetic_bags, tmp_path_factory):
    """`python -m clamp_training train --data BAGS --out RUN --preset tiny`: bags in, policy out."""
    from clamp_training.commands.train import main

    run = tmp_path_factory.mktemp("runs") / "tiny"
    args = ["--data", str(synthetic_bags), "--out", str(run), "--preset", "tiny", "--convert-workers", "1"]
    assert main([*args, "--no-progress"]) == 0
    return run


def test_one_command_from_bags_to_policy_and_the_loss_falls(tiny_run, dataset):
    assert (tiny_run / "dataset" / "dataset.json").is_file()  # the bags were converted inside the run
    assert (tiny_run / "loss.png").stat().st_size > 5000
    losses = _losses(tiny_run)
    assert len(losses) == PRESETS["tiny"]().steps // PRESETS["tiny"]().log_every
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
    policy = load_policy(tiny_run / "policy")
    # two tasks in the data -> the policy is task-conditioned on their strings
    assert policy.cfg.task_conditioning == "vocab"
    assert policy.cfg.task_vocab == ["insert the peg", "transfer the cube"]
    item = ChunkDataset([dataset], chunk_length=50, progress=False)[10]
    obs = {"views": item["views"][None], "state": item["state"][None], "task": [item["task"]]}
    chunk = policy.sample(obs, generator=torch.Generator().manual_seed(0))
    assert chunk.shape == (1, 50, 14) and torch.isfinite(chunk).all()
    stats = json.loads((tiny_run / "dataset" / "stats.json").read_text())
    assert torch.allclose(policy.action_min, torch.tensor(stats["action_min"], dtype=torch.float32))


def test_export_cli_round_trips_the_ema_weights_bit_exactly(tiny_run, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "exported"
    r = subprocess.run(
        [sys.executable, "-m", "clamp_training", "export", str(tiny_run), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["step"] == PRESETS["tiny"]().steps
    ema = {
        k[4:]: v
        for k, v in load_file(str(tiny_run / "checkpoint" / "train_state.safetensors")).items()
        if k.startswith("ema.")
    }
    loaded = load_policy(out).state_dict()
    assert set(loaded) == set(ema) and all(torch.equal(loaded[k], ema[k]) for k in ema)
    r = subprocess.run(
        [sys.executable, "-m", "clamp_training", "export", str(tmp_path / "no_run"), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "holds no training checkpoint" in r.stderr


def test_tensorboard_events_hold_the_logged_scalars(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", "train/samples_per_s"} <= set(acc.Tags()["scalars"])
    rows = list(csv.DictReader(open(tiny_run / "log.csv")))
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [int(r["step"]) for r in rows]
    assert [e.value for e in events] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)
    lrs = acc.Scalars("train/lr")
    assert [e.value for e in lrs] == pytest.approx([float(r["lr"]) for r in rows], rel=1e-5)


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    from clamp_training.train import lr_at

    cfg = build_config("tiny", None, {"steps": 100, "warmup_steps": 10, "lr": 1.0})
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lr_at(100, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == pytest.approx(0.1)


def test_resume_continues_the_same_schedule_step_and_weights(dataset, tmp_path):
    """A run stopped at step 10 and started again ends where an uninterrupted run ends: the same
    logged steps and learning rates, the same data order and noise, bit-identical weights."""
    from safetensors.torch import load_file

    cfg = build_config("tiny", None, {"steps": 20, "ckpt_every": 10, "log_every": 5, "warmup_steps": 4})
    whole = train(cfg, [str(dataset)], tmp_path / "whole", progress=False, export=False)
    run = tmp_path / "resumed"
    first = train(cfg, [str(dataset)], run, progress=False, export=False, until=10)
    assert (first["start_step"], first["step"], first["finished"]) == (0, 10, False)
    assert not (run / "summary.json").exists()
    second = train(cfg, [str(dataset)], run, progress=False)
    assert (second["start_step"], second["step"], second["finished"]) == (10, 20, True)
    assert json.loads((run / "policy" / "config.json").read_text())["metadata"]["step"] == 20

    def log(r):
        return [(int(x["step"]), float(x["lr"]), float(x["loss"])) for x in csv.DictReader(open(r / "log.csv"))]

    assert [s for s, _, _ in log(run)] == [5, 10, 15, 20]
    assert [lr for _, lr, _ in log(run)] == pytest.approx([lr for _, lr, _ in log(tmp_path / "whole")], rel=1e-6)
    assert [x for _, _, x in log(run)] == pytest.approx([x for _, _, x in log(tmp_path / "whole")], rel=1e-5)
    a = load_file(str(run / "checkpoint" / "train_state.safetensors"))
    b = load_file(str(tmp_path / "whole" / "checkpoint" / "train_state.safetensors"))
    weights = [k for k in a if k.startswith(("model.", "ema."))]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights), [
        k for k in weights if not torch.equal(a[k], b[k])
    ]
    assert second["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-5)

    other = build_config("tiny", None, {"steps": 30, "policy": {"d_model": 64}})
    with pytest.raises(TrainError, match="different config.*policy.d_model"):
        train(other, [str(dataset)], run, progress=False)


def test_config_file_and_bad_keys(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("steps: 7\npolicy:\n  decoder_layers: 2\n  image_encoder:\n    patch_size: 8\n")
    cfg = build_config("tiny", str(f), {"lr": 0.01})
    assert (cfg.steps, cfg.lr, cfg.policy.decoder_layers, cfg.policy.image_encoder.patch_size) == (7, 0.01, 2, 8)
    f.write_text("stepz: 7\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\]; known: \[.*'steps'"):
        build_config("tiny", str(f), {})
    f.write_text("policy:\n  image_encoder:\n    patch: 8\n")
    with pytest.raises(ConfigError, match=r"image_encoder: unknown key\(s\) \['patch'\]; known: \[.*'patch_size'"):
        build_config("tiny", str(f), {})
    with pytest.raises(ConfigError, match="stage 'distill' unknown"):
        build_config("tiny", None, {"stage": "distill"})
    with pytest.raises(ConfigError, match="finetune.clamp_checkpoint"):
        build_config(None, None, {"stage": "finetune"})
    # the stage picks its preset: pretraining starts from the small CLAMP model
    assert build_config(None, None, {"stage": "pretrain"}).policy.image_encoder.type == "clamp_vit3d"


def test_the_cli_refuses_a_bad_config_naming_the_key(tmp_path, capsys):
    from clamp_training.commands.train import main

    f = tmp_path / "cfg.yaml"
    f.write_text("batch: 4\n")
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(f)]) == 2
    assert "unknown key(s) ['batch']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _torchrun(args: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 400)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        env["MASTER_PORT"],
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def torchrun_ddp(dataset, tmp_path_factory):
    """One torchrun launch (2 gloo processes) for the two DDP tests below: ddp_worker.py's DDP step,
    then, in the same two processes and process group, `python -m clamp_training train --preset tiny
    --steps 10` on the session's dataset. Starting the processes and importing torch in them is most of
    each test's time. (The command starting its own group under torchrun, as it does alone, is what
    tests/clamp/test_pretrain_finetune.py's torchrun test runs: the same clamp_training.distributed.)
    Returns (result, gradients file, run dir)."""
    root = tmp_path_factory.mktemp("torchrun")
    out, run = root / "ddp_grads.safetensors", root / "ddp_run"
    train_args = ["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny", "--steps", "10"]
    r = _torchrun([str(HERE / "ddp_worker.py"), str(out), *train_args], timeout=240)
    return r, out, run


def test_two_process_gloo_ddp_gradients_equal_one_process(torchrun_ddp):
    sys.path.insert(0, str(HERE))
    from ddp_worker import fixed_batch, fresh_policy
    from safetensors.torch import load_file

    r, out, _ = torchrun_ddp
    done = [f"ddp_worker rank {rank}/2: DDP step done" in r.stdout for rank in (0, 1)]
    assert all(done) and out.is_file(), r.stdout[-3000:] + r.stderr[-3000:]
    ddp = load_file(str(out))
    policy = fresh_policy()
    obs, actions, noise, t = fixed_batch()
    policy(obs, actions, noise=noise, timesteps=t).backward()
    single = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    assert set(ddp) == set(single)
    worst = max(float((ddp[n] - single[n]).abs().max()) for n in single)
    assert worst < 1e-6, worst
    assert max(float(g.abs().max()) for g in single.values()) > 1e-3  # the gradients are not trivially 0


def test_torchrun_two_processes_trains_and_exports(torchrun_ddp):
    r, _, run = torchrun_ddp
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["world_size"] == 2 and summary["steps"] == 10
    assert load_policy(run / "policy").cfg.task_vocab == ["insert the peg", "transfer the cube"]
    shutil.rmtree(run)


def test_held_out_episodes_give_a_validation_loss(dataset, tmp_path):
    run = tmp_path / "val"
    cfg = build_config("tiny", None, {"steps": 20, "ckpt_every": 10, "val_episodes": 1, "val_samples": 16})
    summary = train(cfg, [str(dataset)], run, progress=False, export=False)
    per_episode = summary["train_samples"]
    assert per_episode == len(ChunkDataset([dataset], chunk_length=50, progress=False)) // 2  # one of two held out
    rows = list(csv.DictReader(open(run / "val.csv")))
    assert [int(r["step"]) for r in rows] == [10, 20]
    assert all(np.isfinite(float(r["val_loss"])) for r in rows)
    assert summary["val_loss"] == pytest.approx(float(rows[-1]["val_loss"]), rel=1e-5)
    with pytest.raises(DatasetError, match="leaves no training episode"):
        train(build_config("tiny", None, {"val_episodes": 2}), [str(dataset)], tmp_path / "v2", progress=False)


def test_split_episodes_holds_out_the_last_episodes_by_name(dataset):
    from clamp_training.dataset import split_episodes

    ds = ChunkDataset([dataset], chunk_length=50, use_views=False, progress=False)
    last = max(range(len(ds.episodes)), key=lambda i: ds.episodes[i].name)
    for kwargs in ({"val_episodes": 1}, {"val_fraction": 0.2}, {"val_fraction": 0.5}):
        train_rows, val_rows = split_episodes(ds, **kwargs)
        assert set(ds.index[val_rows, 0]) == {last}, kwargs
        assert last not in set(ds.index[train_rows, 0]) and len(train_rows) + len(val_rows) == len(ds)
    train_rows, val_rows = split_episodes(ds)
    assert len(val_rows) == 0 and len(train_rows) == len(ds)
    with pytest.raises(DatasetError, match="leaves no training episode"):
        split_episodes(ds, val_fraction=0.9)


def test_synthetic_datasets_get_their_stats_from_the_one_writer(tmp_path):
    from clamp_training.contrastive_data import write_synthetic_dataset
    from clamp_training.dataset import compute_stats, read_dataset_json, read_stats

    root = write_synthetic_dataset(tmp_path / "syn", episodes=2, steps=12, size=16)
    names = [e["name"] for e in read_dataset_json(root)["episodes"]]
    assert read_stats(root) == json.loads(json.dumps(compute_stats(root, names)))
    assert {"state_mean", "state_std", "action_min", "action_max", "action_mean", "view_mean", "view_count"} <= set(
        read_stats(root)
    )
