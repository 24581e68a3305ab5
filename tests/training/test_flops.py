"""`python -m clamp_training.flops`: the FLOP count behind the GPU experiment's expected time, on the CPU
experiment's (small) architecture."""

from __future__ import annotations

import json

import pytest
from clamp_training.experiment import load_config
from clamp_training.flops import count, main

CPU = "training/configs/experiment_cpu.yaml"


@pytest.fixture(scope="module")
def repo_cwd():
    import os
    from pathlib import Path

    old = os.getcwd()
    os.chdir(Path(__file__).resolve().parents[2])
    yield
    os.chdir(old)


def test_counts_grow_with_the_batch_and_fine_tuning_skips_the_encoder(repo_cwd):
    experiment = load_config(CPU)
    a, b = count(experiment, small=2), count(experiment, small=3)
    assert a["tokens"] == b["tokens"] > 0 and a["params_m"] > a["image_encoder_params_m"] > 0
    for stage in ("pretrain", "finetune"):
        # a step's count extended linearly from two batch sizes does not depend on which two
        assert a[f"{stage}_gflop_per_step"] == pytest.approx(b[f"{stage}_gflop_per_step"], rel=0.02)
        assert a[f"{stage}_gflop_per_step"] >= a[f"{stage}_batch"] * a[f"{stage}_gflop_per_sample"] * 0.99
    # the frozen encoder's tokens are cached: a fine-tuning sample costs less than a pretraining one
    assert 0 < a["finetune_gflop_per_sample"] < a["pretrain_gflop_per_sample"]


def test_cli_prints_step_times_at_the_assumed_throughput(repo_cwd, capsys):
    assert main(["--config", CPU, "--tflops", "0.01"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["finetune_step_s_at_0.01_tflops"] == pytest.approx(out["finetune_gflop_per_step"] / 10.0, rel=0.01)
