"""CLAMP pretraining straight from clamp_sim episode bags (scripted demonstrations rendered by MuJoCo,
converted by clamp_training with the perception pipeline): one command from bags to a pretrained run.
Kept short (3 episodes of STEPS control steps): retrieval quality is asserted on the larger synthetic
corpus in test_pretrain_finetune.py; here the point is that real sim data flows through every stage."""

from __future__ import annotations

import csv
import json
import re

import pytest
import yaml

pytestmark = pytest.mark.slow

# Scripted demonstrations cut at 100 of their ~430 control steps (2 s of sim time, 10 camera frames at
# 5 Hz): simulating, rendering and converting are most of this test's time, and nothing asserted here
# needs a finished task. The held-out episode still has 100 samples for the 32 retrieval samples (one
# per control step), prompts still start at progress 0, and 30 steps on this data still lower both
# losses by far (measured: image_action 9.8 -> 2.1, diffusion 1.32 -> 0.68).
STEPS = 100


@pytest.fixture
def short_demos(monkeypatch):
    from helpers.short_demos import cut_scripted_demos

    cut_scripted_demos(monkeypatch, STEPS)


def test_pretrain_from_clamp_sim_bags(tmp_path, short_demos):
    from clamp_sim.demonstrations import generate
    from clamp_training.commands import pretrain as pretrain_cmd
    from clamp_training.contrastive_data import ClampDataset, open_clamp_data

    bags = tmp_path / "bags"
    results = generate("transfer_cube", 3, seed=0, out=bags, image_size=(72, 96), camera_hz=5.0, progress=False)
    assert [r["steps"] for r in results] == [STEPS] * 3
    assert len(results) == 3
    cfg = {
        "stage": "pretrain",
        "policy": {
            "image_encoder": {"view_size": 32, "patch_size": 8, "dim": 32, "options": {"depth": 1, "heads": 4}},
            "d_model": 32,
            "nhead": 2,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "ff_dim": 64,
            "train_timesteps": 20,
            "inference_steps": 2,
        },
        "clamp": {"embed_dim": 32, "action_encoder": {"history": 8, "dim": 32, "depth": 1, "heads": 4}},
        "steps": 30,
        "batch_size": 16,
        "lr": 2e-3,
        "val_fraction": 0.34,
        "retrieval_samples": 32,
        "log_every": 5,
        "threads": 1,
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    rc = pretrain_cmd.main(
        ["--config", str(tmp_path / "cfg.yaml"), "--data", str(bags), "--out", str(run), "--no-progress"]
    )
    assert rc == 0
    # the bags were converted into the run, with views and the sim's object positions
    base = open_clamp_data([run / "dataset"], chunk_length=50, history=8, view_size=32)
    assert len(base.episodes) == 3
    prompt = ClampDataset(base).prompt(0)
    assert re.search(r"\. [a-z ]+ at \(\d+, \d+, \d+\)\. progress 0 of 10\.$", prompt), prompt
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert float(rows[-1]["image_action"]) < float(rows[0]["image_action"])
    assert float(rows[-1]["diffusion"]) < float(rows[0]["diffusion"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["held_out_episodes"] == 1 and summary["retrieval"]["samples"] == 32
    assert (run / "policy" / "model.safetensors").is_file() and (run / "loss.png").is_file()
