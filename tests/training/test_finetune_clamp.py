"""Stage finetune (issue 14): the config's policy (colour cameras, MLP head, ...) trained around the frozen
image encoder of the shipped CLAMP checkpoint (models/clamp_cpu): its encoder config and weights only,
bit-identical after training; the encoder's tokens computed once per camera frame give the loss the raw
views give; data whose views or action layout differ from the checkpoint's is refused before training,
naming both; a relative checkpoint path resolves from the repository root; the CPU recipe
(training/configs/finetune_clamp_cpu.yaml) keeps the grounded recipe's policy section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from training_constants import CAMERA_HZ

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "clamp_cpu"
CAMERAS = ["cam_high", "cam_low"]
TINY_POLICY = {
    "image_encoder": {"type": "none"},  # replaced by the checkpoint's
    "d_model": 32,
    "nhead": 2,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "ff_dim": 64,
    "dropout": 0.1,
    "state_noise": 0.1,
    "state_dropout": 0.2,
    "head": "mlp",
    "head_width": 64,
    "head_blocks": 1,
    "noise_samples": 2,
    "action_knots": 6,
    "train_timesteps": 20,
    "inference_steps": 2,
    "prediction_type": "sample",
    "rgb": {"cameras": CAMERAS, "size": [12, 16], "channels": 16, "keypoints": 8, "keypoint_noise": 0.05},
}


def finetune_config(checkpoint: str = "models/clamp_cpu", **finetune):
    from clamp_training.train import build_config

    doc = {
        "stage": "finetune",
        "finetune": {"clamp_checkpoint": checkpoint, **finetune},
        **{"steps": 3, "batch_size": 8, "threads": 1, "log_every": 1, "ckpt_every": 3},
        "policy": TINY_POLICY,
    }
    return build_config("default", None, doc)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three synthetic episodes (four cameras, colour + depth) converted with the CLAMP views, and the
    same bags converted without them."""
    from clamp_training.convert import ConvertOptions, convert
    from clamp_training.synthetic import write_synthetic_episode

    root = tmp_path_factory.mktemp("clamp_ft")
    for i in range(3):
        write_synthetic_episode(root / "bags" / f"ep{i}", duration_s=1.0, seed=i, task="box", camera_hz=CAMERA_HZ)
    convert([root / "bags"], root / "views", ConvertOptions(rgb_scale=0.25), workers=1, progress=False)
    convert([root / "bags"], root / "no_views", ConvertOptions(views=False, rgb_scale=0.25), workers=1, progress=False)
    return root / "views", root / "no_views"


def test_finetune_trains_the_configs_policy_around_the_shipped_frozen_encoder(data, tmp_path, monkeypatch):
    from clamp_policy.models import load_policy
    from clamp_training.dataset import dataset_stats, load_episodes, policy_stats
    from clamp_training.stages import params_digest
    from clamp_training.train import train

    views_ds, _ = data
    monkeypatch.chdir(tmp_path)  # `models/clamp_cpu` is found from the repository root
    summary = train(finetune_config(), [str(views_ds)], tmp_path / "run", progress=False)
    pre = load_policy(SHIPPED / "policy")
    post = load_policy(tmp_path / "run" / "policy")
    assert summary["init"] == str(SHIPPED / "policy")
    assert summary["encoder_frozen"] and summary["encoder_unchanged"] and summary["token_cache"]
    episodes, _ = load_episodes([views_ds])
    assert summary["token_frames"] == sum(e.views.shape[0] for e in episodes) > 0
    # the architecture is the config's (colour cameras, MLP head, width) with the checkpoint's encoder
    assert post.cfg.image_encoder == pre.cfg.image_encoder and pre.cfg.image_encoder.type == "clamp_vit3d"
    assert post.cfg.rgb.cameras == CAMERAS and post.cfg.head == "mlp" and post.cfg.d_model == 32
    assert post.cfg.d_model != pre.cfg.d_model  # trained from scratch around the encoder (init_policy off)
    assert params_digest(post.image_encoder) == params_digest(pre.image_encoder) == summary["encoder_digest"]
    assert tuple(post.image_proj.weight.shape) == (32, pre.cfg.image_encoder.dim)
    encoder_tensors = len(list(pre.image_encoder.parameters()))
    assert summary["frozen_parameters"] == encoder_tensors
    trainable = sum(p.numel() for n, p in post.named_parameters() if not n.startswith("image_encoder."))
    assert summary["trainable_parameters"] == trainable
    # normalisation: the checkpoint's view statistics, the new data's state statistics
    assert torch.equal(post.view_mean, pre.view_mean) and torch.equal(post.view_std, pre.view_std)
    stats = policy_stats(dataset_stats([views_ds]))
    assert np.allclose(post.state_mean.numpy(), stats["state_mean"], atol=1e-6)
    assert np.allclose(post.action_max.numpy(), stats["action_max"], atol=1e-6)
    # the exported policy takes what the robot sends: full-size views, colour images and the state
    e = episodes[0]
    obs = {
        "views": torch.from_numpy(np.asarray(e.views[:1], dtype=np.float32)),
        "rgb": torch.from_numpy(np.stack([np.asarray(e.rgb[c][:1]) for c in CAMERAS], 1)).permute(0, 1, 4, 2, 3),
        "state": torch.from_numpy(e.state[:1]),
    }
    chunk = post.sample(obs, generator=torch.Generator().manual_seed(0))
    assert chunk.shape == (1, 50, 14) and torch.isfinite(chunk).all()


def _batch(stage, rows):
    return torch.utils.data.default_collate([stage.dataset[i] for i in rows])


def test_cached_tokens_give_the_loss_of_the_raw_views(data):
    """Training reads the frozen encoder's tokens computed once per frame; the same weights on the raw
    views (what the robot feeds) give the same loss, in eval and in training mode (same noise)."""
    from clamp_training.stages import FinetuneStage

    views_ds, _ = data
    cached = FinetuneStage(finetune_config(str(SHIPPED)), [str(views_ds)], progress=False)
    raw = FinetuneStage(finetune_config(str(SHIPPED), cache_tokens=False), [str(views_ds)], progress=False)
    raw.model.load_state_dict(cached.model.state_dict())  # the parts trained from scratch start random
    rows = np.linspace(0, len(cached.base) - 1, 12).astype(int).tolist()
    bc, br = _batch(cached, rows), _batch(raw, rows)
    assert "image_tokens" in bc and "views" not in bc and "views" in br and "image_tokens" not in br
    for training in (False, True):
        losses = []
        for stage, batch in ((cached, bc), (raw, br)):
            stage.train_mode(stage.model) if training else stage.model.eval()
            torch.manual_seed(0)
            with torch.no_grad():
                losses.append(float(stage.loss(stage.model, batch, "cpu")[0]))
        assert abs(losses[0] - losses[1]) < 1e-5, (training, losses)
    # ...and the tokens are used: another frame's tokens change the loss
    cached.model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        shuffled = float(cached.loss(cached.model, {**bc, "image_tokens": bc["image_tokens"].roll(1, 0)}, "cpu")[0])
    assert abs(shuffled - losses[0]) > 1e-4


def test_data_unlike_the_checkpoint_is_refused_before_training(data, tmp_path):
    from clamp_core import rig
    from clamp_training.commands import finetune as finetune_cmd
    from clamp_training.stages import StageError
    from clamp_training.train import train

    views_ds, no_views = data
    cases = {
        "view_names": (list(reversed(rig.VIEW_NAMES)), r"its views are \['right_wrist'"),
        "view_channels": (["depth", "y", "x", "z"], r"its view channels are \['depth', 'y'"),
        "action_names": (list(rig.ACTION_NAMES[7:] + rig.ACTION_NAMES[:7]), r"its actions are \['right_waist'"),
    }
    for key, (value, match) in cases.items():
        ds = tmp_path / f"ds_{key}"
        shutil.copytree(views_ds, ds)
        doc = json.loads((ds / "dataset.json").read_text())
        (ds / "dataset.json").write_text(json.dumps({**doc, key: value}))
        with pytest.raises(StageError, match=match) as err:
            train(finetune_config(str(SHIPPED)), [str(ds)], tmp_path / f"run_{key}", progress=False)
        msg = str(err.value)
        assert str(ds) in msg and str(SHIPPED / "policy") in msg and str(list(getattr(rig, key.upper()))) in msg
        assert not (tmp_path / f"run_{key}" / "checkpoint").exists()  # nothing was trained
    with pytest.raises(StageError, match=r"no views \(converted with --no-views\)"):
        train(finetune_config(str(SHIPPED)), [str(no_views)], tmp_path / "run_nv", progress=False)
    # the command line says the same and exits 1
    argv = ["--init", str(SHIPPED), "--data", str(no_views), "--out", str(tmp_path / "cli"), "--steps", "2"]
    assert finetune_cmd.main([*argv, "--threads", "1", "--no-progress"]) == 1
    assert not (tmp_path / "cli" / "checkpoint").exists()


def test_a_relative_checkpoint_path_resolves_from_the_working_directory_then_the_repository(tmp_path, monkeypatch):
    from clamp_training.stages import resolve_init

    monkeypatch.chdir(tmp_path)
    assert resolve_init("models/clamp_cpu") == REPO / "models" / "clamp_cpu" / "policy"
    (tmp_path / "models" / "clamp_cpu" / "policy").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(SHIPPED / "policy" / name, tmp_path / "models" / "clamp_cpu" / "policy" / name)
    assert resolve_init("models/clamp_cpu") == tmp_path / "models" / "clamp_cpu" / "policy"
    with pytest.raises(FileNotFoundError, match="pretraining run") as err:
        resolve_init("models/nothing")
    assert str(tmp_path / "models" / "nothing") in str(err.value) and str(REPO / "models" / "nothing") in str(err.value)


def test_the_cpu_recipe_is_the_grounded_recipe_plus_the_shipped_encoder():
    import dataclasses

    from clamp_policy.models import load_policy
    from clamp_training.stages import resolve_init
    from clamp_training.train import build_config

    clamp_file = REPO / "training" / "configs" / "finetune_clamp_cpu.yaml"
    rgb_file = REPO / "training" / "configs" / "finetune_rgb_cpu.yaml"
    cfg = build_config("default", str(clamp_file))
    assert cfg.stage == "finetune" and cfg.threads == 1 and cfg.finetune.freeze_encoders
    assert resolve_init(cfg.finetune.clamp_checkpoint) == SHIPPED / "policy"

    def but(policy, *keys):
        return {k: v for k, v in policy.items() if k not in keys}

    # the two recipes' policy sections are kept identical (the rgb recipe is tuned; sync this file)
    # but for dropout, a training choice that changes no weight (fine-tuning the frozen tokens does better without)
    clamp_doc, rgb_doc = (yaml.safe_load(f.read_text()) for f in (clamp_file, rgb_file))
    assert clamp_doc["policy"]["dropout"] == 0.0
    assert but(clamp_doc["policy"], "dropout") == but(rgb_doc["policy"], "dropout"), (
        "sync finetune_clamp_cpu.yaml's policy: with finetune_rgb_cpu.yaml"
    )
    no_dropout = dataclasses.replace(build_config("default", str(rgb_file)).policy, dropout=0.0)
    assert no_dropout == cfg.policy
    # ...and the shipped checkpoint was pretrained with that policy around its encoder, so fine-tuning starts
    # from all of it (init_policy): pretrain_cpu.yaml, the checkpoint's config and this one agree
    pre_doc = yaml.safe_load((REPO / "training" / "configs" / "pretrain_cpu.yaml").read_text())
    assert but(pre_doc["policy"], "image_encoder") == but(rgb_doc["policy"], "image_encoder")
    assert cfg.finetune.init_policy
    shipped = load_policy(SHIPPED / "policy").cfg
    assert dataclasses.replace(shipped, image_encoder=cfg.policy.image_encoder, dropout=0.0) == cfg.policy
