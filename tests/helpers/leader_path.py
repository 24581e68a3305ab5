"""Teleop tracking checked by events, not by wall-clock margins.

The leaders move along straight legs between waypoints (a fixed number of messages per leg); after
each leg they hold still until the followers report the waypoint (an explicit event; the timeout
only catches a hang, it is not a performance margin). Timing-free checks then hold on any machine:

- every waypoint is reached: the followers end where the leaders are, to `tol`;
- on each leg every follower joint stays between where it started and where the leader went, to
  `overshoot` (no wrong-way motion, no overshoot), whatever the latency of the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from clamp_core import rig
from sensor_msgs.msg import JointState

ARM_COLS = [i for i in range(14) if i not in (6, 13)]
GRIPPER_COLS = [6, 13]


def leader_messages(q14: np.ndarray) -> dict[str, JointState]:
    """Leader joint states (xs_sdk names and units) for a 14-D rig state."""
    out = {}
    for i, arm in enumerate(rig.LEADERS):
        js = JointState(name=list(rig.XS_JOINT_NAMES))
        g = float(rig.LEADER_GRIPPER.joint(q14[7 * i + 6]))
        js.position = [*map(float, q14[7 * i : 7 * i + 6]), g, 0.0, 0.0]
        out[arm] = js
    return out


def waypoints_around(start: np.ndarray) -> list[np.ndarray]:
    """Four poses around `start`: waists and shoulders swing, grippers open and close."""
    moves = [(0.3, 0.15, 0.9), (-0.25, -0.1, 0.2), (0.1, 0.2, 0.7), (0.0, 0.0, 0.5)]
    out = []
    for waist, shoulder, grip in moves:
        q = start.copy()
        q[[0, 7]] += waist
        q[[1, 8]] += shoulder
        q[[6, 13]] = grip
        out.append(q)
    return out


def follow_waypoints(
    publish: Callable[[np.ndarray], None],
    measure: Callable[[], np.ndarray | None],
    start: np.ndarray,
    waypoints: list[np.ndarray],
    tol: float,
    gripper_tol: float,
    overshoot: float,
    steps_per_leg: int = 50,
    period: float = 0.02,
    hang_timeout: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict]:
    """Drive the leaders along the legs; returns per-leg {'max_overshoot', 'final_error', 'samples'}.

    One leg step per `period` of `clock`: pass the simulator's clock so a leg takes the same
    simulated time however loaded the machine is (the followers' dynamics then see the same motion).
    """
    legs = []

    def wait_period(t_prev: float) -> float:
        while clock() < t_prev + period:
            time.sleep(0.002)
        return clock()

    prev = start.copy()
    for target in waypoints:
        samples = []
        t = clock()
        for k in range(1, steps_per_leg + 1):  # the leg: straight line, one message per step
            publish(prev + (target - prev) * (k / steps_per_leg))
            q = measure()
            if q is not None:
                samples.append(q)
            t = wait_period(t)
        deadline = time.monotonic() + hang_timeout
        while True:  # hold until the followers report the waypoint
            publish(target)
            q = measure()
            if q is not None:
                samples.append(q)
                err = np.abs(q - target)
                if err[ARM_COLS].max() <= tol and err[GRIPPER_COLS].max() <= gripper_tol:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"followers never reached the leaders' pose {np.round(target, 3)} (last seen "
                    f"{None if q is None else np.round(q, 3)}) within {hang_timeout} s"
                )
            time.sleep(period)
        lo, hi = np.minimum(prev, target), np.maximum(prev, target)
        s = np.array(samples)
        beyond = np.maximum(s - hi, lo - s)[:, ARM_COLS]
        legs.append({"max_overshoot": float(beyond.max()), "final_error": float(err.max()), "samples": len(s)})
        assert beyond.max() <= overshoot, (
            f"a follower joint left the leaders' path by {beyond.max():.4f} rad (> {overshoot}) on the leg to "
            f"{np.round(target, 3)}"
        )
        prev = target
    return legs
