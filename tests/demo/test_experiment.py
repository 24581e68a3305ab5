"""`python -m clamp_training experiment` end to end on a tiny configuration: scripted clamp_sim
demonstrations (shortened) -> per-episode conversion -> CLAMP pretraining -> fine-tuning from the
pretrained policy and from a random one -> the robot-faithful evaluator -> results table and plots.
A second run must reuse every cached stage and give the same table."""

from __future__ import annotations

import json
import re

import pytest
import yaml

pytestmark = pytest.mark.slow

STEPS = 40  # control steps per scripted demonstration (the tasks' own horizons are 350-400)

TINY = {
    "data": {
        "image_size": [48, 64],
        "camera_hz": 10.0,
        "pretrain_tasks": ["transfer_cube"],
        "pretrain_episodes": 2,
        "heldout_task": "place_cube",
        "workers": 1,
        "require_success": False,  # 40-step demonstrations never finish the task
    },
    "pretrain": {
        "policy": {
            "image_encoder": {"view_size": 32, "patch_size": 16, "dim": 32, "options": {"depth": 1, "heads": 2}},
            "d_model": 32,
            "nhead": 2,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "ff_dim": 64,
            "train_timesteps": 20,
            "inference_steps": 2,
        },
        "clamp": {"embed_dim": 32, "action_encoder": {"history": 4, "dim": 32, "depth": 1, "heads": 2}},
        "train": {"steps": 6, "batch_size": 8, "val_fraction": 0.5, "retrieval_samples": 16, "threads": 1},
    },
    "finetune": {"demos": [1, 2], "seeds": [0], "train": {"steps": 4, "batch_size": 8, "log_every": 2, "threads": 1}},
    "evaluate": {"episodes": 1, "horizon": 20, "execute_steps": 10, "inference_steps": 2, "samples": 1},
}


@pytest.fixture
def short_demos(monkeypatch):
    from helpers.short_demos import cut_scripted_demos

    cut_scripted_demos(monkeypatch, STEPS)


def test_experiment_tiny_end_to_end(tmp_path, short_demos, capsys):
    from clamp_training import experiment

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["--config", str(cfg_file), "--out", str(out), "--cache", str(cache), "--no-progress"]
    assert experiment.main(argv) == 0
    first = capsys.readouterr().out
    for f in ("results.md", "results.json", "success_vs_demos.png", "finetune_curves.png", "pretrain_curves.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f

    doc = json.loads((out / "results.json").read_text())
    runs = {r["name"]: r for r in doc["runs"]}
    assert set(runs) == {"clamp_n1_s0", "scratch_n1_s0", "clamp_n2_s0", "scratch_n2_s0"}
    pre_policy = json.loads((out / "runs" / "clamp_n1_s0" / "summary.json").read_text())["init"]
    for name, r in runs.items():
        ft = r["finetune"]
        # both arms: the pretrained architecture, encoder frozen and untouched, every weight from the init
        assert ft["encoder_frozen"] and ft["encoder_unchanged"] and ft["frozen_parameters"] > 0
        assert ft["policy_initialised"] > 0
        if r["arm"] == "clamp":  # the paper's recipe: the CLAMP-pretrained policy
            assert ft["init"] == pre_policy and "pretrain" in ft["init"]
        else:  # the same architecture, random weights
            assert (
                ft["init"].endswith(f"init_{name}")
                and ft["encoder_digest"] != runs[name.replace("scratch", "clamp")]["finetune"]["encoder_digest"]
            )
        ev = r["eval"]
        assert ev["episodes"] == 1 and len(ev["per_episode"]) == 1 and ev["per_episode"][0]["steps"] == 20
        assert 0.0 <= ev["mean_progress"] <= 1.0 and ev["samples"] == 1
    assert doc["pretrain"]["held_out_episodes"] == 1 and doc["pretrain"]["retrieval"]["samples"] > 0

    # the markdown table, parsed back, agrees with the JSON
    rows = re.findall(
        r"^\| (clamp|scratch) \| (\d+) \| (\d+) \| (\d+) \| (\d+) / (\d+) \| (\d+)% \((\d+)%-(\d+)%\) \|", first, re.M
    )
    assert len(rows) == 4, first
    for arm, n, steps, seeds, succ, eps, pct, lo, hi in rows:
        agg = next(a for a in doc["aggregate"] if a["arm"] == arm and a["demos"] == int(n))
        assert int(succ) == agg["successes"] and int(eps) == agg["episodes"] == 1 and int(seeds) == 1
        assert int(steps) == agg["steps"] == 4
        assert int(pct) == round(100 * agg["success_rate"]) and int(lo) <= int(pct) <= int(hi)

    # a second run reuses the episodes, the pretraining run and the finished fine-tuning runs
    assert experiment.main(argv) == 0
    second = capsys.readouterr().out
    assert "== pretrain done" in second and "(cached)" in second
    assert "convert" not in second and "== evaluate" not in second
    assert json.loads((out / "results.json").read_text())["aggregate"] == doc["aggregate"]

    # a larger cell on top: only its runs train and evaluate; the table reports the cells asked for
    assert experiment.main([*argv, "--demos", "2", "3"]) == 0
    third = capsys.readouterr().out
    assert re.findall(r"== evaluate: (\w+):", third) == ["clamp_n3_s0", "scratch_n3_s0"], third
    assert sorted({a["demos"] for a in json.loads((out / "results.json").read_text())["aggregate"]}) == [2, 3]


def test_experiment_config_errors_name_the_fix(tmp_path):
    from clamp_training.experiment import ExperimentError, load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"pretrain_tasks": ["place_cube"], "heldout_task": "place_cube"}}))
    with pytest.raises(ExperimentError, match="must not be one of data.pretrain_tasks"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"finetune": {"arms": ["clamp", "magic"]}}))
    with pytest.raises(ExperimentError, match="magic"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"finetune": {"demos": [5, 0]}}))
    with pytest.raises(ExperimentError, match=r"finetune.demos \[5, 0\] must be positive"):
        load_config(bad)
    with pytest.raises(ExperimentError, match="must be positive"):  # the CLI's --demos goes through the same check
        load_config(None, {"finetune": {"demos": [-5]}})
    bad.write_text(yaml.safe_dump({"evaluate": {"episode": 3}}))
    with pytest.raises(ExperimentError, match="unknown key"):
        load_config(bad)
    # a pretrained checkpoint that has seen the held-out task is refused (the shipped one has not seen place_cube)
    from clamp_training.experiment import pretrained_policy

    assert pretrained_policy("models/clamp_cpu", "place_cube").name == "policy"
    with pytest.raises(ExperimentError, match="not held out"):
        pretrained_policy("models/clamp_cpu", "transfer_cube")


def test_the_cache_keys_cover_the_code_that_makes_the_data():
    """The episode cache is keyed by the code that makes it: every listed file exists (a listed file
    that is not there was silently hashed as a constant: clamp_core's rig and episode_bag were
    looked for under clamp_perception), and so every module that writes or converts a demonstration."""
    from clamp_training.experiment import code_files

    for group in ("data", "train"):
        files = code_files(group)
        assert files and all(f.is_file() for f in files), [str(f) for f in files if not f.is_file()]
    names = {f"{f.parent.name}/{f.name}" for f in code_files("data")}
    for module in ("clamp_sim/demonstrations.py", "clamp_sim/scripted.py", "clamp_core/episode_bag.py"):
        assert module in names, sorted(names)
    assert "clamp_core/rig.py" in names and "clamp_training/convert.py" in names
