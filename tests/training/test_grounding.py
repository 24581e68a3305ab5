"""The grounding probe: a ridge regression from frozen features to object positions, scored on
held-out episodes (ridge strength chosen on the training episodes, intercept unpenalised); its features
from the colour keypoints and from the frozen CLAMP encoder; the diagnostics `evaluate --data` reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from clamp_policy.models import DiffusionPolicy, tiny_config
from clamp_policy.models.config import ImageEncoderConfig, RgbConfig
from clamp_training.grounding import ALPHAS, choose_alpha, rgb_keypoints, ridge_probe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "clamp_cpu"


def _episodes(n_eps=40, per=5, feats_from_targets=True, seed=0, centre=(0.0, 0.0)):
    rng = np.random.default_rng(seed)
    pos = np.asarray(centre) + rng.uniform(-0.1, 0.1, (n_eps, 2))
    targets = np.repeat(pos, per, 0)
    groups = np.repeat(np.arange(n_eps), per)
    mix = rng.normal(size=(2, 16))
    noise = rng.normal(scale=0.01, size=(len(targets), 16))
    feats = targets @ mix + noise if feats_from_targets else rng.normal(size=(len(targets), 16))
    return feats, targets, groups


def test_probe_reads_positions_that_the_features_encode():
    err, base, n_train, n_test, alpha = ridge_probe(*_episodes())
    assert (n_train, n_test) == (30, 10) and alpha <= 1e-2
    assert err.mean() < 0.005 < base.mean()  # millimetres vs the spread of the positions


def test_probe_of_features_blind_to_the_objects_is_no_better_than_the_mean():
    err, base, *_ = ridge_probe(*_episodes(feats_from_targets=False))
    assert err.mean() > 0.8 * base.mean()


def test_probe_needs_enough_episodes():
    with pytest.raises(ValueError, match="at least 3 episodes"):
        ridge_probe(*_episodes(n_eps=2))


def test_rgb_keypoints_are_the_encoders_spatial_softmax_coordinates():
    rgb = RgbConfig(cameras=["cam_high", "cam_low"], size=[24, 32], channels=16, keypoints=8)
    policy = DiffusionPolicy(tiny_config(image_encoder=ImageEncoderConfig(type="none"), rgb=rgb)).eval()
    frames = torch.randint(0, 255, (3, 2, 3, 48, 64), dtype=torch.uint8)
    kp = rgb_keypoints(policy, frames)
    assert kp.shape == (3, 2 * 8 * 2) and np.all(np.abs(kp) <= 1.0)


def test_a_strong_ridge_falls_back_to_the_mean_position_not_the_world_origin():
    """Objects half a metre from the origin (the plate at y ~ 0.5): the intercept is not shrunk."""
    feats, targets, groups = _episodes(feats_from_targets=False, centre=(0.0, 0.5))
    err, base, *_ = ridge_probe(feats, targets, groups, alpha=max(ALPHAS))
    assert err.mean() < 1.1 * base.mean() < 0.1


def test_the_ridge_strength_is_chosen_on_training_episodes_only():
    informative, blind = _episodes(), _episodes(feats_from_targets=False)
    assert choose_alpha(*informative) <= 1e-2 and choose_alpha(*blind) >= 1.0
    # the held-out episodes do not take part: changing their targets leaves alpha as it was
    feats, targets, groups = _episodes()
    moved = targets.copy()
    moved[groups >= 30] += 5.0
    assert ridge_probe(feats, targets, groups)[4] == ridge_probe(feats, moved, groups)[4]


def _clamp_policy(rgb: RgbConfig | None = None) -> DiffusionPolicy:
    """A policy around the shipped CLAMP encoder (its weights), as stage finetune builds it."""
    from clamp_policy.models import load_policy

    pre = load_policy(SHIPPED / "policy")
    policy = DiffusionPolicy(tiny_config(image_encoder=pre.cfg.image_encoder, rgb=rgb or RgbConfig()))
    policy.image_encoder.load_state_dict(pre.image_encoder.state_dict())
    return policy.eval()


def test_clamp_features_of_the_frozen_encoder():
    from clamp_training.grounding import clamp_features

    policy = _clamp_policy()
    enc = policy.cfg.image_encoder
    views = torch.zeros(2, 5, 4, 64, 64)
    views[:, :, 0] = 0.8  # depth
    views[:, :, 1:3] = torch.linspace(-0.3, 0.3, 64)[None, None, None, :]  # x, y; z = 0: a table top
    views[:, :, 3, 20:28, 30:38] = 0.04  # a box in every view
    views[1, 3] = 0.0  # the left wrist view of the second sample sees nothing
    mean = clamp_features(policy, views, "view_mean")
    assert mean.shape == (2, enc.num_views * enc.dim)
    blocks = mean.reshape(2, enc.num_views, enc.dim)
    assert np.all(blocks[1, 3] == 0.0) and np.abs(blocks[0, 3]).max() > 0  # empty patches do not count
    tokens = clamp_features(policy, views, "tokens")
    assert tokens.shape == (2, policy.image_encoder.num_tokens * enc.dim)
    emb = clamp_features(policy, views, "embedding")
    assert emb.shape == (2, enc.options["embed_dim"]) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the policy's encoder is left in the mode it was in
    policy.train()
    clamp_features(policy, views)
    assert policy.image_encoder.training
    with pytest.raises(ValueError, match="choose one of"):
        clamp_features(policy, views, "pixels")


@pytest.fixture(scope="module")
def probe_data(tmp_path_factory):
    """Eight synthetic episodes (a box at a different place in each, recorded in episode.yaml) with
    views and colour."""
    from clamp_training.convert import convert
    from clamp_training.synthetic import write_synthetic_episode

    root = tmp_path_factory.mktemp("probe")
    for i in range(8):
        write_synthetic_episode(root / "bags" / f"ep{i}", duration_s=0.5, seed=i, task="box", camera_hz=10.0)
    convert([root / "bags"], root / "ds", workers=1, progress=False)
    return root / "ds"


def test_evaluate_reports_the_probe_from_the_frozen_clamp_embeddings(probe_data, tmp_path):
    from clamp_policy.models.checkpoint import save_policy
    from clamp_training.dataset import dataset_stats, policy_stats
    from clamp_training.grounding import grounding_report, probe_scenes

    rgb = RgbConfig(cameras=["cam_high", "cam_low"], size=[12, 16], channels=16, keypoints=8)
    policy = _clamp_policy(rgb)
    policy.set_normalization(policy_stats(dataset_stats([probe_data])))
    report = grounding_report(save_policy(policy, tmp_path / "clamp_rgb"), [probe_data], samples=16)
    clamp, kp = report["probe_clamp"], report["probe"]
    assert clamp["features"] == "clamp view_mean (320)" and kp["features"] == "rgb_keypoints (32)"
    for probe in (clamp, kp):
        assert probe["objects"] == ["box"] and (probe["train_episodes"], probe["test_episodes"]) == (6, 2)
        assert 0 < probe["probe_error_m"]["box"] < 1.0 and probe["alpha"] in ALPHAS
        assert probe["mean_position_error_m"] == clamp["mean_position_error_m"]  # same episodes, same split
    assert report["reliance"]["samples"] == 16 and report["reliance"]["loss"] > 0
    assert "loss_images_shuffled" in report["reliance"]
    # a policy without the CLAMP encoder has no CLAMP probe; one without colour no keypoint probe
    plain = DiffusionPolicy(tiny_config(image_encoder=ImageEncoderConfig(type="none"), rgb=rgb)).eval()
    plain.set_normalization(policy_stats(dataset_stats([probe_data])))
    assert "probe_clamp" not in grounding_report(save_policy(plain, tmp_path / "rgb"), [probe_data], samples=4)
    assert "probe" not in grounding_report(save_policy(_clamp_policy(), tmp_path / "clamp"), [probe_data], samples=4)
    # a policy that reads neither views nor colour: the scene probe says so instead of failing the evaluation
    blind = DiffusionPolicy(tiny_config(image_encoder=ImageEncoderConfig(type="none"))).eval()
    blind.set_normalization(policy_stats(dataset_stats([probe_data])))
    skipped = probe_scenes(save_policy(blind, tmp_path / "blind"), "place_cube", 5, progress=False)
    assert set(skipped) == {"skipped"} and "nothing to probe" in skipped["skipped"]


def test_evaluate_cli_probes_rendered_start_scenes_of_the_task(capsys, tmp_path):
    """`evaluate` ends with the probe on held-out start scenes of the task (place_cube: never in the shipped
    checkpoint's pretraining). The shipped policy's colour keypoints find the red cube to under 2 cm from 120
    fitted scenes (the spread is ~5.5 cm): scenes, frames and object positions line up."""
    import json

    from clamp_training.commands.evaluate import main

    args = ["--policy", str(SHIPPED / "policy"), "--task", "place_cube", "--episodes", "1", "--horizon", "10"]
    args += ["--samples", "1", "--inference-steps", "2", "--no-progress"]
    probe = ["--probe-scenes", "150", "--probe-seed", "30000"]
    assert main(args + probe + ["--out", str(tmp_path / "eval")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["probe_scenes"] == summary["probe_scenes"]
    assert summary["task"] == "place_cube" and summary["episodes"] == 1
    probe = summary["probe_scenes"]
    assert set(probe) == {"clamp_tokens", "rgb_keypoints"}
    for result in probe.values():
        assert result["objects"] == ["green plate", "red cube"] and result["scenes_seed"] == 30000
        assert (result["train_episodes"], result["test_episodes"]) == (120, 30) and result["alpha"] in ALPHAS
    kp = probe["rgb_keypoints"]
    assert kp["probe_error_m"]["red cube"] < 0.02 < kp["mean_position_error_m"]["red cube"]
    assert probe["clamp_tokens"]["features"] == "clamp_tokens (5120)"
    with pytest.raises(SystemExit):
        main(args + ["--probe-scenes", "3"])
    assert "at least 5 scenes" in capsys.readouterr().err
