"""clamp_core.safety: position / gripper / velocity / acceleration clamps, NaN rejection, counters."""

from __future__ import annotations

import numpy as np
import pytest
from clamp_core import rig
from clamp_core.safety import (
    GRIPPER_INDICES,
    SafetyConfigError,
    SafetyLimiter,
    SafetyLimits,
)

DT = 1.0 / rig.CONTROL_HZ
HOME = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.5] * 2)


def seeded(limits: SafetyLimits | None = None) -> SafetyLimiter:
    lim = SafetyLimiter(limits)
    lim.reset(HOME)
    return lim


def test_gripper_indices_match_rig():
    assert [rig.ACTION_NAMES[i] for i in GRIPPER_INDICES] == ["left_gripper", "right_gripper"]


def test_within_limits_passes_unchanged():
    lim = seeded()
    target = HOME + 0.001
    out = lim.limit(target)
    np.testing.assert_allclose(out, target)
    assert lim.total() == 0 and not lim.last_event.any


def test_limit_before_reset_is_a_clear_error():
    with pytest.raises(RuntimeError, match="reset"):
        SafetyLimiter().limit(HOME)


def test_position_limit_clamped_and_counted_per_joint():
    lim = SafetyLimiter(SafetyLimits.from_joint_limits(acceleration=1e9))
    start = HOME.copy()
    start[2] = 1.55  # left elbow near its 1.6057 upper limit
    lim.reset(start)
    target = start.copy()
    target[2] = 1.60570 + 0.03  # beyond the limit, within one tick's velocity
    out = lim.limit(target)
    assert out[2] == pytest.approx(rig.VX300S_LIMITS.upper[2])
    assert lim.counts_by_joint() == {"position": {"left_elbow": 1}}
    assert lim.total("position") == 1 and lim.total("velocity") == 0


def test_gripper_range_from_profile_counted_as_gripper():
    lim = seeded(SafetyLimits.from_profile({"gripper_range": [0.1, 0.9], "acceleration": 1e9}))
    target = HOME.copy()
    target[13] = 0.55  # ok
    target[6] = 0.5
    lim.limit(target)
    target[6] = 0.58  # within velocity (4/s * 0.02 = 0.08)
    lim.limit(target)
    assert lim.total() == 0
    lim2 = SafetyLimiter(SafetyLimits.from_profile({"gripper_range": [0.1, 0.9], "acceleration": 1e9}))
    start = HOME.copy()
    start[13] = 0.88
    lim2.reset(start)
    target = start.copy()
    target[13] = 1.0
    out = lim2.limit(target)
    assert out[13] == pytest.approx(0.9)
    assert lim2.counts_by_joint() == {"gripper": {"right_gripper": 1}}


def test_velocity_limit_bounds_every_tick_of_a_jump():
    lim = SafetyLimiter(SafetyLimits.from_joint_limits(acceleration=1e9))
    lim.reset(HOME)
    target = HOME.copy()
    target[0] += 1.0  # 1 rad jump on the left waist
    prev = HOME
    steps = 0
    while not np.allclose(prev, target):
        out = lim.limit(target)
        step = np.abs(out - prev)
        assert np.all(step <= rig.VX300S_LIMITS.velocity * DT + 1e-12)
        prev, steps = out, steps + 1
        assert steps < 100
    # 1 rad at 3.14 rad/s, 0.02 s per tick: ceil(1 / 0.0628) = 16 ticks
    assert steps == 16
    assert lim.counts["velocity"][0] == 15 and lim.total("velocity") == 15


def test_acceleration_limit_ramps_velocity():
    lim = seeded()
    acc = lim.limits.acceleration
    target = HOME.copy()
    target[7] += 0.5
    prev_v = np.zeros(14)
    for _ in range(10):
        lim.limit(target)
        v = lim.velocity
        assert np.all(np.abs(v - prev_v) <= acc * DT + 1e-9)
        prev_v = v
    assert lim.counts["acceleration"][7] >= 5
    assert lim.counts_by_joint().keys() <= {"acceleration", "velocity"}


def test_hold_after_motion_decelerates_without_jump():
    lim = seeded()
    # Move at constant speed 2 rad/s (within limits) so the limiter has velocity.
    target = HOME.copy()
    for _ in range(30):
        target = target.copy()
        target[1] += 2.0 * DT
        lim.limit(target)
    moving_v = lim.velocity[1]
    assert moving_v == pytest.approx(2.0, rel=1e-6)
    hold = lim.position
    vs = []
    for _ in range(30):
        lim.limit(hold)
        vs.append(lim.velocity[1])
    dv = np.abs(np.diff([moving_v, *vs]))
    assert np.all(dv <= lim.limits.acceleration[1] * DT + 1e-9)
    assert abs(vs[-1]) < 1e-6  # at rest again


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_target_rejected_and_held(bad):
    lim = seeded()
    target = HOME.copy()
    target[4] = bad
    out = lim.limit(target)
    np.testing.assert_allclose(out, HOME)
    assert lim.last_event.rejected
    assert lim.counts_by_joint() == {"nonfinite": {"left_wrist_angle": 1}}


def test_output_is_always_inside_limits_under_random_garbage():
    rng = np.random.default_rng(0)
    lim = seeded()
    L = lim.limits
    prev = lim.position
    for _ in range(500):
        target = HOME + rng.normal(0, 3, 14)
        if rng.random() < 0.05:
            target[rng.integers(14)] = np.nan
        out = lim.limit(target)
        assert np.all(np.isfinite(out))
        assert np.all(out >= L.lower - 1e-12) and np.all(out <= L.upper + 1e-12)
        v = (out - prev) / DT
        assert np.all(np.abs(v) <= L.velocity + 1e-9)
        prev = out
    assert lim.total() > 0


def test_profile_by_joint_name_and_errors():
    upper = dict(zip(rig.ACTION_NAMES, rig.VX300S_LIMITS.upper, strict=True))
    upper["left_waist"] = 1.0
    limits = SafetyLimits.from_profile({"upper": upper, "velocity": 1.0})
    assert limits.upper[0] == 1.0 and np.all(limits.velocity == 1.0)
    with pytest.raises(SafetyConfigError, match="unknown joint"):
        SafetyLimits.from_profile({"upper": {"left_wasit": 1.0}})
    with pytest.raises(SafetyConfigError, match="expected 14 values"):
        SafetyLimits.from_profile({"velocity": [1.0, 2.0]})
    with pytest.raises(SafetyConfigError, match="unknown limit key"):
        SafetyLimits.from_profile({"velocities": 1.0})
    with pytest.raises(SafetyConfigError, match="must be > 0"):
        SafetyLimits.from_profile({"acceleration": 0.0})
    with pytest.raises(SafetyConfigError, match="lower >= upper"):
        SafetyLimits.from_profile({"lower": 5.0})
    with pytest.raises(SafetyConfigError, match="gripper_range"):
        SafetyLimits.from_profile({"gripper_range": [0.5, 1.5]})
    with pytest.raises(ValueError, match="14 values"):
        seeded().limit(np.zeros(7))


def test_step_target_reached_without_overshoot():
    lim = seeded()
    target = HOME.copy()
    target[0] += 0.3
    xs = [lim.limit(target)[0] for _ in range(40)]
    assert max(xs) <= target[0] + 1e-9  # braking ahead of the target, never past it
    assert xs[-1] == pytest.approx(target[0])
    assert np.all(np.diff(xs) >= -1e-12)  # monotone approach, no oscillation


def test_smooth_trajectory_within_limits_passes_unchanged():
    lim = seeded()
    t = np.arange(300) * DT
    traj = HOME + 0.3 * np.sin(2 * np.pi * 0.5 * t)[:, None] * (np.arange(14) % 7 < 6)  # arm joints only
    lim.reset(traj[0], velocity=(traj[1] - traj[0]) / DT)
    outs = np.array([lim.limit(p) for p in traj[1:]])
    np.testing.assert_allclose(outs, traj[1:], atol=1e-9)
    assert lim.total() == 0


def test_nonfinite_while_moving_stops_at_max_deceleration():
    lim = seeded()
    target = HOME.copy()
    for _ in range(40):
        target = target.copy()
        target[0] += 2.0 * DT
        lim.limit(target)
    xs = [lim.limit(np.full(14, np.nan))[0] for _ in range(12)]
    vel = np.diff(xs) / DT
    assert np.all(np.abs(np.diff(vel)) <= lim.limits.acceleration[0] * DT + 1e-9)
    assert vel[-1] == 0.0
    assert lim.total("nonfinite") == 12 * 14
