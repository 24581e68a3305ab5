"""The grounded recipe's pieces on the synthetic dataset: colour cameras through training, export and
the inference runner; bad data refused with the episode and step named; constant joints train."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from clamp_core import rig


def _rgb_config(**over):
    from clamp_policy.models.config import ImageEncoderConfig, RgbConfig, tiny_config
    from clamp_training.train import TrainConfig

    pcfg = tiny_config(
        image_encoder=ImageEncoderConfig(type="none"),
        rgb=RgbConfig(cameras=["cam_high", "cam_right_wrist"], size=[24, 32], channels=16, keypoints=8),
        state_noise=0.1,
        state_dropout=0.3,
    )
    return TrainConfig(policy=pcfg, steps=6, batch_size=8, lr=1e-3, warmup_steps=2, log_every=2, ckpt_every=6, **over)


def test_rgb_policy_trains_exports_and_infers_on_colour_images(dataset, tmp_path):
    from clamp_policy.inference import Observation, PolicyRunner
    from clamp_policy.models.checkpoint import load_policy
    from clamp_training.train import train

    summary = train(_rgb_config(), [str(dataset)], tmp_path / "run", progress=False)
    assert np.isfinite(summary["final_loss"])
    policy = load_policy(summary["policy"])
    assert {"state", "rgb"} <= policy.required_obs_keys()  # (+ "task": the synthetic data has two tasks)
    task = policy.cfg.task_vocab[0]
    runner = PolicyRunner(policy, 2)
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    obs = Observation(0.0, np.zeros(rig.ACTION_DIM), task=task, rgb={"cam_high": img, "cam_right_wrist": img})
    chunk = runner.infer(obs).chunk
    assert chunk.shape == (rig.CHUNK_LENGTH, rig.ACTION_DIM) and np.all(np.isfinite(chunk))
    # the images matter to the model: another image gives another chunk for the same noise
    other = PolicyRunner(policy, 2).infer(
        Observation(0.0, np.zeros(rig.ACTION_DIM), task=task, rgb={"cam_high": 255 - img, "cam_right_wrist": img})
    )
    assert not np.allclose(chunk, other.chunk)
    with pytest.raises(ValueError, match="missing \\['cam_right_wrist'\\]"):
        runner.infer(Observation(0.0, np.zeros(rig.ACTION_DIM), task=task, rgb={"cam_high": img}))


def test_epochs_scale_the_steps_with_the_data(dataset, tmp_path):
    from clamp_training.dataset import ChunkDataset
    from clamp_training.train import train

    n = len(ChunkDataset([str(dataset)], rig.CHUNK_LENGTH, progress=False, use_views=False))
    summary = train(_rgb_config(epochs=0.25), [str(dataset)], tmp_path / "run", progress=False, export=False)
    assert summary["steps"] == round(0.25 * n / 8)


def _copy(dataset, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(dataset, out)
    return out


def test_nan_in_actions_is_refused_naming_the_episode_and_step(dataset, tmp_path):
    import zarr
    from clamp_training.dataset import DatasetError, load_episodes

    ds = _copy(dataset, tmp_path)
    ep = sorted((ds / "episodes").iterdir())[1]
    g = zarr.open_group(str(ep), mode="r+")
    a = g["action"][:]
    a[17, 3] = np.nan
    g["action"][:] = a
    with pytest.raises(DatasetError, match=f"episode {ep.stem}: action at step 17 \\(dimension 3\\) is nan"):
        load_episodes([ds])


def test_missing_colour_camera_is_refused_before_training(dataset):
    from clamp_training.dataset import ChunkDataset, DatasetError

    with pytest.raises(DatasetError, match="no colour images of \\['cam_nope'\\]"):
        ChunkDataset([str(dataset)], rig.CHUNK_LENGTH, use_views=False, progress=False, rgb_cameras=["cam_nope"])


def test_constant_joints_get_a_usable_std_and_train(dataset, tmp_path):
    """The idle arm never moves in the demonstrations: its std is floored (a 0.01 rad deviation is
    then 0.2 sigma, not 10), and training on such data stays finite."""
    import zarr
    from clamp_training.dataset import STATE_STD_FLOOR, policy_stats, read_stats
    from clamp_training.train import train

    ds = _copy(dataset, tmp_path)
    for ep in (ds / "episodes").iterdir():
        g = zarr.open_group(str(ep), mode="r+")
        for key in ("state", "action"):
            v = g[key][:]
            v[:, :7] = 0.25  # the left arm holds still
            g[key][:] = v
    import json

    stats = read_stats(ds)
    stats["state_std"][:7] = [0.0] * 7
    (ds / "stats.json").write_text(json.dumps(stats))
    ps = policy_stats(read_stats(ds))
    assert min(ps["state_std"][:7]) == pytest.approx(STATE_STD_FLOOR)
    summary = train(_rgb_config(), [str(ds)], tmp_path / "run", progress=False)
    from clamp_policy.models.checkpoint import load_policy

    policy = load_policy(summary["policy"]).eval()
    obs = {"state": torch.full((1, 14), 0.25), "rgb": torch.zeros(1, 2, 3, 24, 32)}
    if policy.cfg.task_conditioning == "vocab":
        obs["task"] = [policy.cfg.task_vocab[0]]
    assert torch.isfinite(policy.sample(obs, 2)).all()
