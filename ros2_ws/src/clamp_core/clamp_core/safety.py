"""Last-line joint limiter over 14-D targets (ROS-free: numpy only).

Used by the chunk executor, teleop and the arm driver. Every target passes through
`SafetyLimiter.limit`, which, in this order:

1. rejects a target containing NaN or inf (the whole vector: one bad joint means the producer is
   broken) and holds the previous command instead;
2. clamps positions to the joint range (arm joints, kind ``position``) and the gripper range
   (kind ``gripper``);
3. clamps the per-tick velocity change to the acceleration limit (kind ``acceleration``);
4. clamps the per-tick velocity to the velocity limit (kind ``velocity``).

Velocity is measured between successive *commanded* positions, so the limiter needs the current
position once (`reset`) before the first target: it never jumps from an unknown state. Every
clamp is counted per kind and per joint (`counts`, `counts_by_joint`).

Acceleration limiting brakes ahead of a target (relative to the target's own velocity), so a step
target is approached without overshoot and a rejected target brings a moving arm to rest at the
acceleration limit; a target moving smoothly within the limits is passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from clamp_core import rig

KINDS = ("nonfinite", "position", "gripper", "velocity", "acceleration")
GRIPPER_INDICES = tuple(i for i, n in enumerate(rig.ACTION_NAMES) if n.endswith("_gripper"))  # normalised [0, 1]
ARM_INDICES = tuple(i for i in range(rig.ACTION_DIM) if i not in GRIPPER_INDICES)

# Default acceleration limits: reach the ViperX's full speed (3.14 rad/s) in ~0.1 s, the gripper
# its full speed in 0.05 s. Profiles may override.
DEFAULT_ARM_ACCELERATION = 30.0  # rad/s^2
DEFAULT_GRIPPER_ACCELERATION = 80.0  # normalised units/s^2


class SafetyConfigError(ValueError):
    """A limit profile that cannot be used (wrong length, unknown joint, non-positive limit...)."""


def _vector(value, what: str) -> np.ndarray:
    """A 14-vector from a sequence of 14 numbers, a {ACTION_NAME: value} mapping or a scalar."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(rig.ACTION_NAMES))
        if unknown:
            raise SafetyConfigError(f"{what}: unknown joint(s) {unknown}; expected names from rig.ACTION_NAMES")
        missing = [n for n in rig.ACTION_NAMES if n not in value]
        if missing:
            raise SafetyConfigError(f"{what}: missing joint(s) {missing}; give all 14 of rig.ACTION_NAMES")
        value = [value[n] for n in rig.ACTION_NAMES]
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(rig.ACTION_DIM, float(arr))
    if arr.shape != (rig.ACTION_DIM,):
        raise SafetyConfigError(
            f"{what}: expected {rig.ACTION_DIM} values in rig.ACTION_NAMES order, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise SafetyConfigError(f"{what}: contains NaN or inf: {arr.tolist()}")
    return arr


@dataclass(frozen=True)
class SafetyLimits:
    """Per-joint limits over the 14-D action layout (rad, rad/s, rad/s^2; gripper normalised)."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray

    def __post_init__(self) -> None:
        for name in ("lower", "upper", "velocity", "acceleration"):
            object.__setattr__(self, name, _vector(getattr(self, name), name))
        bad = [rig.ACTION_NAMES[i] for i in np.flatnonzero(self.lower >= self.upper)]
        if bad:
            raise SafetyConfigError(f"lower >= upper for {bad}; fix the position limits in the profile")
        for name in ("velocity", "acceleration"):
            bad = [rig.ACTION_NAMES[i] for i in np.flatnonzero(getattr(self, name) <= 0)]
            if bad:
                raise SafetyConfigError(f"{name} limit must be > 0 for {bad}")
        g = list(GRIPPER_INDICES)
        if np.any(self.lower[g] < 0.0) or np.any(self.upper[g] > 1.0):
            raise SafetyConfigError(
                f"gripper range must lie within the normalised [0, 1], got "
                f"{self.lower[g].tolist()}..{self.upper[g].tolist()}"
            )

    @classmethod
    def from_joint_limits(
        cls,
        limits: rig.JointLimits = rig.VX300S_LIMITS,
        acceleration=None,
        gripper_range: Sequence[float] | None = None,
    ) -> SafetyLimits:
        """From rig.JointLimits (default: the ViperX 300 6DOF) plus acceleration limits."""
        if acceleration is None:
            acceleration = np.full(rig.ACTION_DIM, DEFAULT_ARM_ACCELERATION)
            acceleration[list(GRIPPER_INDICES)] = DEFAULT_GRIPPER_ACCELERATION
        lower, upper = np.array(limits.lower, dtype=float), np.array(limits.upper, dtype=float)
        if gripper_range is not None:
            lo, hi = _gripper_range(gripper_range)
            lower[list(GRIPPER_INDICES)], upper[list(GRIPPER_INDICES)] = lo, hi
        return cls(lower, upper, np.array(limits.velocity, dtype=float), _vector(acceleration, "acceleration"))

    @classmethod
    def from_profile(cls, profile: Mapping | None) -> SafetyLimits:
        """From a robot-profile mapping (e.g. a `limits:` section loaded with yaml.safe_load).

        Keys (all optional; missing ones default to rig.VX300S_LIMITS and the default accelerations):
        ``lower``, ``upper``, ``velocity``, ``acceleration`` (14 numbers, a {ACTION_NAME: value}
        mapping or one number for all joints), ``gripper_range`` ([lo, hi] within [0, 1]) and
        ``margin`` (rad kept clear of each arm joint's lower and upper limit; one number, 14 values or
        a mapping; gripper entries are ignored: use gripper_range).
        """
        profile = dict(profile or {})
        allowed = {"lower", "upper", "velocity", "acceleration", "gripper_range", "margin"}
        unknown = sorted(set(profile) - allowed)
        if unknown:
            raise SafetyConfigError(f"unknown limit key(s) {unknown}; allowed: {sorted(allowed)}")
        base = cls.from_joint_limits(acceleration=profile.get("acceleration"))
        lower = _vector(profile.get("lower", base.lower), "lower").copy()
        upper = _vector(profile.get("upper", base.upper), "upper").copy()
        if "gripper_range" in profile:
            lo, hi = _gripper_range(profile["gripper_range"])
            lower[list(GRIPPER_INDICES)], upper[list(GRIPPER_INDICES)] = lo, hi
        if "margin" in profile:
            # the servos' hard limits are where they stop with a thump: keep the commands clear of them
            margin = _vector(profile["margin"], "margin")
            if np.any(margin < 0):
                raise SafetyConfigError(f"margin must be >= 0 rad, got {margin.tolist()}")
            arm = list(ARM_INDICES)
            lower[arm] += margin[arm]
            upper[arm] -= margin[arm]
            bad = [rig.ACTION_NAMES[i] for i in arm if lower[i] >= upper[i]]
            if bad:
                raise SafetyConfigError(f"margin leaves no range for {bad}; use a smaller margin")
        return cls(lower, upper, profile.get("velocity", base.velocity), base.acceleration)


def _gripper_range(value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise SafetyConfigError(f"gripper_range must be [lo, hi] within [0, 1], got {value!r}") from exc
    if not (0.0 <= lo < hi <= 1.0):
        raise SafetyConfigError(f"gripper_range must satisfy 0 <= lo < hi <= 1, got [{lo}, {hi}]")
    return lo, hi


@dataclass
class LimitEvent:
    """What the last `limit` call did: per kind, a boolean mask over the 14 joints."""

    rejected: bool = False
    clamped: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return self.rejected or any(m.any() for m in self.clamped.values())


class SafetyLimiter:
    """Stateful limiter: position, velocity and acceleration clamps over successive 14-D commands."""

    def __init__(self, limits: SafetyLimits | None = None, dt: float = 1.0 / rig.CONTROL_HZ) -> None:
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        self.limits = limits if limits is not None else SafetyLimits.from_joint_limits()
        self.dt = float(dt)
        self.counts: dict[str, np.ndarray] = {k: np.zeros(rig.ACTION_DIM, dtype=np.int64) for k in KINDS}
        self.last_event = LimitEvent()
        self._position: np.ndarray | None = None
        self._target = np.zeros(rig.ACTION_DIM)  # last accepted (clipped) target, for its velocity
        self._velocity = np.zeros(rig.ACTION_DIM)

    # ------------------------------------------------------------------------------------- state
    @property
    def seeded(self) -> bool:
        return self._position is not None

    @property
    def position(self) -> np.ndarray:
        """The last commanded (limited) position."""
        if self._position is None:
            raise RuntimeError("SafetyLimiter has no position yet: call reset(current_position) first")
        return self._position.copy()

    @property
    def velocity(self) -> np.ndarray:
        return self._velocity.copy()

    def reset(self, position, velocity=None) -> None:
        """Seed with the measured position (e.g. from follower joint states); velocity defaults to 0.

        The position is taken as is (clipped into range only for later targets): the arm is where it is.
        """
        pos = np.asarray(position, dtype=float)
        if pos.shape != (rig.ACTION_DIM,) or not np.all(np.isfinite(pos)):
            raise ValueError(f"reset needs a finite 14-D position (rig.ACTION_NAMES order), got {pos!r}")
        self._position = pos.copy()
        self._target = pos.copy()
        self._velocity = np.zeros(rig.ACTION_DIM) if velocity is None else np.asarray(velocity, float).copy()
        if self._velocity.shape != (rig.ACTION_DIM,) or not np.all(np.isfinite(self._velocity)):
            raise ValueError(f"reset needs a finite 14-D velocity, got {velocity!r}")

    # ----------------------------------------------------------------------------------- limiting
    def limit(self, target, dt: float | None = None) -> np.ndarray:
        """Return the safe command for `target` (14-D, rig.ACTION_NAMES order) one tick of `dt` later."""
        if self._position is None:
            raise RuntimeError("SafetyLimiter.limit before reset(): seed it with the measured joint positions")
        dt = self.dt if dt is None else float(dt)
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        lim = self.limits
        event = LimitEvent()
        tgt = np.asarray(target, dtype=float)
        if tgt.shape != (rig.ACTION_DIM,):
            raise ValueError(f"target must have {rig.ACTION_DIM} values (rig.ACTION_NAMES order), got {tgt.shape}")

        bad = ~np.isfinite(tgt)
        if bad.any():
            event.rejected = True
            event.clamped["nonfinite"] = bad
            tgt = self._position.copy()  # hold (see the stop below)

        clipped = np.clip(tgt, lim.lower, lim.upper)
        moved = clipped != tgt
        arm_mask = np.zeros(rig.ACTION_DIM, dtype=bool)
        arm_mask[list(ARM_INDICES)] = True
        event.clamped["position"] = moved & arm_mask
        event.clamped["gripper"] = moved & ~arm_mask

        gap = clipped - self._position
        v_des = gap / dt
        if event.rejected:
            # Stop: the acceleration clamp below brings a moving arm to rest at max deceleration.
            v_des = v_br = np.zeros(rig.ACTION_DIM)
        else:
            # Braking: relative to the target's own motion, approach no faster than the arm can stop
            # within the remaining gap (sqrt(2 a d)), so a step target is reached without overshoot,
            # while a target moving smoothly within the limits is tracked exactly (relative speed 0).
            v_target = (clipped - self._target) / dt
            a = lim.acceleration  # after this tick's move, the rest of the gap must cover v^2 / 2a
            v_brake = np.sqrt((a * dt) ** 2 + 2.0 * a * np.abs(gap)) - a * dt
            v_br = np.clip(v_des - v_target, -v_brake, v_brake) + v_target
        dv = lim.acceleration * dt
        v_acc = np.clip(v_br, self._velocity - dv, self._velocity + dv)
        event.clamped["acceleration"] = np.abs(v_acc - v_des) > 1e-9 * (1.0 + np.abs(v_des))
        v = np.clip(v_acc, -lim.velocity, lim.velocity)
        event.clamped["velocity"] = v != v_acc

        out = self._position + v * dt
        # A rate-limited stop may coast past a range limit; never command outside it. An arm that
        # starts outside the range (seeded there by `reset`) is brought back at the limits, never
        # made to jump to the boundary: it may stay where it is but not move further out.
        lo, hi = np.minimum(lim.lower, self._position), np.maximum(lim.upper, self._position)
        over = (out < lo) | (out > hi)
        if over.any():
            out = np.clip(out, lo, hi)
            event.clamped["position"] |= over & arm_mask
            event.clamped["gripper"] |= over & ~arm_mask
            v = (out - self._position) / dt

        for kind, mask in event.clamped.items():
            self.counts[kind] += mask
        self._position, self._velocity = out, v
        if not event.rejected:
            self._target = clipped
        self.last_event = event
        return out.copy()

    def brake(self, dt: float | None = None) -> np.ndarray:
        """One tick of a controlled stop: decelerate every joint at its acceleration limit, then rest.

        For a command stream that stopped (no target to follow): the arm comes to rest smoothly from
        its last commanded velocity instead of halting within one tick.
        """
        if self._position is None:
            raise RuntimeError("SafetyLimiter.brake before reset(): seed it with the measured joint positions")
        dt = self.dt if dt is None else float(dt)
        lim = self.limits
        speed = np.maximum(np.abs(self._velocity) - lim.acceleration * dt, 0.0)
        v = np.sign(self._velocity) * np.minimum(speed, lim.velocity)
        out = self._position + v * dt
        lo, hi = np.minimum(lim.lower, self._position), np.maximum(lim.upper, self._position)
        out = np.clip(out, lo, hi)
        self._velocity = (out - self._position) / dt
        self._position = out
        self._target = out.copy()
        self.last_event = LimitEvent()
        return out.copy()

    @property
    def at_rest(self) -> bool:
        return self._position is not None and not np.any(self._velocity)

    # ------------------------------------------------------------------------------------ counters
    def total(self, kind: str | None = None) -> int:
        if kind is None:
            return int(sum(c.sum() for c in self.counts.values()))
        if kind not in self.counts:
            raise KeyError(f"unknown clamp kind {kind!r}; kinds: {KINDS}")
        return int(self.counts[kind].sum())

    def counts_by_joint(self, nonzero_only: bool = True) -> dict[str, dict[str, int]]:
        """{kind: {joint name: count}}; e.g. for diagnostics."""
        out = {}
        for kind, c in self.counts.items():
            per = {rig.ACTION_NAMES[i]: int(n) for i, n in enumerate(c) if n or not nonzero_only}
            if per or not nonzero_only:
                out[kind] = per
        return out

    def reset_counts(self) -> None:
        for c in self.counts.values():
            c[:] = 0


# --------------------------------------------------------------------------------- workspace
@dataclass(frozen=True)
class WorkspaceGuard:
    """Cartesian last check (forward kinematics, clamp_core.world): grippers above the table, apart.

    `violation(action14)` names what a 14-D command would hit, or returns "". Joint limits cannot
    express either: a pose inside every joint range can still put the fingers into the table or into
    the other arm. Callers hold (stop where they are) rather than clamp into a collision.
    """

    table_clearance_m: float = 0.0  # profiles on real tables add a centimetre
    min_gripper_distance_m: float = 0.03  # transfer_cube's scripted handover: 5.4-5.7 cm

    LINKS = ("gripper_link", "ee_gripper_link")

    @classmethod
    def from_profile(cls, section: Mapping | None) -> WorkspaceGuard:
        section = dict(section or {})
        allowed = {"table_clearance_m", "min_gripper_distance_m"}
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise SafetyConfigError(f"unknown workspace key(s) {unknown}; allowed: {sorted(allowed)}")
        guard = cls(**{k: float(v) for k, v in section.items()})
        if guard.min_gripper_distance_m < 0:
            raise SafetyConfigError("workspace.min_gripper_distance_m must be >= 0")
        return guard

    def points(self, action14) -> dict[str, np.ndarray]:
        """World positions of the guarded links of each follower: {arm: (len(LINKS), 3)}."""
        from clamp_core import world

        a = np.asarray(action14, dtype=float)
        out = {}
        for i, arm in enumerate(rig.FOLLOWERS):
            base = world.base_matrix(arm)
            poses = world.arm_fk_links(a[7 * i : 7 * i + 6], self.LINKS)
            out[arm] = np.array([base[:3, :3] @ poses[link][:3, 3] + base[:3, 3] for link in self.LINKS])
        return out

    def gripper_distance(self, points: dict[str, np.ndarray]) -> float:
        """Closest distance (m) between the two followers' guarded links, from `points(action14)`."""
        left, right = (points[arm] for arm in rig.FOLLOWERS)
        return float(np.linalg.norm(left[:, None, :] - right[None, :, :], axis=-1).min())

    def violation(self, action14) -> str:
        a = np.asarray(action14, dtype=float)
        if a.shape != (rig.ACTION_DIM,) or not np.all(np.isfinite(a)):
            return "command is not 14 finite values"
        from clamp_core import world

        pts = self.points(a)
        floor = world.TABLE_HEIGHT + self.table_clearance_m
        for arm, p in pts.items():
            low = int(np.argmin(p[:, 2]))
            if p[low, 2] < floor:
                z = p[low, 2]
                return f"{arm} {self.LINKS[low]} would be at z = {z:.3f} m, below the table clearance {floor:.3f} m"
        d = self.gripper_distance(pts)
        if d < self.min_gripper_distance_m:
            return f"the grippers would be {d:.3f} m apart (< {self.min_gripper_distance_m} m)"
        return ""
