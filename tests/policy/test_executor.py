"""clamp_policy.executor (ROS-free): time alignment, blending, ensembling, watchdog, NaN rejection."""

from __future__ import annotations

import numpy as np
import pytest
from clamp_core import rig
from clamp_policy.executor import ChunkError, ChunkExecutor, ExecState, ExecutorConfig, make_chunk

DT = 1.0 / rig.CONTROL_HZ
HOME = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.5] * 2)
TFS = np.arange(rig.CHUNK_LENGTH) * DT


def ramp_chunk(stamp: float, start: np.ndarray, rate: float = 0.5, joint: int = 0):
    """A chunk moving `joint` at `rate` rad/s from `start`, points 1/50 s apart from the stamp."""
    pos = np.tile(start, (rig.CHUNK_LENGTH, 1))
    pos[:, joint] += rate * TFS
    return make_chunk(stamp, TFS, pos)


def running(config: ExecutorConfig | None = None, t0: float = 10.0) -> ChunkExecutor:
    ex = ChunkExecutor(config or ExecutorConfig(blend_s=0.0))
    ex.update_state(HOME, t0)
    return ex


def test_chunk_executed_in_order_at_control_rate():
    ex = running()
    chunk = ramp_chunk(10.0, HOME)
    assert ex.tick(10.0) is None and ex.state == ExecState.IDLE  # nothing commanded before a chunk
    assert ex.submit(chunk, now=10.0).accepted
    outs = []
    for k in range(rig.CHUNK_LENGTH):
        now = 10.0 + k * DT
        ex.update_state(HOME, now)
        outs.append(ex.tick(now))
    np.testing.assert_allclose(np.array(outs), chunk.positions, atol=1e-9)
    assert ex.state == ExecState.RUNNING and ex.limiter.total() == 0


def test_passed_actions_are_dropped_not_replayed_late():
    ex = running()
    chunk = ramp_chunk(10.0, HOME)
    arrival = 10.0 + 0.1  # 100 ms inference latency: the first five points are in the past
    ex.update_state(HOME, arrival)
    res = ex.submit(chunk, now=arrival)
    assert res.accepted and res.dropped == 5
    first = ex.tick(arrival)
    # starting at point 5 would be a 0.05 rad step from HOME; the limiter bounds the first tick
    assert first[0] == pytest.approx(min(chunk.positions[5, 0], ex.limiter.limits.acceleration[0] * DT * DT))
    for k in range(1, 30):
        now = arrival + k * DT
        ex.update_state(HOME, now)
        out = ex.tick(now)
    np.testing.assert_allclose(out, chunk.positions[5 + 29], atol=1e-9)  # caught up, on time


def test_exec_latency_shifts_the_sampled_time():
    ex = running(ExecutorConfig(blend_s=0.0, exec_latency_s=0.04))
    chunk = ramp_chunk(10.0, HOME, rate=0.05)  # slow: no limiter involvement
    assert ex.submit(chunk, now=10.0).dropped == 2
    outs = [ex.tick(10.0 + k * DT) for k in range(3)]
    ex.update_state(HOME, 10.0 + 3 * DT)
    np.testing.assert_allclose(outs[2], chunk.positions[4], atol=1e-9)


def test_boundary_blend_keeps_per_tick_change_within_velocity_limit():
    ex = running(ExecutorConfig(blend_s=0.1))
    vmax = ex.limiter.limits.velocity
    a = ramp_chunk(10.0, HOME, rate=1.0)
    ex.submit(a, now=10.0)
    prev = HOME.copy()
    outs = []
    for k in range(60):
        now = 10.0 + k * DT
        ex.update_state(prev, now)  # an ideal arm: it is where it was commanded
        if k == 25:  # the replan disagrees by 0.3 rad on the waist
            b = ramp_chunk(now - 0.05, a.sample(now - 0.05) + 0.3 * (np.arange(14) == 0), rate=1.0)
            assert ex.submit(b, now=now).accepted
        out = ex.tick(now)
        assert np.all(np.abs(out - prev) <= vmax * DT + 1e-9)
        outs.append(out[0])
        prev = out
    steps = np.abs(np.diff(outs))
    assert steps.max() <= 0.3 / 5 + 1.0 * DT + 1e-9  # the 0.3 rad spread over the 5 blend ticks
    assert outs[-1] == pytest.approx(ex._newest.sample(10.0 + 59 * DT)[0])


def test_temporal_ensembling_averages_overlapping_chunks():
    cfg = ExecutorConfig(temporal_ensembling=True, blend_s=0.0, ensemble_k=0.0)
    ex = running(cfg)
    const = lambda stamp, v: make_chunk(stamp, TFS, np.tile(HOME + v * (np.arange(14) == 0), (50, 1)))  # noqa: E731
    ex.submit(const(10.0, 0.0), now=10.0)
    for k in range(10):
        ex.update_state(HOME, 10.0 + k * DT)
        ex.tick(10.0 + k * DT)
    ex.submit(const(10.0 + 9 * DT, 0.02), now=10.0 + 10 * DT)
    for k in range(10, 20):
        ex.update_state(HOME, 10.0 + k * DT)
        out = ex.tick(10.0 + k * DT)
    assert out[0] == pytest.approx(0.01)  # k=0: equal weights
    # ACT weights: older predictions weigh more
    ex2 = running(ExecutorConfig(temporal_ensembling=True, blend_s=0.0, ensemble_k=0.1))
    ex2.submit(const(10.0, 0.0), now=10.0)
    ex2.tick(10.0)
    ex2.submit(const(10.0 + 10 * DT, 0.02), now=10.0 + 10 * DT)
    out = ex2.tick(10.0 + 10 * DT)
    w_new = np.exp(-0.1 * 10)
    assert out[0] == pytest.approx(0.02 * w_new / (1 + w_new))


def test_stale_joint_states_hold_without_jump_then_safe_and_rearm():
    cfg = ExecutorConfig(blend_s=0.0, safe_after_s=0.5)
    ex = running(cfg)
    ex.submit(ramp_chunk(10.0, HOME, rate=1.0), now=10.0)
    for k in range(20):
        ex.update_state(HOME, 10.0 + k * DT)
        last = ex.tick(10.0 + k * DT)
    v_before = ex.limiter.velocity[0]
    assert v_before == pytest.approx(1.0)
    outs = [last]
    at_hold = None
    for k in range(20, 80):  # joint states stop arriving (last one at k = 19)
        before = outs[-1]
        outs.append(ex.tick(10.0 + k * DT))
        if ex.state == ExecState.HOLD and at_hold is None:
            at_hold = (k, before)
            assert "stale follower joint states" in ex.reason
    assert at_hold[0] == 19 + round(ex.config.state_timeout_s / DT) + 1
    assert ex.state == ExecState.SAFE
    # SAFE stops commanding once the arm is at rest (a stale pose must never reach a restarted driver)
    assert outs[-1] is None and ex.tick(10.0 + 80 * DT) is None
    xs = np.array([o[0] for o in outs if o is not None])
    vel = np.diff(xs) / DT
    assert np.all(np.abs(np.diff(vel)) <= ex.limiter.limits.acceleration[0] * DT + 1e-9)  # no jump
    # a controlled stop: at rest, within v^2 / 2a (+ one tick) of where the hold began
    stop_dist = v_before**2 / (2 * ex.limiter.limits.acceleration[0]) + v_before * DT
    assert vel[-1] == 0.0 and 0.0 <= xs[-1] - at_hold[1][0] <= stop_dist + 1e-9
    # SAFE is latched: a fresh chunk is ignored until rearm
    now = 10.0 + 80 * DT
    ex.update_state(HOME, now)
    assert ex.submit(ramp_chunk(now, HOME), now=now).reason == "safe_latched"
    ex.rearm()
    assert ex.state == ExecState.IDLE and ex.submit(ramp_chunk(now, HOME), now=now).accepted
    ex.tick(now)
    assert ex.state == ExecState.RUNNING


def test_no_fresh_chunk_holds_and_fresh_chunk_resumes():
    ex = running(ExecutorConfig(blend_s=0.1, chunk_timeout_s=0.3))
    ex.submit(ramp_chunk(10.0, HOME, rate=0.2), now=10.0)
    for k in range(30):
        now = 10.0 + k * DT
        ex.update_state(HOME, now)
        ex.tick(now)
    assert ex.state == ExecState.HOLD and "no fresh chunk" in ex.reason
    held = ex.tick(now + DT)
    ex.update_state(HOME, now + DT)
    assert ex.submit(ramp_chunk(now, held, rate=0.2), now=now + DT).accepted
    out = ex.tick(now + 2 * DT)
    assert ex.state == ExecState.RUNNING and np.all(np.abs(out - held) <= ex.limiter.limits.velocity * DT)


def test_nan_chunk_rejected_warned_and_held():
    ex = running()
    ex.submit(ramp_chunk(10.0, HOME, rate=0.5), now=10.0)
    for k in range(10):
        ex.update_state(HOME, 10.0 + k * DT)
        ex.tick(10.0 + k * DT)
    bad = ramp_chunk(10.0 + 9 * DT, HOME).positions
    bad[20, 3] = np.nan
    res = ex.submit(make_chunk(10.0 + 9 * DT, TFS, bad), now=10.0 + 10 * DT)
    assert not res.accepted and res.reason == "nonfinite"
    assert ex.state == ExecState.HOLD
    assert any("NaN/inf" in w and "left_forearm_roll" in w for w in ex.pop_warnings())
    out = ex.tick(10.0 + 10 * DT)
    assert np.all(np.isfinite(out)) and ex.rejections["nonfinite"] == 1


def test_stale_observation_chunk_rejected_and_held():
    ex = running(ExecutorConfig(blend_s=0.0, max_obs_age_s=0.2))
    ex.submit(ramp_chunk(10.0, HOME), now=10.0)
    ex.tick(10.0)
    res = ex.submit(ramp_chunk(10.0 + DT, HOME), now=10.5)
    assert res.reason == "stale" and ex.state == ExecState.HOLD


def test_limit_violation_in_chunk_is_clamped_and_counted():
    ex = running()
    pos = np.tile(HOME, (50, 1))
    pos[:, 2] = np.linspace(1.16, 2.5, 50)  # elbow beyond its 1.6057 rad limit
    ex.submit(make_chunk(10.0, TFS, pos), now=10.0)
    for k in range(50):
        ex.update_state(HOME, 10.0 + k * DT)
        out = ex.tick(10.0 + k * DT)
    assert out[2] == pytest.approx(rig.VX300S_LIMITS.upper[2])
    assert ex.stats(10.0)["clamps"]["position"]["left_elbow"] > 0


def test_safe_pose_is_reached_slowly():
    pose = HOME + 0.2
    ex = running(ExecutorConfig(blend_s=0.0, safe_after_s=0.1, safe_pose=pose, safe_speed=0.5))
    ex.submit(ramp_chunk(10.0, HOME, rate=0.0), now=10.0)
    ex.tick(10.0)
    outs = [ex.tick(10.0 + k * DT) for k in range(1, 100)]  # no joint states: hold, then safe
    assert ex.state == ExecState.SAFE
    sent = [o for o in outs if o is not None]
    assert outs[-1] is None  # there: SAFE stops commanding
    np.testing.assert_allclose(sent[-1], pose, atol=1e-9)
    assert np.max(np.abs(np.diff(sent, axis=0))) <= 0.5 * DT + 1e-9


def test_malformed_chunks_are_clear_errors():
    with pytest.raises(ChunkError, match="permutation of rig.ACTION_NAMES"):
        make_chunk(0.0, TFS, np.zeros((50, 14)), names=[f"j{i}" for i in range(14)])
    with pytest.raises(ChunkError, match="strictly increasing"):
        make_chunk(0.0, np.zeros(50), np.zeros((50, 14)))
    with pytest.raises(ChunkError, match=r"\(N >= 1, 14\)"):
        make_chunk(0.0, TFS, np.zeros((50, 7)))
    # names in another order are reordered
    names = list(reversed(rig.ACTION_NAMES))
    c = make_chunk(0.0, TFS[:2], np.tile(np.arange(14.0)[::-1], (2, 1)), names=names)
    np.testing.assert_array_equal(c.positions[0], np.arange(14.0))
    with pytest.raises(ValueError, match="safe_pose"):
        ExecutorConfig(safe_pose=[0.0] * 3).validate()


def test_never_takes_over_a_moving_arm():
    ex = running(ExecutorConfig(blend_s=0.0, settle_s=0.2))
    moving = HOME.copy()
    for k in range(10):  # the driver is still moving the arm to its start pose
        moving[1] = HOME[1] + 0.02 * k
        ex.update_state(moving, 10.0 + k * DT)
    ex.submit(ramp_chunk(10.0 + 9 * DT, moving), now=10.0 + 9 * DT)
    assert ex.tick(10.0 + 9 * DT) is None and "stop moving" in ex.reason
    for k in range(10, 25):  # at rest now
        ex.update_state(moving, 10.0 + k * DT)
        out = ex.tick(10.0 + k * DT)
        if out is not None:
            break
    assert ex.state == ExecState.RUNNING and k >= 19  # after 0.2 s at rest
    np.testing.assert_allclose(out[1], moving[1])  # from where the arm is: no jump


def test_arms_that_do_not_follow_lead_to_a_hold():
    ex = running(ExecutorConfig(blend_s=0.0, max_following_error=0.1, following_timeout_s=0.2))
    ex.submit(ramp_chunk(10.0, HOME, rate=1.0), now=10.0)
    for k in range(40):  # the commands move on, the measured arm stays put (blocked)
        now = 10.0 + k * DT
        ex.update_state(HOME, now)
        ex.tick(now)
        if ex.state == ExecState.HOLD:
            break
    assert ex.state == ExecState.HOLD and "do not follow" in ex.reason and "left_waist" in ex.reason
    # 0.1 rad error after ~0.2 s (incl. the 0.1 s lag), then 0.2 s of it
    assert 0.35 <= k * DT <= 0.5, k
    assert ex.stats(now)["following_error"] > 0.1


def test_waits_for_the_arm_driver_and_holds_when_it_stops_being_ready():
    ex = running()
    ex.update_driver_state("moving_to_start")
    ex.submit(ramp_chunk(10.0, HOME, rate=0.1), now=10.0)
    assert ex.tick(10.0) is None and "arm driver (moving_to_start)" in ex.reason
    ex.update_driver_state("ready")
    ex.update_state(HOME, 10.0 + DT)
    assert ex.tick(10.0 + DT) is not None and ex.state == ExecState.RUNNING
    ex.update_driver_state("moving_to_sleep")
    ex.update_state(HOME, 10.0 + 2 * DT)
    ex.tick(10.0 + 2 * DT)
    assert ex.state == ExecState.HOLD and "moving_to_sleep" in ex.reason


def test_velocity_scale_slows_every_command():
    ex = running(ExecutorConfig(blend_s=0.0, velocity_scale=0.25))
    ex.submit(ramp_chunk(10.0, HOME, rate=3.0), now=10.0)  # asks for 3 rad/s
    outs = []
    for k in range(30):
        ex.update_state(HOME, 10.0 + k * DT)
        outs.append(ex.tick(10.0 + k * DT)[0])
    v = np.diff(outs) / DT
    assert v.max() == pytest.approx(0.25 * rig.VX300S_LIMITS.velocity[0])
    assert ex.limiter.total("velocity") > 0
    with pytest.raises(ValueError, match="velocity_scale"):
        ExecutorConfig(velocity_scale=1.5).validate()


def test_a_gripper_stopped_by_what_it_grasps_is_not_a_following_error():
    ex = running(ExecutorConfig(blend_s=0.0, max_following_error=0.1, following_timeout_s=0.2))
    grip = rig.ACTION_NAMES.index("right_gripper")
    closed = HOME.copy()
    closed[grip] = 0.0
    ex.submit(make_chunk(10.0, TFS, np.tile(closed, (rig.CHUNK_LENGTH, 1))), now=10.0)
    holding = HOME.copy()
    holding[grip] = 0.45  # the fingers stop on the cube, 0.45 from the command to close
    for k in range(50):  # 1 s: well past the lag and the timeout
        now = 10.0 + k * DT
        ex.update_state(holding, now)
        ex.tick(now)
    assert ex.state == ExecState.RUNNING, ex.reason
