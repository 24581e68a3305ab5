"""clamp_policy.inference (ROS-free): policy runner on real exported checkpoints, worker, history."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from clamp_core import rig
from clamp_policy.inference import (
    ActionHistory,
    InferenceWorker,
    Observation,
    PolicyMismatchError,
    PolicyRunner,
    configure_torch_threads,
)
from clamp_policy.models import DiffusionPolicy, load_policy, save_policy, tiny_config
from clamp_policy.models.checkpoint import CheckpointError

S = rig.VIEW_SIZE
V = len(rig.VIEW_NAMES)


def tiled_views(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.5, 0.2, (S, V * S, 4)).astype(np.float32)


def exported(tmp_path, **cfg) -> DiffusionPolicy:
    torch.manual_seed(0)
    policy = DiffusionPolicy(tiny_config(**cfg))
    save_policy(policy, tmp_path / "policy")
    return load_policy(tmp_path / "policy")


def test_runner_on_an_exported_policy_gives_a_finite_chunk(tmp_path):
    runner = PolicyRunner(exported(tmp_path), num_inference_steps=3)
    times = runner.warmup(1)
    assert runner.ready and len(times) == 1
    obs = Observation(stamp=12.5, state=np.zeros(14), views=tiled_views())
    res = runner.infer(obs)
    assert res.chunk.shape == (rig.CHUNK_LENGTH, rig.ACTION_DIM) and np.all(np.isfinite(res.chunk))
    assert res.stamp == 12.5 and res.latency_ms > 0
    # deterministic with a seed; the views matter
    a = PolicyRunner(load_policy(tmp_path / "policy"), 3, seed=1).infer(obs).chunk
    b = PolicyRunner(load_policy(tmp_path / "policy"), 3, seed=1).infer(obs).chunk
    c = PolicyRunner(load_policy(tmp_path / "policy"), 3, seed=1).infer(
        Observation(stamp=0.0, state=np.zeros(14), views=tiled_views(seed=5))
    )
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c.chunk)
    assert runner.latency_stats()["inferences"] == 1


def test_averaged_samples_are_the_mean_of_that_many_draws(tmp_path):
    policy = exported(tmp_path, action_frame="relative")
    obs = Observation(stamp=0.0, state=np.linspace(-0.3, 0.3, 14), views=tiled_views())
    batch = PolicyRunner(policy, 3).make_obs(obs)
    k = 4
    # the same generator state gives the K draws of one averaged call and a batch of K copies
    many = policy.sample({n: v.repeat_interleave(k, 0) for n, v in batch.items()}, 3, torch.Generator().manual_seed(9))
    mean = policy.sample(batch, 3, torch.Generator().manual_seed(9), num_samples=k)
    assert mean.shape == (1, rig.CHUNK_LENGTH, rig.ACTION_DIM)
    assert many.std(0).max() > 1e-3  # the draws differ, so the mean is not one of them
    torch.testing.assert_close(mean[0], many.mean(0), rtol=0, atol=1e-5)  # float32 sums in another order
    averaged = PolicyRunner(policy, 3, seed=9, num_samples=k).infer(obs).chunk
    np.testing.assert_allclose(averaged, mean[0].double().numpy(), atol=1e-6)
    with pytest.raises(PolicyMismatchError, match="num_samples"):
        PolicyRunner(policy, 3, num_samples=0)


def test_missing_or_bad_inputs_are_clear_errors(tmp_path):
    runner = PolicyRunner(exported(tmp_path, task_conditioning="vocab", task_vocab=["transfer the cube"]), 2)
    with pytest.raises(ValueError, match="needs /clamp/views"):
        runner.make_obs(Observation(0.0, np.zeros(14), None, "transfer the cube"))
    with pytest.raises(ValueError, match=r"expected \(S, 5\*S, 4\)"):
        runner.make_obs(Observation(0.0, np.zeros(14), np.zeros((S, S, 4), np.float32), "transfer the cube"))
    with pytest.raises(ValueError, match="no /clamp/task yet"):
        runner.make_obs(Observation(0.0, np.zeros(14), tiled_views(), ""))
    with pytest.raises(ValueError, match="not in training"):
        runner.make_obs(Observation(0.0, np.zeros(14), tiled_views(), "insert the peg"))
    with pytest.raises(ValueError, match="14 finite"):
        runner.make_obs(Observation(0.0, np.full(14, np.nan), tiled_views(), "transfer the cube"))
    assert runner.infer(Observation(0.0, np.zeros(14), tiled_views(), "transfer the cube")).chunk.shape == (50, 14)


def test_policy_that_does_not_fit_the_rig_is_refused(tmp_path):
    from clamp_policy.models.config import ImageEncoderConfig

    enc = ImageEncoderConfig(num_views=3, view_size=32, patch_size=16, dim=32)
    with pytest.raises(PolicyMismatchError, match="3 views, the perception node renders 5"):
        PolicyRunner(DiffusionPolicy(tiny_config(image_encoder=enc)))
    with pytest.raises(PolicyMismatchError, match="num_inference_steps"):
        PolicyRunner(DiffusionPolicy(tiny_config()), num_inference_steps=1000)


def test_mismatched_checkpoint_is_refused_by_load_policy(tmp_path):
    exported(tmp_path)
    cfg_path = tmp_path / "policy" / "config.json"
    doc = json.loads(cfg_path.read_text())
    doc["policy_config"]["d_model"] = 64  # config no longer matches the weights
    cfg_path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="does not match"):
        load_policy(tmp_path / "policy")


def test_action_history_pads_and_keeps_the_newest():
    h = ActionHistory(4)
    state = np.full(14, 7.0)
    np.testing.assert_array_equal(h.get(state), np.tile(state, (4, 1)))
    for i in range(6):
        h.push(np.full(14, float(i)))
    np.testing.assert_array_equal(h.get(state)[:, 0], [2, 3, 4, 5])
    h2 = ActionHistory(3)
    h2.push(np.full(14, 1.0))
    np.testing.assert_array_equal(h2.get(state)[:, 0], [1, 1, 1])


def test_policy_with_action_history_takes_it(tmp_path):
    runner = PolicyRunner(exported(tmp_path, action_history=5), 2)
    assert runner.history_length == 5
    with pytest.raises(ValueError, match=r"expected \(5, 14\)"):
        runner.make_obs(Observation(0.0, np.zeros(14), tiled_views(), action_history=np.zeros((2, 14))))
    res = runner.infer(Observation(0.0, np.zeros(14), tiled_views(), action_history=np.zeros((5, 14))))
    assert res.chunk.shape == (50, 14)


def test_worker_runs_the_newest_request_and_survives_errors(tmp_path):
    runner = PolicyRunner(exported(tmp_path), 2)
    results, errors = [], []
    done = threading.Event()

    def on_result(r):
        results.append(r.stamp)
        if r.stamp == 99.0:
            done.set()

    views = tiled_views()
    obs = [Observation(stamp, np.zeros(14), views) for stamp in (2.0, 3.0, 4.0, 99.0)]
    failed = threading.Event()
    worker = InferenceWorker(runner, on_result, lambda e: (errors.append(e), failed.set())).start()
    try:
        worker.submit(Observation(1.0, np.full(14, np.nan), views))  # bad: error, worker lives
        assert failed.wait(10.0)
        for o in obs:  # faster than inference: older ones are replaced
            worker.submit(o)
        assert done.wait(30.0)
    finally:
        worker.stop()
    assert len(errors) == 1 and "14 finite" in str(errors[0])
    assert results[-1] == 99.0 and len(results) < 4 and worker.replaced >= 1


def test_torch_threads_leave_a_core():
    import os

    n = configure_torch_threads(0)
    assert n == max(1, (os.cpu_count() or 2) - 1) and torch.get_num_threads() == n
    assert configure_torch_threads(1) == 1
