"""`make demo` machinery on a tiny configuration: a tiny policy built by the pipeline (shortened
scripted demonstrations -> conversion with colour -> training with the grounded recipe's inputs
(state + colour cameras) -> export) with --build-only, then one
short closed-loop episode over real DDS on clamp_sim (sim -> perception -> inference -> chunk
executor -> arm driver) run with the flags make demo passes (--task --policy --episodes --seed),
the report written and its success table parsed back; a second build
reuses the cached policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

STEPS = 40


@pytest.fixture
def short_demos(monkeypatch):
    from helpers.short_demos import cut_scripted_demos

    cut_scripted_demos(monkeypatch, STEPS)


def tiny_config(tmp_path) -> dict:
    from clamp_demo.demo import default_config_path

    cfg = yaml.safe_load(default_config_path().read_text())
    cfg.update(out=str(tmp_path / "out"), cache=str(tmp_path / "demo"), data_cache=str(tmp_path / "cache"))
    cfg["task"] = "place_cube"  # the test's command line says --task transfer_cube
    cfg["data"].update(image_size=[48, 64], episodes=2, workers=1, views=False)  # its recipe reads colour + state
    cfg["data"]["require_success"] = False  # 40-step demonstrations never finish the task
    recipe = {
        "steps": 4,
        "batch_size": 8,
        "threads": 1,
        "log_every": 1,
        "policy": {
            "image_encoder": {"type": "none"},
            "d_model": 32,
            "nhead": 2,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "ff_dim": 64,
            "train_timesteps": 20,
            "inference_steps": 2,
            "state_noise": 0.1,
            "state_dropout": 0.3,
            "rgb": {"cameras": ["cam_high", "cam_right_wrist"], "size": [24, 32], "channels": 16, "keypoints": 8},
        },
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    cfg["train"] = {"config": str(tmp_path / "recipe.yaml"), "overrides": {}}
    cl = cfg["closed_loop"]
    cl.update(episodes=3, seed=0, horizon_s=1.5, timeout_s=120.0, snapshots=2)  # --episodes 1 --seed 7 win
    # a quarter of real time (demo.yaml: 1.0): the executor's deadline, 5 ticks of catch-up, is then 400 ms of
    # wall time instead of 100, which a loaded 2-core machine meets while a node process starts torch beside
    # it; at 1.0 such a start once stalled /clock delivery long enough to miss 8 ticks. make demo's report
    # counts missed ticks at the real pace. demo.yaml's tf_wait_s stays: what make demo runs.
    cl["sim"].update(image_height=48, image_width=64, rate_factor=0.25)
    cl["inference"].update(num_inference_steps=2)
    return cfg


@pytest.mark.timeout(900)  # demos + training + a DDS bring-up: minutes on a shared 2-core machine
def test_demo_tiny_policy_one_episode_over_dds(tmp_path, short_demos, capsys):
    from clamp_core import rig
    from clamp_demo import demo

    cfg_file = tmp_path / "demo.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    flags = ["--config", str(cfg_file), "--task", "transfer_cube", "--no-progress"]
    assert demo.main([*flags, "--build-only"]) == 0
    built = capsys.readouterr().out
    assert "policy: building" in built
    policy = built.strip().splitlines()[-1].removeprefix("policy: ")
    # the closed loop with the flags make demo passes (config: place_cube, 3 episodes from seed 0)
    assert demo.main([*flags, "--policy", policy, "--episodes", "1", "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "out"
    assert f"report: {out / 'report.md'}" in printed and "policy: building" not in printed

    for name in ("report.md", "views.png", "joints.png", "results.json"):
        assert (out / name).stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    rows = demo.parse_success_table(report)
    doc = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in rows] == [7] and len(doc["episodes"]) == 1
    assert rows[0]["success"] == doc["episodes"][0]["success"]
    assert f"success: {int(rows[0]['success'])}/1 episodes of transfer_cube" in printed

    ep = doc["episodes"][0]
    m = ep["metrics"]
    # the loop really ran over DDS: chunks from the exported policy, a 50 Hz command stream on sim time
    assert ep["policy_sim_s"] >= 1.5 or ep["success"]
    assert m["chunks"] >= 1 and m["commands"] >= 50 and m["views_received"] >= 2
    assert abs(m["command_period_ms_median"] - 1e3 / rig.CONTROL_HZ) < 0.5
    assert ep["inference"]["errors"] == 0 and ep["inference"]["ready"]
    assert {"clamp_policy: inference", "clamp_policy: chunk executor", "clamp_perception: views"} <= set(
        m["diagnostics_seen"]
    )
    assert m["inference_ms_median"] > 0 and m["perception_ms_median"] > 0
    # the loop ran like the robot's: perception kept up with /tf, the executor made every 50 Hz tick
    assert m["perception_skipped"] == 0 and m["executor_missed_ticks"] == 0, m
    assert 0 < ep["sim_rate_achieved"] <= cfg_rate(cfg_file) * 1.1
    assert doc["build"]["key"] == "given" and f"`{policy}` (given with --policy)" in report
    record = json.loads((Path(policy).parent / "build.json").read_text())
    assert set(record["stage_s"]) == {"demonstrations", "train", "export"} and record["train"]["steps"] == 4
    assert "| perception skipped (superseded) |" in report and "| clamps (per command) |" in report
    assert list((out).glob("filmstrip_1_seed7.png")), "no cam_high filmstrip of the episode"
    # the last line is one JSON object with the episode count and successes
    last = json.loads(printed.strip().splitlines()[-1])
    assert last["task"] == "transfer_cube" and last["episodes"] == 1 and last["successes"] == int(rows[0]["success"])

    # a second run finds the policy in the cache instead of rebuilding it
    assert demo.main([*flags, "--build-only"]) == 0
    again = capsys.readouterr().out
    assert "policy: reusing" in again and "[build]" not in again


def cfg_rate(cfg_file) -> float:
    return float(yaml.safe_load(cfg_file.read_text())["closed_loop"]["sim"]["rate_factor"])


def test_demo_config_errors(tmp_path):
    from clamp_demo.demo import DemoError, load_demo_config

    with pytest.raises(DemoError, match="not a clamp_sim task"):
        load_demo_config(None, {"task": "juggling"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"task": "transfer_cube"}))
    with pytest.raises(DemoError, match="missing key"):
        load_demo_config(bad)
    with pytest.raises(DemoError, match="closed_loop.processes"):
        load_demo_config(None, {"closed_loop": {"processes": [["sim"], ["sim", "camera"]]}})
    with pytest.raises(DemoError, match="closed_loop.processes"):  # the demo watches the driver in its process
        load_demo_config(None, {"closed_loop": {"processes": [["arm_driver"]]}})
