"""The diffusion policy: config round-trip, shapes, conditioning, and clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from clamp_core import rig
from clamp_policy.models import DiffusionPolicy, PolicyConfig, tiny_config, untile_views


def _obs(b=2, size=rig.VIEW_SIZE, **extra):
    g = torch.Generator().manual_seed(0)
    return {"views": torch.rand(b, 5, 4, size, size, generator=g), "state": torch.rand(b, 14, generator=g), **extra}


def test_config_json_round_trip_and_strictness():
    cfg = tiny_config(task_conditioning="vocab", task_vocab=["a", "b"], action_history=3)
    text = json.dumps(cfg.to_dict())
    assert PolicyConfig.from_dict(json.loads(text)) == cfg
    bad = cfg.to_dict() | {"n_layers": 3}
    with pytest.raises(ValueError, match="n_layers"):
        PolicyConfig.from_dict(bad)
    with pytest.raises(ValueError, match="task_vocab"):
        tiny_config(task_conditioning="vocab")


def test_sample_shape_range_and_determinism():
    policy = DiffusionPolicy(tiny_config()).eval()
    stats = {
        "state_mean": np.zeros(14),
        "state_std": np.ones(14),
        "action_min": np.full(14, -0.5),
        "action_max": np.full(14, 2.0),
        "view_mean": np.zeros(4),
        "view_std": np.ones(4),
    }
    policy.set_normalization(stats)
    obs = _obs()  # full-size 224 views are pooled to the tiny model's 32 inside
    a = policy.sample(obs, generator=torch.Generator().manual_seed(1))
    b = policy.sample(obs, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, rig.CHUNK_LENGTH, rig.ACTION_DIM) and a.dtype == torch.float32
    assert torch.equal(a, b)
    # samples are clipped to the normalised range, i.e. the training action range
    assert float(a.min()) >= -0.5 - 1e-5 and float(a.max()) <= 2.0 + 1e-5
    c = policy.sample(obs, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, c)


def test_loss_is_reproducible_with_given_noise_and_backpropagates():
    policy = DiffusionPolicy(tiny_config())
    obs = _obs(size=32)
    actions = torch.rand(2, 50, 14)
    noise, t = torch.randn(2, 50, 14), torch.tensor([3, 40])
    l1 = policy.loss(obs, actions, noise=noise, timesteps=t)
    l2 = policy(obs, actions, noise=noise, timesteps=t)
    assert torch.equal(l1, l2)
    l1.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_task_vocab_and_history_conditioning_change_the_output():
    cfg = tiny_config(task_conditioning="vocab", task_vocab=["pick", "place"], action_history=4)
    policy = DiffusionPolicy(cfg).eval()
    hist = torch.zeros(2, 4, 14)
    obs = _obs(size=32, task=["pick", "pick"], action_history=hist)
    mem_a = policy.encode(obs)
    mem_b = policy.encode({**obs, "task": ["place", "place"]})
    assert not torch.allclose(mem_a, mem_b)
    with pytest.raises(KeyError, match="were not in training"):
        policy.encode({**obs, "task": ["fold", "pick"]})
    with pytest.raises(KeyError, match="action_history"):
        policy.encode({k: v for k, v in obs.items() if k != "action_history"})


def test_bad_observation_shapes_are_named():
    policy = DiffusionPolicy(tiny_config())
    with pytest.raises(ValueError, match="obs\\['state'\\]"):
        policy.encode({"views": torch.zeros(1, 5, 4, 32, 32), "state": torch.zeros(14)})
    with pytest.raises(ValueError, match="3 views"):
        policy.encode({"views": torch.zeros(1, 3, 4, 32, 32), "state": torch.zeros(1, 14)})


def test_untile_views_inverts_the_published_tiling():
    views = torch.rand(5, 4, 8, 8)
    tiled = torch.cat([v.permute(1, 2, 0) for v in views], dim=1)  # (S, 5*S, C), views side by side
    assert torch.equal(untile_views(tiled, 5)[0], views)
    with pytest.raises(ValueError, match="expected height"):
        untile_views(torch.zeros(8, 30, 4), 5)


def test_default_config_encodes_once_and_denoises_inference_steps_times():
    """Inference cost is structural: one observation encoding, then exactly `inference_steps` passes of
    the (small) denoiser. Seconds per chunk depend on the machine and its load, so they are measured by
    `python -m clamp_policy.bench`, not asserted here."""
    from clamp_training.train import PRESETS

    policy = DiffusionPolicy(PRESETS["default"]().policy).eval()
    calls = {"encode": 0, "denoise": 0}
    for name in calls:
        original = getattr(policy, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(policy, name, counted)
    with torch.no_grad():
        chunk = policy.sample(_obs(b=1))
    assert chunk.shape == (1, policy.cfg.chunk_length, policy.cfg.action_dim) and torch.isfinite(chunk).all()
    assert calls == {"encode": 1, "denoise": policy.cfg.inference_steps}, calls
    assert policy.cfg.inference_steps <= 10
