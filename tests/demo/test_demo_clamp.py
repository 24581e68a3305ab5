"""`make demo` fine-tunes the shipped CLAMP checkpoint (demo.yaml's default: data.views true, train.config
a finetune recipe): scripted demonstrations converted with the views -> stage finetune from the pretrained
policy of models/clamp_cpu, its encoder frozen -> export, with --build-only; the built policy (views +
colour + state) then runs one short closed-loop episode over real DDS. The checkpoint's weights are part of
the build key; a finetune recipe without views in the data is refused before any demonstration is generated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

STEPS = 40
REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "clamp_cpu"


@pytest.fixture
def short_demos(monkeypatch):
    from helpers.short_demos import cut_scripted_demos

    cut_scripted_demos(monkeypatch, STEPS)


def clamp_demo_config(tmp_path, checkpoint: str = "models/clamp_cpu") -> dict:
    from clamp_demo.demo import default_config_path

    cfg = yaml.safe_load(default_config_path().read_text())
    cfg.update(out=str(tmp_path / "out"), cache=str(tmp_path / "demo"), data_cache=str(tmp_path / "cache"))
    cfg["data"].update(image_size=[48, 64], episodes=2, workers=1, views=True, require_success=False)
    recipe = yaml.safe_load((REPO / "training" / "configs" / "finetune_clamp_cpu.yaml").read_text())
    recipe.update(steps=4, epochs=0, batch_size=8, log_every=1, ckpt_every=4, warmup_steps=2)
    recipe["finetune"]["clamp_checkpoint"] = checkpoint  # relative: from the repository root
    # the shipped checkpoint's own policy (init_policy starts from all of it), sampled in 2 DDIM steps
    recipe["policy"].update(inference_steps=2)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    cfg["train"] = {"config": str(tmp_path / "recipe.yaml"), "overrides": {}}
    cl = cfg["closed_loop"]
    cl.update(episodes=1, seed=0, horizon_s=1.5, timeout_s=120.0, snapshots=2)
    cl["sim"].update(image_height=48, image_width=64)
    cl["inference"].update(num_inference_steps=2)
    return cfg


@pytest.mark.timeout(900)  # demos with views + fine-tuning + a DDS bring-up: minutes on a shared 2-core machine
def test_demo_fine_tunes_the_shipped_checkpoint_and_runs_it_over_dds(tmp_path, short_demos, capsys, monkeypatch):
    from clamp_demo import demo
    from clamp_policy.models import load_policy
    from clamp_training.stages import params_digest

    monkeypatch.chdir(tmp_path)
    cfg_file = tmp_path / "demo.yaml"
    cfg_file.write_text(yaml.safe_dump(clamp_demo_config(tmp_path)))
    flags = ["--config", str(cfg_file), "--no-progress"]
    assert demo.main([*flags, "--build-only"]) == 0
    policy_dir = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("policy: "))
    record = json.loads((policy_dir.parent / "build.json").read_text())
    assert set(record["stage_s"]) == {"demonstrations", "train", "export"}
    summary = record["train"]
    assert summary["stage"] == "finetune" and summary["init"] == str(SHIPPED / "policy")
    assert summary["encoder_unchanged"] and summary["token_cache"] and summary["steps"] == 4
    policy, shipped = load_policy(policy_dir), load_policy(SHIPPED / "policy")
    assert params_digest(policy.image_encoder) == params_digest(shipped.image_encoder)
    assert summary["policy_initialised"] > 0  # every other weight started from the pretrained policy
    assert policy.cfg.rgb.cameras == ["cam_high", "cam_low"] and policy.cfg.head == "mlp"

    # the closed loop over DDS: perception's views and the cameras' colour reach the policy
    assert demo.main([*flags, "--policy", str(policy_dir), "--episodes", "1", "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    last = json.loads(printed.strip().splitlines()[-1])
    assert last["task"] == "place_cube" and last["episodes"] == 1
    ep = json.loads((tmp_path / "out" / "results.json").read_text())["episodes"][0]
    assert ep["inference"]["errors"] == 0 and ep["inference"]["ready"]
    assert ep["metrics"]["chunks"] >= 1 and ep["metrics"]["views_received"] >= 1


def test_the_checkpoint_is_part_of_the_build_key_and_views_are_required(tmp_path):
    import shutil

    import torch
    from clamp_demo.demo import DemoError, _resolve, build_key, load_demo_config
    from clamp_policy.models import load_policy
    from clamp_policy.models.checkpoint import save_policy

    ckpt = tmp_path / "ckpt"
    shutil.copytree(SHIPPED / "policy", ckpt / "policy")
    cfg_file = tmp_path / "demo.yaml"
    cfg_file.write_text(yaml.safe_dump(clamp_demo_config(tmp_path, str(ckpt))))
    key = build_key(load_demo_config(cfg_file))
    assert build_key(load_demo_config(cfg_file)) == key
    remade = load_policy(ckpt / "policy")
    with torch.no_grad():
        remade.image_encoder.patch_embed.weight.mul_(1.01)  # the same path, a re-made checkpoint
    save_policy(remade, ckpt / "policy")
    assert build_key(load_demo_config(cfg_file)) != key
    with pytest.raises(DemoError, match="set data.views: true"):
        build_key(load_demo_config(cfg_file, {"data": {"views": False}}))
    # the default: the shipped checkpoint fine-tuned, so the demonstrations are converted with views
    default = load_demo_config(None)
    assert default["data"]["views"] is True and build_key(default)
    assert yaml.safe_load(_resolve(default["train"]["config"]).read_text())["stage"] == "finetune"
