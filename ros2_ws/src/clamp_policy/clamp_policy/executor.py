"""50 Hz action-chunk execution (ROS-free: numpy only). The node (executor_node.py) only adapts topics.

Time model (Diffusion Policy's real-robot loop): a chunk's point i is meant for time
``stamp + time_from_start[i]``, where ``stamp`` is the observation time the policy saw. A tick at
time ``now`` commands the chunk at ``now + exec_latency_s`` (when the command takes effect), linearly
interpolated between points; points whose time has passed when the chunk arrives (the inference
latency) are dropped, never replayed late. All times are seconds on one clock (ROS time, which is
sim time in simulation).

Transitions between commanded trajectories never jump: a new chunk is cross-faded in over
``blend_s``; with temporal ensembling (ACT) overlapping chunks are averaged with weights
exp(-k * age in control steps) (older predictions weigh more, as in ACT) and a new chunk's weight
is faded in over ``blend_s``. Everything passes a `SafetyLimiter` (position, gripper, velocity,
acceleration) last.

It takes over the arms only while the arm driver reports "ready" (when it reports at all) and the
arms are at rest. Watchdog: stale follower joint states, a chunk computed from a stale
observation, no fresh chunk within ``chunk_timeout_s`` (or the active chunk running out), a chunk
with NaN/inf or a bad shape, arms that do not follow the commands, or the driver leaving "ready"
-> HOLD: a controlled stop at the acceleration limit from the last command, then the position is
held. HOLD for ``safe_after_s`` -> SAFE: latched (ignores chunks until `rearm()`),
holding or moving slowly to ``safe_pose`` when one is configured. A valid fresh chunk ends a HOLD.
"""

from __future__ import annotations

import enum
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from clamp_core import rig
from clamp_core.safety import GRIPPER_INDICES, SafetyLimiter, SafetyLimits, WorkspaceGuard


class ExecState(str, enum.Enum):
    IDLE = "idle"  # no chunk yet (or re-armed): nothing is commanded
    RUNNING = "running"
    HOLD = "hold"
    SAFE = "safe"


@dataclass
class ExecutorConfig:
    control_hz: float = rig.CONTROL_HZ
    exec_latency_s: float = 0.0  # a command takes effect this long after its tick
    blend_s: float = 0.1  # cross-fade into a new chunk (5 ticks at 50 Hz); 0 = switch
    temporal_ensembling: bool = False
    ensemble_k: float = 0.01  # ACT's exponential weight per control step of chunk age
    chunk_timeout_s: float = 1.0  # newest chunk's observation older than this -> HOLD
    max_obs_age_s: float = 0.5  # a chunk whose observation is older on arrival is stale -> HOLD
    # a chunk stamped later than now + this is from a clock ahead of ours: rejected (it would make
    # every later chunk "out of order" and its age negative, so the watchdog never fires)
    max_future_s: float = 0.05
    state_timeout_s: float = 0.25  # follower joint states older than this -> HOLD
    safe_after_s: float = 2.0  # HOLD this long -> SAFE (latched until rearm)
    safe_pose: Sequence[float] | None = None  # 14-D rest pose to move to in SAFE; None = stay
    safe_speed: float = 0.3  # rad/s (gripper units/s) towards safe_pose
    # never take over a moving arm (e.g. the driver's move to the start pose): start only when the
    # joint states of the last settle_s agree within settle_tolerance (rad / gripper units)
    settle_s: float = 0.2
    settle_tolerance: float = 0.01
    # following error: the measured arm joints (not the grippers, which stop on what they grasp) vs the
    # command `following_lag_s` earlier; above max_following_error (rad) for following_timeout_s -> HOLD
    # (blocked arm, driver not listening).
    # 0 = off. Wide by default: it catches arms that do not follow at all, not tracking lag.
    # scale the profile's velocity and acceleration limits (e.g. 0.3 for a first run on a new robot)
    velocity_scale: float = 1.0
    max_following_error: float = 0.5
    following_lag_s: float = 0.1
    following_timeout_s: float = 0.5

    def validate(self) -> ExecutorConfig:
        if not self.control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {self.control_hz}")
        for name in (
            "exec_latency_s",
            "blend_s",
            "ensemble_k",
            "settle_s",
            "settle_tolerance",
            "max_following_error",
            "following_lag_s",
            "following_timeout_s",
            "max_future_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.velocity_scale <= 1:
            raise ValueError(f"velocity_scale must be in (0, 1], got {self.velocity_scale}")
        for name in ("chunk_timeout_s", "max_obs_age_s", "state_timeout_s", "safe_after_s", "safe_speed"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.safe_pose is not None:
            pose = np.asarray(self.safe_pose, dtype=float)
            if pose.shape != (rig.ACTION_DIM,) or not np.all(np.isfinite(pose)):
                raise ValueError(f"safe_pose must be 14 finite values in rig.ACTION_NAMES order, got {self.safe_pose}")
        return self

    @property
    def dt(self) -> float:
        return 1.0 / self.control_hz


class ChunkError(ValueError):
    """A chunk that cannot be executed as sent (names, shapes, times)."""


@dataclass(frozen=True)
class Chunk:
    stamp: float  # observation time
    times: np.ndarray  # (N,) absolute times of the points
    positions: np.ndarray  # (N, 14), rig.ACTION_NAMES order

    @property
    def end(self) -> float:
        return float(self.times[-1])

    def sample(self, t: float) -> np.ndarray:
        """Linear interpolation at time t; before the first / after the last point: that point."""
        times = self.times
        if t <= times[0]:
            return self.positions[0].copy()
        if t >= times[-1]:
            return self.positions[-1].copy()
        i = int(np.searchsorted(times, t, side="right"))  # times[i-1] <= t < times[i]
        w = (t - times[i - 1]) / (times[i] - times[i - 1])
        return (1.0 - w) * self.positions[i - 1] + w * self.positions[i]


def make_chunk(
    stamp: float,
    time_from_start: Sequence[float],
    positions,
    names: Sequence[str] = rig.ACTION_NAMES,
) -> Chunk:
    """Validate and reorder a chunk; NaN/inf are kept (the executor rejects them and holds)."""
    names = list(names)
    if sorted(names) != sorted(rig.ACTION_NAMES) or len(names) != rig.ACTION_DIM:
        raise ChunkError(f"joint names {names} are not a permutation of rig.ACTION_NAMES {list(rig.ACTION_NAMES)}")
    pos = np.asarray(positions, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != rig.ACTION_DIM or pos.shape[0] < 1:
        raise ChunkError(f"chunk positions must be (N >= 1, {rig.ACTION_DIM}); got shape {pos.shape}")
    if not math.isfinite(float(stamp)):
        raise ChunkError(f"chunk stamp (observation time) must be finite, got {stamp}")
    tfs = np.asarray(time_from_start, dtype=float)
    if tfs.shape != (pos.shape[0],):
        raise ChunkError(f"{tfs.size} time_from_start values for {pos.shape[0]} points")
    if not np.all(np.isfinite(tfs)) or np.any(np.diff(tfs) <= 0):
        raise ChunkError("time_from_start must be finite and strictly increasing")
    order = [names.index(n) for n in rig.ACTION_NAMES]
    return Chunk(float(stamp), float(stamp) + tfs, pos[:, order])


# -------------------------------------------------------------------------------------- sources
class _Const:
    def __init__(self, p: np.ndarray) -> None:
        self.p = np.array(p, dtype=float)

    def sample(self, t: float) -> np.ndarray:
        return self.p.copy()


class _Stop:
    """Controlled stop from (p0, v0) at time t0 with per-joint deceleration, then hold."""

    def __init__(self, p0: np.ndarray, v0: np.ndarray, decel: np.ndarray, t0: float) -> None:
        self.p0, self.v0, self.decel, self.t0 = p0.copy(), v0.copy(), decel.copy(), t0
        self.t_stop = np.abs(v0) / decel

    def sample(self, t: float) -> np.ndarray:
        tau = np.minimum(max(t - self.t0, 0.0), self.t_stop)
        return self.p0 + self.v0 * tau - 0.5 * np.sign(self.v0) * self.decel * tau**2


class _MoveTo:
    """Straight line from `start` to `goal` at `speed` (slowest joint sets the duration)."""

    def __init__(self, start_source, goal: np.ndarray, speed: float, t0: float) -> None:
        self.start = start_source.sample(t0)
        self.goal = np.asarray(goal, dtype=float)
        self.t0 = t0
        self.duration = max(float(np.max(np.abs(self.goal - self.start))) / speed, 1e-9)

    def sample(self, t: float) -> np.ndarray:
        a = min(max((t - self.t0) / self.duration, 0.0), 1.0)
        return self.start + a * (self.goal - self.start)


class _ChunkSource:
    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk

    def sample(self, t: float) -> np.ndarray:
        return self.chunk.sample(t)


class _Blend:
    """Linear cross-fade from source a to source b over [t0, t0 + duration]."""

    def __init__(self, a, b, t0: float, duration: float, dt: float) -> None:
        self.a, self.b, self.t0, self.duration, self.dt = a, b, t0, duration, dt

    def alpha(self, t: float) -> float:
        if self.duration <= 0:
            return 1.0
        # the first tick at t0 already moves 1/N of the way, the N-th tick is fully on b
        return min(max((t - self.t0 + self.dt) / self.duration, 0.0), 1.0)

    def done(self, t: float) -> bool:
        return self.alpha(t) >= 1.0

    def sample(self, t: float) -> np.ndarray:
        a = self.alpha(t)
        if a >= 1.0:
            return self.b.sample(t)
        return (1.0 - a) * self.a.sample(t) + a * self.b.sample(t)


class _Ensemble:
    """ACT temporal ensembling over the chunks that cover t; new members fade in."""

    def __init__(self, k: float, hz: float, fade_s: float, dt: float) -> None:
        self.k, self.hz, self.fade_s, self.dt = k, hz, fade_s, dt
        self.members: list[tuple[Chunk, float]] = []  # (chunk, time added)

    def add(self, chunk: Chunk, t_added: float) -> None:
        self.members.append((chunk, t_added))

    @property
    def end(self) -> float:
        return max(c.end for c, _ in self.members)

    def sample(self, t: float) -> np.ndarray:
        live = [(c, ta) for c, ta in self.members if c.end >= t]
        if not live:  # all ran out: the newest one's last point (the watchdog holds soon)
            return self.members[-1][0].positions[-1].copy()
        self.members = live  # forget chunks that ended
        oldest = live[0][0].stamp
        acc = np.zeros(rig.ACTION_DIM)
        total = 0.0
        for c, ta in live:
            w = math.exp(-self.k * (c.stamp - oldest) * self.hz)
            if self.fade_s > 0 and len(live) > 1:
                w *= min(max((t - ta + self.dt) / self.fade_s, 0.0), 1.0)
            acc += w * c.sample(t)
            total += w
        if total <= 0.0:  # only fading-in members at their first instant cannot happen; be safe
            return live[0][0].sample(t)
        return acc / total


# ------------------------------------------------------------------------------------- executor
@dataclass
class SubmitResult:
    accepted: bool
    reason: str = ""
    dropped: int = 0  # points whose time had passed on arrival


class ChunkExecutor:
    """Feed it joint states (`update_state`) and chunks (`submit`); call `tick(now)` at control_hz.

    Not thread-safe: the node serialises calls with a lock.
    """

    def __init__(
        self,
        config: ExecutorConfig | None = None,
        limits: SafetyLimits | None = None,
        guard: WorkspaceGuard | None = None,
    ) -> None:
        self.config = (config or ExecutorConfig()).validate()
        self.guard = guard  # Cartesian last check: grippers above the table and apart (None = off)
        limits = limits if limits is not None else SafetyLimits.from_joint_limits()
        if self.config.velocity_scale < 1:
            s = self.config.velocity_scale
            limits = SafetyLimits(limits.lower, limits.upper, limits.velocity * s, limits.acceleration * s)
        self.limiter = SafetyLimiter(limits, dt=self.config.dt)
        self.state = ExecState.IDLE
        self.reason = "waiting for joint states"
        self._state_pos: np.ndarray | None = None
        self._state_stamp = -math.inf
        self._recent: deque[tuple[float, np.ndarray]] = deque(maxlen=400)  # for the settle check
        self._sent: deque[tuple[float, np.ndarray]] = deque(maxlen=100)  # (tick time, command)
        self._following_since: float | None = None
        self.following_error = 0.0
        self.driver_state: str | None = None  # None: no driver state known, no gating
        self._source = None
        self._ensemble: _Ensemble | None = None
        self._newest: Chunk | None = None  # newest accepted chunk
        self._pending = False  # a chunk accepted since the last (re)start
        self._hold_since = math.nan
        self._run_since = math.inf
        self._last_t_cmd = math.nan
        self._last_now = -math.inf  # the previous tick's time: a step back is a clock jump
        self._disengaged = False  # the driver left "ready" under us: restart from the measured pose
        self.clock_jumps = 0
        self.ticks = 0
        self.commands = 0
        self.chunks_accepted = 0
        self.rejections: Counter[str] = Counter()
        self.dropped_total = 0
        self.last_dropped = 0
        self.holds = 0
        self.safe_entries = 0
        self.warnings: list[str] = []  # new warnings since the last `pop_warnings`

    # --------------------------------------------------------------------------------- inputs
    def update_state(self, position, stamp: float) -> None:
        """Measured follower state (14-D, rig layout) with its measurement time."""
        pos = np.array(position, dtype=float)  # a copy: callers may reuse their array
        if pos.shape != (rig.ACTION_DIM,):
            raise ValueError(f"state must be 14-D (rig.ACTION_NAMES order), got {pos.shape}")
        if not np.all(np.isfinite(pos)):
            self._warn("follower joint states contain NaN/inf; ignored")
            return
        self._state_pos, self._state_stamp = pos, float(stamp)
        self._recent.append((float(stamp), pos))
        if self.state == ExecState.IDLE:
            self.limiter.reset(pos)  # start from where the arm is
            if self.reason == "waiting for joint states":
                self.reason = "waiting for a chunk"

    def update_driver_state(self, state: str | None) -> None:
        """The arm driver's state (rig.DRIVER_STATE_TOPIC); chunks run only while it is "ready"."""
        self.driver_state = state

    def submit(self, chunk: Chunk | None, now: float, error: str = "") -> SubmitResult:
        """Offer a chunk received at `now`. A `None` chunk with `error` records a malformed message."""
        cfg = self.config
        if chunk is None:
            return self._reject("malformed", f"malformed chunk rejected: {error}", hold=True, now=now)
        if self.state == ExecState.SAFE:
            return self._reject("safe_latched", "in SAFE state: chunk ignored until rearm()", hold=False, now=now)
        if not math.isfinite(chunk.stamp) or not math.isfinite(now):
            return self._reject("bad_stamp", f"chunk stamp {chunk.stamp} / time {now} not finite", hold=True, now=now)
        if chunk.stamp > now + cfg.max_future_s:
            return self._reject(
                "future",
                f"chunk stamped {chunk.stamp - now:.3f} s in the future rejected (policy and executor clocks "
                "disagree: same use_sim_time on both?)",
                hold=True,
                now=now,
            )
        if not np.all(np.isfinite(chunk.positions)):
            bad = sorted({rig.ACTION_NAMES[j] for j in np.argwhere(~np.isfinite(chunk.positions))[:, 1]})
            return self._reject("nonfinite", f"chunk with NaN/inf in {bad} rejected", hold=True, now=now)
        if self.guard is not None:
            for k in sorted({*range(0, len(chunk.positions), 2), len(chunk.positions) - 1}):
                why = self.guard.violation(chunk.positions[k])
                if why:
                    return self._reject("workspace", f"chunk rejected at point {k}: {why}", hold=True, now=now)
        age = now - chunk.stamp
        if age > cfg.max_obs_age_s:
            return self._reject(
                "stale", f"chunk from a stale observation rejected (age {age:.3f} s > {cfg.max_obs_age_s} s)", True, now
            )
        if self._newest is not None and chunk.stamp <= self._newest.stamp:
            return self._reject("out_of_order", "chunk not newer than the active one ignored", hold=False, now=now)
        t_cmd = now + cfg.exec_latency_s
        if chunk.end < t_cmd:
            return self._reject("expired", "chunk whose every point has passed rejected", hold=True, now=now)
        dropped = int(np.count_nonzero(chunk.times < t_cmd - 1e-9))
        self.chunks_accepted += 1
        self.dropped_total += dropped
        self.last_dropped = dropped
        self._newest = chunk
        if self.state == ExecState.RUNNING:
            if self._ensemble is not None:
                self._ensemble.add(chunk, t_cmd)
            else:
                self._source = self._blend_to(_ChunkSource(chunk), t_cmd)
        else:
            self._pending = True  # the next tick starts it (if the joint states are fresh)
        return SubmitResult(True, "", dropped)

    def rearm(self) -> None:
        """Leave SAFE (operator action): forget chunks, start again from the measured state."""
        self.state = ExecState.IDLE
        self.reason = "re-armed; waiting for a chunk"
        self._source = self._ensemble = self._newest = None
        self._pending = False
        if self._state_pos is not None:
            self.limiter.reset(self._state_pos)

    # ----------------------------------------------------------------------------------- tick
    def tick(self, now: float) -> np.ndarray | None:
        """The 14-D command for this tick, or None when nothing should be commanded (IDLE)."""
        cfg = self.config
        self.ticks += 1
        if not math.isfinite(now):
            raise ValueError(f"tick time must be finite, got {now}")
        if now < self._last_now - 1e-9:
            self._clock_jumped(now)
        self._last_now = now
        t_cmd = now + cfg.exec_latency_s
        # (a state may be stamped a little after the tick time: ticks run on the control grid; one from
        # far ahead is from another clock)
        state_fresh = abs(now - self._state_stamp) <= cfg.state_timeout_s

        driver_ready = self.driver_state in (None, "ready")
        if not driver_ready and self.state in (ExecState.RUNNING, ExecState.HOLD, ExecState.SAFE):
            # The driver does not take commands now (restarting, moving to its start pose): stop
            # commanding. When it is back, hold where the arm is then, never the pose from before.
            if self.state == ExecState.RUNNING:
                self._hold(t_cmd, f"arm driver is {self.driver_state}, not ready")
            self._disengaged = True
            self.reason = f"arm driver is {self.driver_state}: not commanding"
            if self.state == ExecState.HOLD and now - self._hold_since > cfg.safe_after_s:
                self._enter_safe(t_cmd)
            return None
        if self._disengaged:
            if self._state_pos is None or not state_fresh:
                return None
            self._disengaged = False
            self.limiter.reset(self._state_pos)
            self._source = _Const(self._state_pos)
            self._last_t_cmd = math.nan
        if self.state == ExecState.HOLD and self._pending and state_fresh and driver_ready:
            self._start(t_cmd)
        elif self.state == ExecState.IDLE and self._pending and state_fresh:
            if not driver_ready:
                self.reason = f"waiting for the arm driver ({self.driver_state}) to be ready"
            elif self._settled(now):
                self._start(t_cmd)
            else:
                self.reason = "waiting for the arms to stop moving before taking over"
        if self.state == ExecState.RUNNING:
            following = self._following_error(now)
            if not driver_ready:
                self._hold(t_cmd, f"arm driver is {self.driver_state}, not ready")
            elif following:
                self._hold(t_cmd, following)
            elif not state_fresh:
                self._hold(t_cmd, f"stale follower joint states (age {now - self._state_stamp:.3f} s)")
            elif now - self._newest.stamp > cfg.chunk_timeout_s:
                self._hold(t_cmd, f"no fresh chunk for {now - self._newest.stamp:.3f} s")
            elif t_cmd > self._active_end() + cfg.dt:
                self._hold(t_cmd, "active chunk ran out")
        if self.state == ExecState.HOLD and now - self._hold_since > cfg.safe_after_s:
            self._enter_safe(t_cmd)
        if self.state == ExecState.IDLE:
            return None
        if self.state == ExecState.SAFE and self._safe_done(t_cmd):
            return None  # stopped (and at safe_pose if any): SAFE commands nothing until rearm()

        target = self._source.sample(t_cmd)
        if isinstance(self._source, _Blend) and self._source.done(t_cmd):
            self._source = self._source.b  # collapse finished blends
        previous = self.limiter.position
        out = self.limiter.limit(target)
        if self.guard is not None:
            why = self.guard.violation(out)
            if why and not self.guard.violation(previous):
                # hold where the arm is rather than clamp into a collision (a stop would coast into it)
                self.limiter.reset(previous)
                out = previous
                self._hold(t_cmd, f"workspace guard: {why}")
                self._source = _Const(previous)
        self._last_t_cmd = t_cmd
        self._sent.append((t_cmd, out))
        self.commands += 1
        return out

    # ------------------------------------------------------------------------------- internals
    def _safe_done(self, t_cmd: float) -> bool:
        if not self.limiter.seeded or self._source is None:
            return True
        if not self.limiter.at_rest:
            return False
        goal = self._source.sample(t_cmd + 1.0)  # where the source is heading
        return bool(np.abs(goal - self.limiter.position).max() < 1e-9)

    def _clock_jumped(self, now: float) -> None:
        """Time went backwards (sim reset, bag loop): every stored time is from another time line."""
        self.clock_jumps += 1
        self._warn(f"clock jumped back from {self._last_now:.3f} s to {now:.3f} s: chunks and states forgotten")
        self._newest = None
        self._ensemble = None
        self._pending = False
        self._state_stamp = -math.inf
        self._recent.clear()
        self._sent.clear()
        self._last_t_cmd = math.nan
        self._run_since = math.inf
        if self.state in (ExecState.RUNNING, ExecState.HOLD):
            # keep still at the last command (a stop on the old time line would replay its past)
            self.state = ExecState.HOLD
            self.holds += 1
            self.reason = "clock jumped back"
            self._hold_since = now
            if self.limiter.seeded:
                self.limiter.reset(self.limiter.position, self.limiter.velocity)
                self._source = _Stop(
                    self.limiter.position, self.limiter.velocity, self.limiter.limits.acceleration, now
                )
        elif self.state == ExecState.SAFE and self.limiter.seeded:
            self._source = _Const(self.limiter.position)

    def _settled(self, now: float) -> bool:
        cfg = self.config
        while self._recent and self._recent[0][0] < now - cfg.settle_s:
            self._recent.popleft()
        if len(self._recent) < 2:
            return True
        window = np.array([p for _, p in self._recent])
        return float(np.ptp(window, axis=0).max()) <= cfg.settle_tolerance

    def _following_error(self, now: float) -> str:
        """A HOLD reason when the arms have not followed the commands for following_timeout_s."""
        cfg = self.config
        if cfg.max_following_error <= 0 or self._state_pos is None:
            return ""
        t_ref = self._state_stamp - cfg.following_lag_s
        ref = None
        for t, cmd in reversed(self._sent):  # the command that should have been reached by now
            if t <= t_ref + 1e-9:
                ref = cmd
                break
        if ref is None or t_ref < self._run_since:
            self._following_since = None
            return ""
        # arm joints only: a gripper closed on an object is blocked by design (ALOHA's follower grippers
        # squeeze under a current limit), and holding there dropped every grasped cube 0.5 s later
        err = np.abs(self._state_pos - ref)
        err[list(GRIPPER_INDICES)] = 0.0
        self.following_error = float(err.max())
        if self.following_error <= cfg.max_following_error:
            self._following_since = None
            return ""
        if self._following_since is None:
            self._following_since = now
        if now - self._following_since < cfg.following_timeout_s:
            return ""
        j = int(np.argmax(err))
        return (
            f"the arms do not follow the commands: {rig.ACTION_NAMES[j]} is {err[j]:.2f} rad from its command "
            f"(> {cfg.max_following_error}) for {now - self._following_since:.2f} s; blocked arm or driver not "
            "accepting commands"
        )

    def _active_end(self) -> float:
        if self._ensemble is not None:
            return self._ensemble.end
        return self._newest.end

    def _current_source(self, t: float):
        if self._source is None:  # from IDLE: the measured position the limiter was seeded with
            return _Const(self.limiter.position)
        return self._source

    def _blend_to(self, new_source, t_cmd: float):
        cfg = self.config
        if cfg.blend_s <= 0:
            return new_source
        return _Blend(self._current_source(t_cmd), new_source, t_cmd, cfg.blend_s, cfg.dt)

    def _start(self, t_cmd: float) -> None:
        cfg = self.config
        self._pending = False
        if cfg.temporal_ensembling:
            self._ensemble = _Ensemble(cfg.ensemble_k, cfg.control_hz, cfg.blend_s, cfg.dt)
            self._ensemble.add(self._newest, t_cmd)
            new = self._ensemble
        else:
            new = _ChunkSource(self._newest)
        self._source = self._blend_to(new, t_cmd)
        self.state = ExecState.RUNNING
        self.reason = "executing"
        self._run_since = t_cmd
        self._following_since = None

    def _hold(self, t_cmd: float, reason: str) -> None:
        if self.state == ExecState.HOLD:
            self.reason = reason
            return
        self.holds += 1
        self._warn(f"HOLD: {reason}")
        self._ensemble = None
        self._pending = False
        if self.limiter.seeded:
            # stop smoothly from the last command and velocity (t0 = the last tick's command time)
            t0 = self._last_t_cmd if math.isfinite(self._last_t_cmd) else t_cmd
            self._source = _Stop(self.limiter.position, self.limiter.velocity, self.limiter.limits.acceleration, t0)
        self.state = ExecState.HOLD
        self.reason = reason
        self._hold_since = t_cmd - self.config.exec_latency_s

    def _enter_safe(self, t_cmd: float) -> None:
        cfg = self.config
        self.safe_entries += 1
        self.state = ExecState.SAFE
        self.reason = f"SAFE after {cfg.safe_after_s} s in HOLD ({self.reason}); rearm to resume"
        self._warn(self.reason)
        self._pending = False
        if cfg.safe_pose is not None and self._source is not None:
            self._source = _MoveTo(self._source, np.asarray(cfg.safe_pose, float), cfg.safe_speed, t_cmd)

    def _reject(self, kind: str, message: str, hold: bool, now: float) -> SubmitResult:
        self.rejections[kind] += 1
        self._warn(message)
        if hold and self.state in (ExecState.RUNNING, ExecState.HOLD):
            self._hold(now + self.config.exec_latency_s, message)
        if hold:
            self._pending = False  # a valid chunk accepted before a broken one is not started
        return SubmitResult(False, kind)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        del self.warnings[:-50]

    def pop_warnings(self) -> list[str]:
        out, self.warnings = self.warnings, []
        return out

    # ---------------------------------------------------------------------------- diagnostics
    def stats(self, now: float) -> dict:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "ticks": self.ticks,
            "commands": self.commands,
            "chunks_accepted": self.chunks_accepted,
            "chunks_rejected": dict(self.rejections),
            "dropped_actions_total": self.dropped_total,
            "dropped_actions_last": self.last_dropped,
            "chunk_age_s": (now - self._newest.stamp) if self._newest is not None else None,
            "state_age_s": (now - self._state_stamp) if self._state_pos is not None else None,
            "following_error": self.following_error,
            "driver_state": self.driver_state,
            "holds": self.holds,
            "safe_entries": self.safe_entries,
            "clamps": self.limiter.counts_by_joint(),
            "clamps_total": self.limiter.total(),
        }
