"""The grounding probe: a ridge regression from frozen features to object positions, scored on
held-out episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clamp_policy.models import DiffusionPolicy, tiny_config
from clamp_policy.models.config import ImageEncoderConfig, RgbConfig
from clamp_training.grounding import rgb_keypoints, ridge_probe


def _episodes(n_eps=40, per=5, feats_from_targets=True, seed=0):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-0.1, 0.1, (n_eps, 2))
    targets = np.repeat(pos, per, 0)
    groups = np.repeat(np.arange(n_eps), per)
    mix = rng.normal(size=(2, 16))
    noise = rng.normal(scale=0.01, size=(len(targets), 16))
    feats = targets @ mix + noise if feats_from_targets else rng.normal(size=(len(targets), 16))
    return feats, targets, groups


def test_probe_reads_positions_that_the_features_encode():
    err, base, n_train, n_test = ridge_probe(*_episodes())
    assert (n_train, n_test) == (30, 10)
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
