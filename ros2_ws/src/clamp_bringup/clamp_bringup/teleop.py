"""Teleoperation logic (ROS-free): leader joints -> 14-D follower targets, the gripper gesture.

The leaders' six arm joints are mirrored onto the followers; the leader gripper angle is
normalised with the leader calibration (ALOHA: 0 closed .. 1 open) and the arm driver maps it to the
follower gripper angle. Targets pass the same `clamp_core.safety` limiter as the policy's chunks,
so the followers catch up to the leaders smoothly when teleop starts.
"""

from __future__ import annotations

import numpy as np
from clamp_core import rig
from clamp_core.safety import SafetyLimiter, SafetyLimits


class GripperGesture:
    """Fires once when both leader grippers stay below `threshold` (normalised) for `hold_s`.

    It re-arms only after a gripper opens again, so one long squeeze never fires twice.
    """

    def __init__(self, threshold: float = 0.15, hold_s: float = 0.3) -> None:
        self.threshold = float(threshold)
        self.hold_s = float(hold_s)
        self._since: float | None = None
        self._armed = True

    def update(self, t: float, left: float, right: float) -> bool:
        squeezed = left < self.threshold and right < self.threshold
        if not squeezed:
            self._since = None
            self._armed = True
            return False
        if self._since is None:
            self._since = t
        if self._armed and t - self._since >= self.hold_s:
            self._armed = False
            return True
        return False


def leader_action(positions_by_arm: dict, gripper: rig.GripperCalibration = rig.LEADER_GRIPPER) -> np.ndarray:
    """14-D target from the leaders' joint states (xs_sdk names); gripper normalised and clipped to [0, 1]."""
    a = rig.state_from_joint_states(positions_by_arm, rig.LEADERS, gripper)
    g = [6, 13]
    a[g] = np.clip(a[g], 0.0, 1.0)
    return a


class TeleopCore:
    """Active/idle state + the limiter that every teleop target passes.

    Mirrors only while the arm driver is "ready": started while the driver still moves to the start
    pose, the limiter would run ahead of the arms and the followers would jump once it is ready. When
    the driver leaves "ready" teleop stops; it restarts (from where the followers are) on request.
    """

    def __init__(self, limits: SafetyLimits, rate_hz: float = rig.CONTROL_HZ) -> None:
        self.limiter = SafetyLimiter(limits, dt=1.0 / rate_hz)
        self.active = False
        self.driver_state: str | None = None

    def on_driver_state(self, state: str) -> bool:
        """The driver's state; returns True when this stopped a running teleop."""
        self.driver_state = state
        if state != "ready" and self.active:
            self.active = False
            return True
        return False

    def can_start(self) -> str | None:
        """Why teleop cannot start now, or None."""
        if self.driver_state != "ready":
            return f"the arm driver is {self.driver_state or 'not running'}, not ready: wait for it"
        return None

    def start(self, follower_state: np.ndarray) -> None:
        """Begin mirroring from where the followers are (the limiter never jumps)."""
        why = self.can_start()
        if why:
            raise RuntimeError(why)
        self.limiter.reset(follower_state)
        self.active = True

    def stop(self) -> None:
        self.active = False

    def step(self, leader_target: np.ndarray) -> np.ndarray | None:
        if not self.active or self.driver_state != "ready":
            return None
        return self.limiter.limit(leader_target)
