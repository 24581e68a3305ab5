"""clamp_sim core: scripted demonstrators succeed, do-nothing fails, rendering matches geometry."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from clamp_core import rig
from clamp_sim.aloha_sim import AlohaSim
from clamp_sim.evaluation import run_episode
from clamp_sim.scripted import make_scripted_policy
from clamp_sim.tasks import TASKS


class HoldStill:
    """Do-nothing policy: keep the current joint targets."""

    needs_images = False

    def __call__(self, obs):
        return np.tile(obs["state"], (rig.CHUNK_LENGTH, 1))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_scripted_policy_succeeds_and_do_nothing_fails(task):
    sim = AlohaSim(task, image_size=(48, 64))
    policy = make_scripted_policy(task)
    for seed in (3, 11):
        r = run_episode(sim, policy, seed, policy.horizon, render_every=None)
        assert r.success, f"{task} seed {seed}: scripted demo failed (progress {r.progress})"
        assert r.success_step is not None and r.success_step < policy.horizon
    idle = run_episode(sim, HoldStill(), 3, policy.horizon, render_every=None)
    assert not idle.success and idle.progress == 0.0
    sim.close()


def test_seeds_randomise_objects_reproducibly():
    sim = AlohaSim("insertion", image_size=(48, 64))
    sim.reset(1)
    a = sim.object_positions()
    sim.reset(2)
    b = sim.object_positions()
    sim.reset(1)
    assert sim.object_positions() == a != b
    assert set(a) == {"red peg", "blue socket"} and "peg" in sim.description()


def test_commands_reach_targets_and_joint_state_layout():
    sim = AlohaSim("transfer_cube", image_size=(48, 64))
    target = np.array([0.3, -0.5, 0.6, 0.2, 0.5, 0.3])
    sim.command_arm("follower_left", target)
    sim.command_gripper("follower_left", rig.FOLLOWER_GRIPPER.closed)
    sim.step(100)
    names, pos, vel, eff = sim.joint_states("follower_left")
    assert names == rig.XS_JOINT_NAMES and pos.shape == vel.shape == eff.shape == (9,)
    np.testing.assert_allclose(pos[:6], target, atol=0.02)
    # the gripper angle follows rig.FOLLOWER_GRIPPER: commanded closed -> near the closed angle
    # (the finger slides bottom out at 0.021 m, i.e. ~0.07 normalised)
    assert abs(rig.FOLLOWER_GRIPPER.normalise(pos[6])) < 0.12
    assert pos[7] > 0 > pos[8] and abs(pos[7] + pos[8]) < 0.003  # fingers mirror each other
    with pytest.raises(ValueError, match="6 joint positions"):
        sim.command_arm("follower_left", [0.0] * 5)
    with pytest.raises(ValueError, match="14-D"):
        sim.apply_action(np.zeros(7))


def test_depth_and_intrinsics_match_known_geometry():
    """A point on the cube's top face, projected with K and T_world_cam, lands on red pixels whose
    depth equals that point's optical-axis distance; the table top is at z=0 everywhere."""
    h, w = 240, 320
    with AlohaSim("transfer_cube", image_size=(h, w)) as sim:
        sim.reset(5)
        cube = np.array(sim.object_positions()["red cube"])
        frames = sim.render()
        assert set(frames) == set(rig.CAMERAS)
        f = frames["cam_high"]
        assert f.rgb.shape == (h, w, 3) and f.depth_mm.dtype == np.uint16
        top = cube + [0.0, 0.0, 0.02]
        p_cam = np.linalg.inv(f.T_world_cam) @ np.append(top, 1.0)
        assert p_cam[2] > 0, "optical z must point forward"
        u, v, _ = f.K @ (p_cam[:3] / p_cam[2])
        u, v = int(round(u)), int(round(v))
        assert 0 <= u < w and 0 <= v < h
        r, g, b = f.rgb[v, u].astype(int)
        assert r > 100 and g < 60 and b < 60, f"pixel {(u, v)} is not the red cube: {(r, g, b)}"
        assert abs(f.depth[v, u] - p_cam[2]) < 0.005
        # back-project every valid table pixel of cam_low: world z of the table top is ~0
        fl = frames["cam_low"]
        vv, uu = np.mgrid[0:h, 0:w]
        d = fl.depth
        rays = np.linalg.inv(fl.K) @ np.stack([uu.ravel(), vv.ravel(), np.ones(h * w)])
        pts = (fl.T_world_cam[:3, :3] @ (rays * d.ravel()) + fl.T_world_cam[:3, 3:4]).T
        table = (d.ravel() > 0) & (np.abs(pts[:, 0]) < 0.3) & (pts[:, 1] > 0.3) & (pts[:, 1] < 0.9)
        low = pts[table & (pts[:, 2] < 0.01)]
        assert len(low) > 1000 and np.median(np.abs(low[:, 2])) < 0.003
        # wrist camera is rigidly mounted on the gripper frame
        parent, T = sim.camera_mount("cam_left_wrist")
        assert parent == rig.gripper_frame("follower_left")
        np.testing.assert_allclose(
            sim.gripper_pose("follower_left") @ T, frames["cam_left_wrist"].T_world_cam, atol=1e-9
        )


def test_divergence_is_flagged_and_freezes_the_task_verdict():
    sim = AlohaSim("transfer_cube", image_size=(48, 64))
    sim.step(5)
    assert not sim.diverged
    sim.data.qfrc_applied[0] = 1e30  # bypasses the command checks on purpose: a violent bad acceleration
    with pytest.warns(RuntimeWarning, match="simulation diverged"):
        sim.step(1)
    assert sim.diverged and not sim.success()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per episode, not every step
        sim.step(2)
    sim.reset(1)
    assert not sim.diverged
