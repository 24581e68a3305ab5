"""Fuzz of the command path (issue 15): chunk executor -> arm driver, against hostile chunk streams.

Chunks with future, past, duplicate and NaN stamps, NaN and far-out positions, clock jumps back and
forward, and arm-driver restarts (a new driver process: start move from where the arm is, then
"ready"). The arm follows the driver's commands exactly. Invariants, on every tick of every seed:

- every command the driver sends to the servos is inside the joint limits;
- no step between consecutive servo commands is larger than one tick at the velocity limit;
- the executor's own commands obey the same two rules;
- nothing reaches the servos from a stream that did not start where the arm is (engage check).
"""

from __future__ import annotations

import numpy as np
import pytest
from clamp_bringup.arm_driver import ArmDriverCore
from clamp_core import rig
from clamp_core.profile import load_profile, safety_limits, workspace_guard
from clamp_policy.executor import ChunkError, ChunkExecutor, ExecutorConfig, make_chunk

PROFILE = load_profile("aloha")
LIMITS = safety_limits(PROFILE)
DT = 1.0 / rig.CONTROL_HZ
TFS = np.arange(rig.CHUNK_LENGTH) * DT


def _driver(measured) -> ArmDriverCore:
    d = PROFILE["driver"]
    core = ArmDriverCore(
        LIMITS, d["start_pose"], d["sleep_pose"], 0.3, rig.CONTROL_HZ, owner=rig.COMMAND_SOURCE_EXECUTOR
    )
    core.on_measured(measured)
    core.begin_start()
    return core


def _chunk(rng, now, arm, kind):
    """A chunk of the given hostile kind (or a plausible one) around the arm's pose."""
    stamp = now - rng.uniform(0.0, 0.15)
    pos = arm + np.cumsum(rng.normal(0, 0.01, (rig.CHUNK_LENGTH, 14)), axis=0)
    if kind == "future":
        stamp = now + rng.uniform(0.1, 50.0)
    elif kind == "past":
        stamp = now - rng.uniform(0.6, 100.0)
    elif kind == "nan_stamp":
        stamp = float("nan")
    elif kind == "nan_pos":
        pos[rng.integers(rig.CHUNK_LENGTH), rng.integers(14)] = rng.choice([np.nan, np.inf, -np.inf])
    elif kind == "far":
        pos = pos + rng.uniform(-4.0, 4.0, 14)  # outside the limits, far from the arm
    elif kind == "jump":
        pos[rig.CHUNK_LENGTH // 2 :] += rng.uniform(-1.5, 1.5, 14)  # a step in the middle
    return stamp, pos


def _check_step(prev, cmd, what):
    assert np.all(cmd >= LIMITS.lower - 1e-9) and np.all(cmd <= LIMITS.upper + 1e-9), f"{what} outside the limits"
    if prev is not None:
        step = np.abs(cmd - prev)
        assert np.all(step <= LIMITS.velocity * DT + 1e-9), f"{what} step {step.max():.4f} > one tick at the limit"


@pytest.mark.parametrize("seed", range(6))
def test_fuzzed_chunk_streams_never_break_the_limits(seed):
    rng = np.random.default_rng(seed)
    guard = workspace_guard(PROFILE) if seed % 2 else None
    ex = ChunkExecutor(ExecutorConfig(blend_s=float(rng.choice([0.0, 0.1])), safe_after_s=0.5), LIMITS, guard)
    arm = np.array(PROFILE["driver"]["sleep_pose"])
    driver = _driver(arm)
    now, wall = 100.0, 0.0
    last_servo = last_exec = None
    last_chunk = None
    kinds = ["ok"] * 6 + ["future", "past", "duplicate", "nan_stamp", "nan_pos", "far", "jump"]
    served = refused_far = 0
    for _ in range(1000):
        ev = rng.random()
        if ev < 0.004:  # the clock jumps back (sim reset, looped bag) or forward
            now = rng.uniform(0.0, now) if rng.random() < 0.7 else now + rng.uniform(1.0, 30.0)
        if ev > 0.996:  # the arm driver restarts: a new process, from where the arm is
            driver = _driver(arm)
            ex.update_driver_state("waiting")
            last_servo = None if last_servo is None else arm.copy()
        if rng.random() < 0.02 and ex.state.value == "safe":  # the operator re-arms
            ex.rearm()
        ex.update_driver_state(driver.state)
        if rng.random() > 0.03:  # joint states sometimes drop out
            ex.update_state(arm, now)
        if rng.random() < 0.15:
            kind = rng.choice(kinds)
            if kind == "duplicate" and last_chunk is not None:
                stamp, pos = last_chunk
            else:
                stamp, pos = _chunk(rng, now, arm, kind)
            try:
                chunk = make_chunk(stamp, TFS, pos)
            except ChunkError as exc:
                ex.submit(None, now, str(exc))
            else:
                ex.submit(chunk, now)
                last_chunk = (stamp, pos)
        cmd = ex.tick(now)
        if cmd is not None:
            _check_step(last_exec, cmd, "executor command")
            last_exec = cmd
            before = driver.rejections.get("not_at_arm", 0)
            out = driver.command(cmd, stamp=now, source=rig.COMMAND_SOURCE_EXECUTOR, now=wall)
            refused_far += driver.rejections.get("not_at_arm", 0) - before
        else:
            out = None
            last_exec = None  # a pause: the next stream starts afresh (the driver checks where)
        tick = driver.tick(wall)
        for servo in (out, tick):
            if servo is not None:
                _check_step(last_servo, servo, "servo command")
                last_servo = servo
                arm = servo.copy()  # an ideal servo
                served += 1
        now += DT
        wall += DT
    assert served > 100, "the fuzz never got the arms moving: it tests nothing"
    print(f"seed {seed}: {served} servo commands, {dict(ex.rejections)} rejected chunks, {refused_far} not at arm")
