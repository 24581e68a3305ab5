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
    """State machine + limiter of the arm driver; the node feeds it measurements, ticks and commands.

    Commands are accepted only while "ready", only from the mode's `owner` (the JointState's
    header.frame_id; None = anyone), only with a stamp newer than the previous one, and - after
    every (re)start - only once a command starts where the arm is (within `engage_tolerance`): a
    producer still sending an old pose (e.g. an executor that held through a driver restart) is
    refused instead of being driven to at full speed. Each accepted command moves at most one tick
    at the velocity limit. Without a command for `command_timeout_s` the arms brake to rest.
    """

    def __init__(
        self,
        limits: SafetyLimits,
        start_pose,
        sleep_pose,
        move_time_s: float = 2.0,
        rate_hz: float = rig.CONTROL_HZ,
        gripper: rig.GripperCalibration = rig.FOLLOWER_GRIPPER,
        owner: str | None = None,
        engage_tolerance: float = 0.1,
        command_timeout_s: float = 0.2,
    ) -> None:
        self.limits = limits
        self.start_pose = np.asarray(start_pose, dtype=float)
        self.sleep_pose = np.asarray(sleep_pose, dtype=float)
        self.move_time_s = float(move_time_s)
        self.dt = 1.0 / float(rate_hz)
        self.gripper = gripper
        # the sources allowed to command (header.frame_id), comma-separated; None = anyone
        self.owners = tuple(o.strip() for o in owner.split(",") if o.strip()) if owner else ()
        self.owner = owner or None
        self.engage_tolerance = float(engage_tolerance)
        self.command_timeout_s = float(command_timeout_s)
        self.limiter = SafetyLimiter(limits, dt=self.dt)
        self.state = "waiting"
        self.measured: np.ndarray | None = None
        self._move: SmoothMove | None = None
        self._braking_then: np.ndarray | None = None  # goal of a move that waits for the arms to stop
        self._engaged = False  # a command stream that started at the arm's position is being followed
        self._last_stamp: float | None = None
        self._last_arrival: float | None = None
        self.commands_in = 0
        self.commands_rejected = 0
        self.rejections: dict[str, int] = {}
        self.last_rejection = ""

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
        self._engaged = False
        self._last_stamp = None
        if state == "moving_to_start" or not self.limiter.seeded:
            # from where the arm is, even outside the limits: the limiter brings it back, never jumps
            self.limiter.reset(self.measured)
        self.state = state
        if not self.limiter.at_rest:  # still moving (e.g. Ctrl-C mid-motion): stop first, then move
            self._move, self._braking_then = None, np.asarray(goal, dtype=float)
            v, a = np.abs(self.limiter.velocity), self.limits.acceleration
            return float((v / a).max()) + move_duration(self.limiter.position, goal, self.limits.velocity, 0.0)
        return self._plan(goal)

    def _plan(self, goal: np.ndarray) -> float:
        start = self.limiter.position
        duration = move_duration(start, goal, self.limits.velocity, self.move_time_s)
        self._move = SmoothMove(start, goal, duration)
        self._braking_then = None
        return duration

    def tick(self, now: float | None = None) -> np.ndarray | None:
        """One control period: the next limited command of a move, a brake, or None (nothing to send)."""
        if self.state in ("moving_to_start", "moving_to_sleep"):
            if self._braking_then is not None:
                cmd = self.limiter.brake()
                if self.limiter.at_rest:
                    self._plan(self._braking_then)
                return cmd
            if self._move is None:
                return None
            cmd = self.limiter.limit(self._move.step(self.dt))
            if self._move.done:
                self._move = None
                self.state = "ready" if self.state == "moving_to_start" else "asleep"
            return cmd
        if (
            self.state == "ready"
            and now is not None
            and self._last_arrival is not None
            and now - self._last_arrival > self.command_timeout_s
        ):
            self._last_stamp = None  # a restarted producer (or a reset sim clock) may start earlier
            if self.limiter.seeded and not self.limiter.at_rest:
                # the producer died mid-motion: bring the arms to rest at the acceleration limit
                return self.limiter.brake()
        return None

    def _refuse(self, kind: str, message: str) -> None:
        self.commands_rejected += 1
        self.rejections[kind] = self.rejections.get(kind, 0) + 1
        self.last_rejection = message

    def command(
        self, target14, stamp: float | None = None, source: str | None = None, now: float | None = None
    ) -> np.ndarray | None:
        """An external 14-D target -> the limited command, or None when refused (see the class doc).

        `stamp` is the command's header time (the producer's clock), `now` its arrival time (for the
        command timeout), `source` its header.frame_id.
        """
        self.commands_in += 1
        if self.state != "ready":
            self._refuse("not_ready", f"driver is {self.state}, not ready")
            return None
        if self.owners and source not in self.owners:
            self._refuse("not_owner", f"command from {source!r}; this mode takes commands from {self.owners} only")
            return None
        target = np.asarray(target14, dtype=float)
        if stamp is not None and not np.isfinite(stamp):
            self._refuse("bad_stamp", "command stamp is not finite")
            return None
        dt = self.dt
        if stamp is not None and self._last_stamp is not None:
            if stamp <= self._last_stamp:
                self._refuse("old_stamp", "command not newer than the previous one (duplicate or reordered)")
                return None
            # the producer's clock says how far apart the commands are meant; arrival times jitter.
            # Never more than one tick: a gap in the stream is not a licence for a bigger step.
            dt = min(max(stamp - self._last_stamp, 0.5 * self.dt), self.dt)
        if not self._engaged:
            if not np.all(np.isfinite(target)):
                self._refuse("nonfinite", "first command contains NaN/inf")
                return None
            gap = float(np.abs(target - self.limiter.position).max())
            if gap > self.engage_tolerance:
                j = int(np.argmax(np.abs(target - self.limiter.position)))
                self._refuse(
                    "not_at_arm",
                    f"command stream starts {gap:.3f} away from the arm ({rig.ACTION_NAMES[j]}; tolerance "
                    f"{self.engage_tolerance}): a producer must start from where the arm is",
                )
                return None
            self._engaged = True
        if stamp is not None:
            self._last_stamp = float(stamp)
        if now is not None:
            self._last_arrival = float(now)
        return self.limiter.limit(target, dt)

    def xs_commands(self, cmd14: np.ndarray) -> list[ArmCommand]:
        return to_xs_commands(cmd14, self.gripper)
