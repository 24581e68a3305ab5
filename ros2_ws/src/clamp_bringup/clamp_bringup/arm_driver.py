"""Arm driver logic (ROS-free): 14-D joint targets <-> xs_sdk per-arm commands, smooth moves, limits.

The arm driver is the single owner of the xs_sdk command topics. It

- waits for the followers' joint states, then (ALOHA's opening ceremony) sets operating modes and
  torque through xs_sdk's services (node side),
- moves the followers smoothly (minimum-jerk, duration stretched to respect the velocity limits)
  from where they are to the start pose, ignoring external commands meanwhile,
- then forwards 14-D targets from rig.JOINT_COMMAND_TOPIC through `clamp_core.safety` (the last
  limit check before the motors) and converts them to JointGroupCommand (6 arm joints) +
  JointSingleCommand (gripper joint angle via the follower gripper calibration),
- and on shutdown moves to the sleep pose the same smooth way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from clamp_core import rig
from clamp_core.safety import SafetyLimiter, SafetyLimits

STATES = ("waiting", "moving_to_start", "ready", "moving_to_sleep", "asleep")


class CommandError(ValueError):
    """A joint command that cannot be used (wrong names/size); names the problem."""


def action_from_command(names, positions) -> np.ndarray:
    """14-D target from a JointState-like (names, positions); accepts any order of rig.ACTION_NAMES."""
    positions = np.asarray(positions, dtype=float)
    names = list(names)
    if not names:
        if positions.shape != (rig.ACTION_DIM,):
            raise CommandError(f"joint command has no names and {positions.size} positions; send 14 named values")
        return positions
    if len(names) != len(positions):
        raise CommandError(f"joint command has {len(names)} names but {len(positions)} positions")
    if names == list(rig.ACTION_NAMES):
        return positions
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in rig.ACTION_NAMES if n not in index]
    if missing:
        raise CommandError(f"joint command lacks {missing}; names must be rig.ACTION_NAMES {rig.ACTION_NAMES}")
    return positions[[index[n] for n in rig.ACTION_NAMES]]


@dataclass(frozen=True)
class ArmCommand:
    arm: str
    joints: np.ndarray  # 6 arm joint positions (rad), xs_sdk order
    gripper: float  # gripper joint angle (rad) for JointSingleCommand


def to_xs_commands(
    action: np.ndarray, gripper: rig.GripperCalibration = rig.FOLLOWER_GRIPPER, arms=rig.FOLLOWERS
) -> list[ArmCommand]:
    """14-D (gripper normalised) -> per-arm xs_sdk commands (gripper as a joint angle)."""
    a = np.asarray(action, dtype=float)
    return [
        ArmCommand(arm, a[7 * i : 7 * i + 6].copy(), float(gripper.joint(a[7 * i + 6]))) for i, arm in enumerate(arms)
    ]


def min_jerk(s: float) -> float:
    """Minimum-jerk profile 0..1 over normalised time s in [0, 1]; peak speed 1.875 at s=0.5."""
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


def move_duration(start: np.ndarray, goal: np.ndarray, velocity: np.ndarray, min_time: float) -> float:
    """At least `min_time`, and long enough that the min-jerk peak speed stays under `velocity`."""
    need = 1.875 * np.abs(np.asarray(goal) - np.asarray(start)) / np.asarray(velocity)
    return float(max(min_time, need.max(initial=0.0)))


class SmoothMove:
    """Min-jerk interpolation in the 14-D space from `start` to `goal`."""

    def __init__(self, start, goal, duration: float) -> None:
        self.start = np.asarray(start, dtype=float).copy()
        self.goal = np.asarray(goal, dtype=float).copy()
        self.duration = max(float(duration), 1e-6)
        self.elapsed = 0.0

    def step(self, dt: float) -> np.ndarray:
        self.elapsed += dt
        return self.start + min_jerk(self.elapsed / self.duration) * (self.goal - self.start)

    @property
    def done(self) -> bool:
        return self.elapsed >= self.duration


class ArmDriverCore:
    """State machine + limiter of the arm driver; the node feeds it measurements, ticks and commands."""

    def __init__(
        self,
        limits: SafetyLimits,
        start_pose,
        sleep_pose,
        move_time_s: float = 2.0,
        rate_hz: float = rig.CONTROL_HZ,
        gripper: rig.GripperCalibration = rig.FOLLOWER_GRIPPER,
    ) -> None:
        self.limits = limits
        self.start_pose = np.asarray(start_pose, dtype=float)
        self.sleep_pose = np.asarray(sleep_pose, dtype=float)
        self.move_time_s = float(move_time_s)
        self.dt = 1.0 / float(rate_hz)
        self.gripper = gripper
        self.limiter = SafetyLimiter(limits, dt=self.dt)
        self.state = "waiting"
        self.measured: np.ndarray | None = None
        self._move: SmoothMove | None = None
        self.commands_in = 0
        self.commands_rejected = 0

    # -- inputs
    def on_measured(self, state14: np.ndarray) -> None:
        self.measured = np.asarray(state14, dtype=float)

    def begin_start(self) -> float:
        """Start the smooth move from the measured pose to the start pose; returns its duration."""
        if self.measured is None:
            raise RuntimeError("no follower joint states yet: cannot move to the start pose")
        return self._begin(self.start_pose, "moving_to_start")

    def begin_sleep(self) -> float:
        if not self.limiter.seeded:
            if self.measured is None:
                self.state = "asleep"
                return 0.0
            self.limiter.reset(self.measured)
        return self._begin(self.sleep_pose, "moving_to_sleep")

    def _begin(self, goal: np.ndarray, state: str) -> float:
        if state == "moving_to_start" or not self.limiter.seeded:
            self.limiter.reset(np.clip(self.measured, self.limits.lower, self.limits.upper))
        start = self.limiter.position
        duration = move_duration(start, goal, self.limits.velocity, self.move_time_s)
        self._move = SmoothMove(start, goal, duration)
        self.state = state
        return duration

    def tick(self) -> np.ndarray | None:
        """One control period of a smooth move: the next limited 14-D command (None when not moving)."""
        if self._move is None or self.state not in ("moving_to_start", "moving_to_sleep"):
            return None
        cmd = self.limiter.limit(self._move.step(self.dt))
        if self._move.done:
            self._move = None
            self.state = "ready" if self.state == "moving_to_start" else "asleep"
        return cmd

    def command(self, target14, dt: float | None = None) -> np.ndarray | None:
        """An external 14-D target -> the limited command, or None when not accepting commands."""
        self.commands_in += 1
        if self.state != "ready":
            self.commands_rejected += 1
            return None
        if dt is not None:  # a late or early command moves at most as far as the limits allow in that time
            dt = min(max(dt, 0.5 * self.dt), 5.0 * self.dt)
        return self.limiter.limit(np.asarray(target14, dtype=float), dt)

    def xs_commands(self, cmd14: np.ndarray) -> list[ArmCommand]:
        return to_xs_commands(cmd14, self.gripper)
