"""The diffusion policy's denoiser heads (transformer, MLP) and multi-noise training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clamp_core import rig
from clamp_policy.models import DiffusionPolicy, PolicyConfig, tiny_config
from clamp_policy.models.checkpoint import load_policy, save_policy
from clamp_policy.models.config import ImageEncoderConfig, RgbConfig


def _cfg(**kw) -> PolicyConfig:
    rgb = RgbConfig(cameras=["cam_high", "cam_low"], size=[24, 32], channels=16, keypoints=8, shift=2)
    return tiny_config(image_encoder=ImageEncoderConfig(type="none"), rgb=rgb, prediction_type="sample", **kw)


def _obs(b=3):
    g = torch.Generator().manual_seed(0)
    return {
        "state": torch.rand(b, 14, generator=g),
        "rgb": torch.randint(0, 255, (b, 2, 3, 48, 64), generator=g, dtype=torch.uint8),
    }


def test_mlp_head_samples_chunks_in_the_action_range_and_learns_a_batch():
    torch.manual_seed(0)
    policy = DiffusionPolicy(_cfg(head="mlp", head_width=64, head_blocks=2))
    assert not hasattr(policy, "decoder")  # the transformer decoder is not built beside it
    obs, actions = _obs(), torch.rand(3, 50, 14)
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], 3e-3)
    first = None
    for _ in range(60):
        loss = policy.loss(obs, actions)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss) if first is None else first
    assert float(loss) < 0.5 * first  # the head fits a fixed batch: gradients reach it
    chunk = policy.eval().sample(obs, generator=torch.Generator().manual_seed(1))
    assert chunk.shape == (3, rig.CHUNK_LENGTH, rig.ACTION_DIM)
    assert float(chunk.min()) >= -1 - 1e-5 and float(chunk.max()) <= 1 + 1e-5  # identity normalisation


def test_noise_samples_repeat_each_observation_and_check_given_noise():
    policy = DiffusionPolicy(_cfg(head="mlp", head_width=64, head_blocks=1, noise_samples=4)).train()
    obs, actions = _obs(2), torch.rand(2, 50, 14)
    noise, t = torch.randn(8, 50, 14), torch.arange(8) * 5
    # rows i*4..i*4+3 belong to sample i: the same loss as four single-noise copies of the batch
    policy.rgb_encoder.cfg.shift = 0  # no random shift, so both encodings agree
    policy.cfg.state_noise = 0.0
    a = policy.loss(obs, actions, noise=noise, timesteps=t)
    single = DiffusionPolicy(_cfg(head="mlp", head_width=64, head_blocks=1, noise_samples=1)).train()
    single.load_state_dict(policy.state_dict())
    single.rgb_encoder.cfg.shift = 0
    rep = {k: v.repeat_interleave(4, 0) for k, v in obs.items()}
    b = single.loss(rep, actions.repeat_interleave(4, 0), noise=noise, timesteps=t)
    assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="noise"):
        policy.loss(obs, actions, noise=torch.randn(2, 50, 14), timesteps=torch.tensor([1, 2]))
    # evaluation mode draws one noise per sample
    assert policy.eval().loss(obs, actions, noise=noise[:2], timesteps=t[:2]).ndim == 0


def test_head_is_in_the_config_and_the_checkpoint_round_trips(tmp_path):
    cfg = _cfg(head="mlp", head_width=32, head_blocks=1, noise_samples=2)
    assert PolicyConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="head"):
        _cfg(head="unet")
    with pytest.raises(ValueError, match="noise_samples"):
        _cfg(noise_samples=0)
    policy = DiffusionPolicy(cfg).eval()
    policy.set_normalization(
        {
            "state_mean": np.zeros(14),
            "state_std": np.ones(14),
            "action_min": np.full(14, -0.5),
            "action_max": np.full(14, 2.0),
            "view_mean": np.zeros(4),
            "view_std": np.ones(4),
        }
    )
    save_policy(policy, tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    obs = _obs(1)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(policy.sample(obs, generator=g()), loaded.sample(obs, generator=g()))


def test_knots_make_smooth_chunks_that_fit_the_demonstrated_ones():
    from clamp_policy.models.diffusion_policy import knot_basis

    basis = knot_basis(50, 11)
    assert basis.shape == (50, 11) and torch.allclose(basis.sum(1), torch.ones(50))
    assert basis[0, 0] == 1 and basis[-1, -1] == 1  # the curve starts and ends on its knots
    # a smooth reach fits within a milliradian; a gripper step becomes a ramp over one knot interval
    t = torch.linspace(0, 1, 50)[:, None]
    reach = 0.8 * (1 - torch.cos(torch.pi * t)) / 2
    fit = basis @ (torch.linalg.pinv(basis) @ reach)
    assert float((fit - reach).abs().max()) < 1e-3 * 5
    policy = DiffusionPolicy(_cfg(head="mlp", head_width=32, head_blocks=1, action_knots=11)).eval()
    chunk = policy.sample(_obs(2), generator=torch.Generator().manual_seed(0))
    assert chunk.shape == (2, 50, 14)
    # straight between knots: the second difference vanishes except at the knots
    second = (chunk[:, 2:] - 2 * chunk[:, 1:-1] + chunk[:, :-2]).abs().amax(dim=(0, 2))
    knots_at = set(int(round(float(p))) for p in torch.linspace(0, 49, 11))
    off_knot = [float(second[i - 1]) for i in range(1, 49) if all(abs(i - k) > 1 for k in knots_at)]
    assert max(off_knot) < 1e-5
    with pytest.raises(ValueError, match="action_knots"):
        _cfg(action_knots=1)


def test_training_noise_on_keypoints_and_state_is_off_at_inference():
    cfg = _cfg(head="mlp", head_width=32, head_blocks=1, state_noise_rad=0.05)
    cfg.rgb.keypoint_noise = 0.1
    policy = DiffusionPolicy(cfg)
    obs = _obs(2)
    policy.eval()
    assert torch.equal(policy.encode(obs), policy.encode(obs))  # deterministic: no noise at inference
    policy.train()
    policy.rgb_encoder.cfg.shift = 0
    a, b = policy.encode(obs), policy.encode(obs)
    assert not torch.equal(a, b)
    # the state noise is in rig units: an idle joint (tiny std) gets the same physical blur as a
    # moving one, i.e. a large normalised one
    policy.set_normalization(
        {
            "state_mean": np.zeros(14),
            "state_std": np.r_[np.full(7, 0.05), np.full(7, 0.5)],
            "action_min": np.full(14, -1.0),
            "action_max": np.full(14, 1.0),
            "view_mean": np.zeros(4),
            "view_std": np.ones(4),
        }
    )
    seen = []
    policy.state_proj.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    policy.cfg.rgb.keypoint_noise = 0.0
    policy.encode({**obs, "state": torch.zeros(2, 14).repeat(500, 1), "rgb": obs["rgb"].repeat(500, 1, 1, 1, 1)})
    std = seen[-1].std(0)
    assert torch.allclose(std[:7], torch.full((7,), 1.0), rtol=0.1)  # 0.05 rad / 0.05 rad std
    assert torch.allclose(std[7:], torch.full((7,), 0.1), rtol=0.1)  # 0.05 rad / 0.5 rad std


def test_keypoint_norm_standardises_keypoints_with_running_statistics():
    cfg = _cfg(head="mlp", head_width=32, head_blocks=1)
    cfg.rgb.keypoint_norm = True
    policy = DiffusionPolicy(cfg).train()
    norm = policy.rgb_encoder.cams[0].kp_norm
    assert isinstance(norm, torch.nn.BatchNorm1d) and norm.num_features == 2 * cfg.rgb.keypoints
    policy.loss(_obs(4), torch.rand(4, 50, 14))
    assert int(norm.num_batches_tracked) == 1  # training updates the running statistics
    mean = norm.running_mean.clone()
    policy.eval().sample(_obs(1))
    assert torch.equal(norm.running_mean, mean)  # inference only reads them
    assert PolicyConfig.from_dict(cfg.to_dict()).rgb.keypoint_norm is True


def test_relative_frame_diffuses_arm_offsets_from_the_state_and_keeps_grippers_absolute():
    policy = DiffusionPolicy(_cfg(head="mlp", head_width=64, head_blocks=1, action_frame="relative")).eval()
    stats = {
        "state_mean": [0.0] * 14,
        "state_std": [1.0] * 14,
        "action_min": [-2.0] * 14,
        "action_max": [2.0] * 14,
        "view_mean": [0.0] * 4,
        "view_std": [1.0] * 4,
    }
    policy.set_normalization(stats)
    state = torch.rand(2, 14)
    actions = state[:, None] + 0.1 * torch.randn(2, 50, 14)
    x = policy.chunk_to_model(actions, state)
    grippers = [i for i, n in enumerate(rig.ACTION_NAMES) if n.endswith("_gripper")]
    arm = [i for i in range(14) if i not in grippers]
    # arm joints: the offset from the state over the half-range (2); grippers: absolute, centred on 0
    assert torch.allclose(x[..., arm], (actions - state[:, None])[..., arm] / 2, atol=1e-6)
    assert torch.allclose(x[..., grippers], actions[..., grippers] / 2, atol=1e-6)
    assert torch.allclose(policy.chunk_from_model(x, state), actions, atol=1e-6)
    # a sampled chunk lies in the demonstrated range even for an arm at its edge
    state[:, arm] = 1.99
    chunk = policy.sample({**_obs(2), "state": state}, generator=torch.Generator().manual_seed(0))
    assert float(chunk.max()) <= 2.0 + 1e-6 and float(chunk.min()) >= -2.0 - 1e-6
    with pytest.raises(ValueError, match="action_frame"):
        _cfg(action_frame="delta")
