"""Scripted demonstrators: end-effector waypoints per task, converted to joints with MuJoCo IK.

Each policy is an ordinary observation -> (rig.CHUNK_LENGTH, 14) action-chunk callable, so the
evaluation harness runs it like a learned policy. It plans from the observation's object poses
(privileged, as scripted demonstrators are) when an episode starts, and corrects the final
approach of fine steps (handover, insertion) from the object poses observed at each call.

Like a teleoperator, a demonstrator does not follow one timetable: seeded by the episode, it waits
a moment before it starts, then runs its plan through a random monotone time warp (overall speed
and per-segment speed vary), from wherever the arms start (`start_jitter`, applied by the harness
to the simulator's reset). So the arm state alone does not tell a policy *when* in the task it
is. Every commanded step stays within the follower's velocity limits.
Orientations: the grasp frame is the gripper_link frame (x along the fingers, y the closing
direction), expressed in world axes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import mujoco
import numpy as np
from clamp_core import rig

from clamp_sim.aloha_sim import MJ_ARM, START_ARM_POSE, build_spec

_ROLL_PI = np.diag([1.0, -1.0, -1.0])  # rotation by pi about the gripper's finger axis


def _unflipped(q: np.ndarray) -> np.ndarray:
    """The same gripper pose without a flipped wrist: Rx(a) Ry(b) Rx(c) == Rx(a - pi) Ry(-b) Rx(c - pi),
    so (forearm_roll, wrist_angle, wrist_rotate) near (+-pi, b, +-pi) is (0, -b, 0) wound back. The
    flipped twin sits at the joint limits and reaching it swings the forearm half a turn."""
    if abs(q[3]) <= np.pi / 2:
        return q
    twin = q.copy()
    twin[3] -= np.copysign(np.pi, q[3])
    twin[4] = -q[4]
    twin[5] -= np.copysign(np.pi, q[5])
    return twin


def _frame(x: np.ndarray, y: np.ndarray, roll: float = 0.0) -> np.ndarray:
    x = x / np.linalg.norm(x)
    y = y - np.dot(y, x) * x
    y /= np.linalg.norm(y)
    R = np.column_stack([x, y, np.cross(x, y)])
    c, s = np.cos(roll), np.sin(roll)
    return R @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot(axis: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Gripper orientation with fingers along a horizontal `axis`; closing direction horizontal (then rolled)."""
    return _frame(axis, np.cross([0.0, 0.0, 1.0], axis), roll)


def pitched(horizontal: np.ndarray, pitch_deg: float, roll: float = 0.0) -> np.ndarray:
    """Fingers pointing along `horizontal` tilted `pitch_deg` down (90: straight down); closing
    direction horizontal, perpendicular to `horizontal`."""
    h = np.array([horizontal[0], horizontal[1], 0.0])
    h /= np.linalg.norm(h)
    p = np.deg2rad(pitch_deg)
    return _frame(np.cos(p) * h - np.sin(p) * np.array([0.0, 0.0, 1.0]), np.cross([0.0, 0.0, 1.0], h), roll)


def _quat(R: np.ndarray) -> np.ndarray:
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R).ravel())
    return q


def _slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    if np.dot(q0, q1) < 0:
        q1 = -q1
    d = np.clip(np.dot(q0, q1), -1.0, 1.0)
    if d > 0.9995:
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    th = np.arccos(d)
    return (np.sin((1 - s) * th) * q0 + np.sin(s * th) * q1) / np.sin(th)


class ArmIK:
    """Damped-least-squares IK of one arm's grasp site on a private MjData (the sim is untouched)."""

    def __init__(self, model: mujoco.MjModel, arm: str, site: str) -> None:
        self.model, self.arm = model, arm
        self.data = mujoco.MjData(model)
        mj = MJ_ARM[arm]
        joints = [model.joint(f"{mj}/{j}").id for j in rig.ARM_JOINT_NAMES]
        self.qadr = np.array([model.jnt_qposadr[j] for j in joints])
        self.dadr = np.array([model.jnt_dofadr[j] for j in joints])
        self.lo = np.array([model.jnt_range[j][0] for j in joints])
        self.hi = np.array([model.jnt_range[j][1] for j in joints])
        self.site = model.site(site).id
        self._jp = np.zeros((3, model.nv))
        self._jr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(
        self, pos: np.ndarray, R: np.ndarray, q0: np.ndarray, iters: int = 30, rot_weight: float = 0.3
    ) -> np.ndarray:
        q = np.array(q0, float)
        self.converged = False
        q_target = np.empty(4)
        mujoco.mju_mat2Quat(q_target, np.ascontiguousarray(R).ravel())
        for _ in range(iters):
            p, Rc = self.forward(q)
            mujoco.mj_comPos(self.model, self.data)
            q_cur = np.empty(4)
            mujoco.mju_mat2Quat(q_cur, np.ascontiguousarray(Rc).ravel())
            err_r = np.empty(3)
            mujoco.mju_subQuat(err_r, q_target, q_cur)  # rotation vector in the current site frame
            err_r = Rc @ err_r  # ... in world, like the Jacobian
            err = np.concatenate([pos - p, rot_weight * err_r])
            if np.linalg.norm(err[:3]) < 2e-4 and np.linalg.norm(err_r) < 2e-3:
                self.converged = True
                break
            mujoco.mj_jacSite(self.model, self.data, self._jp, self._jr, self.site)
            J = np.vstack([self._jp[:, self.dadr], rot_weight * self._jr[:, self.dadr]])
            J_inv = J.T @ np.linalg.inv(J @ J.T + 1e-4 * np.eye(6))
            # Null-space pull towards the home posture keeps forearm_roll / wrist_rotate from
            # wandering to an equivalent configuration at their limits (which then jumps).
            rest = START_ARM_POSE - q
            rest[0] = 0.0
            dq = J_inv @ err + (np.eye(6) - J_inv @ J) @ (0.1 * rest)
            q = np.clip(q + np.clip(dq, -0.3, 0.3), self.lo, self.hi)
        return q


@dataclass
class Waypoint:
    t: int  # control step
    pos: np.ndarray  # grasp point, world
    R: np.ndarray  # grasp frame orientation, world
    gripper: float  # normalised 0 closed .. 1 open


class TimeWarp:
    """Monotone nominal -> actual control-step map: a start delay, then piecewise-linear with a
    random overall pace and a random pace per KNOT-step segment (a teleoperator's rhythm).

    Ranges (measured with `python -m clamp_sim.bench --timing-leak`): up to 0.6 s before moving,
    0.85-1.45 x the nominal duration overall, +-15% per 0.8 s segment."""

    KNOT = 40
    DELAY, PACE, WOBBLE = (0.0, 30.0), (0.85, 1.45), 0.15

    def __init__(self, rng: np.random.Generator | None, end: float | None = None) -> None:
        n = 40  # segments: covers 1600 nominal steps
        if rng is None:  # the nominal timetable
            d, k = 0.0, np.ones(n)
        else:
            d = float(rng.uniform(*self.DELAY))
            k = rng.uniform(*self.PACE) * rng.uniform(1 - self.WOBBLE, 1 + self.WOBBLE, n)
        self.nominal = np.arange(n + 1) * float(self.KNOT)
        self.actual = d + np.concatenate([[0.0], np.cumsum(k * self.KNOT)])
        if end is not None and self(end) > self.bound(end):
            # a slow draw whose wobble adds up: compress it to the bound (keeps horizons short)
            drawn = np.interp(end, self.nominal, self.actual)
            self.actual = d + (self.actual - d) * (self.bound(end) - d) / (drawn - d)

    def __call__(self, t_nominal: float) -> int:
        return int(round(np.interp(t_nominal, self.nominal, self.actual)))

    def inverse(self, t_actual: float) -> float:
        return float(np.interp(t_actual, self.actual, self.nominal))

    @classmethod
    def bound(cls, t_nominal: float) -> int:
        """Latest actual step the plan's nominal end `t_nominal` maps to."""
        return int(np.floor(cls.DELAY[1] + t_nominal * cls.PACE[1]))


SETTLE_STEPS = 30  # after the last waypoint: the task's settle time (0.5 s) and a margin


class ScriptedPolicy:
    """Base class: per-arm waypoint lists -> joint trajectory via IK; chunks of rig.CHUNK_LENGTH.

    `plan` writes waypoints on the nominal timetable (steps at 50 Hz); they are retimed by the
    episode's TimeWarp before execution. `correct` sees actual steps (use `self.warp.inverse`)."""

    nominal_end = 380  # last nominal waypoint step (subclasses)
    needs_images = False  # plans from object poses (privileged state)
    start_jitter = 0.04  # rad std per joint of the start pose (AlohaSim.start_jitter)
    vary = True  # False: the nominal timetable (no delay / time warp) and no pose jitter

    def __init__(self, task: str, vary: bool | None = None) -> None:
        from clamp_sim.tasks import make_task

        self.task = task
        if vary is not None:
            self.vary = vary
        if not self.vary:
            self.start_jitter = 0.0
        self.model = build_spec(make_task(task)).compile()
        self.ik = {arm: ArmIK(self.model, arm, f"{arm}/grasp") for arm in rig.FOLLOWERS}
        self.reset()

    _horizon: int | None = None

    @property
    def horizon(self) -> int:
        """Control steps per episode: the slowest time warp of the plan, then time to settle
        (assignable, e.g. to cut episodes short in tests)."""
        return self._horizon if self._horizon is not None else TimeWarp.bound(self.nominal_end) + SETTLE_STEPS

    @horizon.setter
    def horizon(self, steps: int) -> None:
        self._horizon = int(steps)

    def finished(self, step: int) -> bool:
        """The plan is done and the scene has had time to settle (the harness may stop early)."""
        if self.waypoints is None:
            return False
        last = max(wps[-1].t for wps in self.waypoints.values())
        return step >= last + SETTLE_STEPS

    def reset(self) -> None:
        self.step_count = 0
        self.waypoints: dict[str, list[Waypoint]] | None = None
        self.q = {arm: START_ARM_POSE.copy() for arm in rig.FOLLOWERS}
        self.q0 = {arm: START_ARM_POSE.copy() for arm in rig.FOLLOWERS}
        self.warp = TimeWarp(None)
        self.rng = np.random.default_rng(0)
        self._cache: dict[int, np.ndarray] = {}
        self._cache_q: dict[int, dict[str, np.ndarray]] = {}
        self._still: dict[str, tuple] = {}  # arm -> (target pos, R, joints) of a reached target

    def home(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """Grasp-site pose where the arm started this episode."""
        return self.ik[arm].forward(self.q0[arm])

    def jitter(self, *scale: float) -> np.ndarray:
        """A seeded uniform offset in [-scale, scale] per axis (0 when not varying)."""
        s = np.asarray(scale, float)
        return self.rng.uniform(-s, s) if self.vary else np.zeros_like(s)

    def _start(self, obs: dict) -> None:
        seed = obs.get("seed")
        if seed is None:  # reproducible per episode anyway: the initial object poses derive from its seed
            seed = zlib.crc32(repr(sorted(obs.get("objects", {}).items())).encode())
        self.rng = np.random.default_rng([int(seed), 2])
        state = np.asarray(obs["state"], float)
        for i, arm in enumerate(rig.FOLLOWERS):
            self.q0[arm] = state[7 * i : 7 * i + 6].copy()
            self.q[arm] = self.q0[arm].copy()
        self.warp = TimeWarp(self.rng if self.vary else None, end=self.nominal_end)
        self.waypoints = self.plan(obs)
        for wps in self.waypoints.values():
            for wp in wps:
                wp.t = self.warp(wp.t)

    def plan(self, obs: dict) -> dict[str, list[Waypoint]]:
        raise NotImplementedError

    def correct(self, obs: dict) -> bool:
        """Adjust future waypoints from the current observation (closed-loop fine steps); True if changed."""
        return False

    def target(self, arm: str, t: int) -> Waypoint:
        wps = self.waypoints[arm]
        if t <= wps[0].t:
            return wps[0]
        for a, b in zip(wps, wps[1:], strict=False):
            if a.t <= t <= b.t:
                s = (t - a.t) / max(b.t - a.t, 1)
                s = 0.5 - 0.5 * np.cos(np.pi * s)  # ease in/out: no velocity jumps at waypoints
                R = np.empty(9)
                mujoco.mju_quat2Mat(R, _slerp(_quat(a.R), _quat(b.R), s))
                return Waypoint(
                    t, a.pos + s * (b.pos - a.pos), R.reshape(3, 3), a.gripper + s * (b.gripper - a.gripper)
                )
        return wps[-1]

    def action(self, t: int) -> np.ndarray:
        out = np.empty(rig.ACTION_DIM)
        step_limit = 0.9 * rig.VX300S_LIMITS.velocity[:6] / rig.CONTROL_HZ
        for i, arm in enumerate(rig.FOLLOWERS):
            wp = self.target(arm, t)
            key = (wp.pos.tobytes(), wp.R.tobytes(), self.q[arm].tobytes())
            if self._still.get(arm) == key:
                # same target, already reached by a converged solve: solving again from there
                # returns the same joints at once (idle arms, holds, gripper-only phases)
                out[7 * i : 7 * i + 6] = self.q[arm]
                out[7 * i + 6] = wp.gripper
                continue
            # A parallel gripper grasps the same way rolled by pi about its finger axis (x): aim for
            # the twin closer to the current wrist, else IK flips forearm_roll and wrist_rotate by pi.
            _, R_now = self.ik[arm].forward(self.q[arm])
            R_twin = wp.R @ _ROLL_PI
            R = R_twin if np.trace(R_now.T @ R_twin) > np.trace(R_now.T @ wp.R) else wp.R
            q = self.ik[arm].solve(wp.pos, R, self.q[arm])
            q = _unflipped(q)
            # demonstrations obey the follower's velocity limits, as the real arm would
            reached = np.all(np.abs(q - self.q[arm]) <= step_limit)
            self.q[arm] = q if reached else self.q[arm] + np.clip(q - self.q[arm], -step_limit, step_limit)
            if reached and self.ik[arm].converged:
                self._still[arm] = (wp.pos.tobytes(), wp.R.tobytes(), self.q[arm].tobytes())
            out[7 * i : 7 * i + 6] = self.q[arm]
            out[7 * i + 6] = wp.gripper
        return out

    def __call__(self, obs: dict) -> np.ndarray:
        if self.waypoints is None:
            self._start(obs)
        t0 = int(obs.get("step", self.step_count))
        if self.correct(obs):  # waypoints moved: plans from t0 on are stale
            self._cache = {t: a for t, a in self._cache.items() if t < t0}
        # IK is the expensive part; steps already solved by an earlier (overlapping) chunk are reused
        chunk = []
        for t in range(t0, t0 + rig.CHUNK_LENGTH):
            if t not in self._cache:
                prev = self._cache_q.get(t - 1)
                if prev is not None:
                    self.q = {arm: q.copy() for arm, q in prev.items()}
                self._cache[t] = self.action(t)
                self._cache_q[t] = {arm: q.copy() for arm, q in self.q.items()}
            chunk.append(self._cache[t])
        self.step_count = t0 + rig.CHUNK_LENGTH
        return np.stack(chunk)


def _obj(obs: dict, name: str) -> np.ndarray:
    return np.asarray(obs["objects"][name][:3], float)


class TransferCubePolicy(ScriptedPolicy):
    """Right arm picks the cube (fingers tilted down), lifts it to the middle; left arm takes it
    with its gripper rolled 90 deg (fingers close vertically), the right arm lets go."""

    # The handover happens low enough for cam_low to see it (its top edge cuts off a cube held above
    # ~0.2 m; at 0.25 only cam_high saw it, about 3 px wide at the policy's 72 x 96), and where it
    # happens varies per episode, as a teleoperator's does
    meet = np.array([0.0, 0.5, 0.15])
    MEET_JITTER = (0.03, 0.03, 0.02)  # m per axis
    # Where the right grasp point grips the cube, from its centre (m). Learned right arms gripped up
    # to 4 cm behind it along x, so that the cube hung 2-3.5 cm forward and 2-3 cm low in the fingers,
    # and the learned left arm went to where a centred cube would have been and missed (12 episodes,
    # forward kinematics of its command). Wider than this, the handover lost its margin for a left
    # arm 1-1.5 cm off (test_the_handover_holds_with_the_taking_grasp_off_by_a_learned_policys_error).
    GRIP_X, GRIP_Z = (-0.025, 0.01), (-0.005, 0.01)
    # Where the left grasp point takes the cube, from the cube's centre. With a centred grip the grasp
    # holds from -3.5 to +4.5 cm along x (6-10 seeds per offset: y +-1.5 cm, z -0.5 to +2.5 cm), but
    # from about -0.2 cm on the grippers come closer than the workspace guard's 3 cm
    # (clamp_core.safety.WorkspaceGuard), which refuses a learned policy's chunks and holds the arm
    # short of the cube. -2 cm is the middle of what both allow (5.4-5.7 cm between the guarded links).
    # 0.5 cm above the centre: a cube gripped off centre hangs tilted, and 2 cm above it slipped out.
    take_offset = np.array([-0.02, 0.0, 0.005])
    creep = np.array([-0.03, 0.0, 0.0])  # where the left arm slows down, from the take point
    closed = 295  # nominal step the left gripper is closed by: the aim follows the cube until then

    def grip_offset(self) -> np.ndarray:
        if not self.vary:
            return np.array([0.0, 0.0, 0.005])
        return np.array([self.rng.uniform(*self.GRIP_X), 0.0, self.rng.uniform(*self.GRIP_Z)])

    def plan(self, obs):
        cube = _obj(obs, "red cube")
        rp, rR = self.home("follower_right")
        lp, lR = self.home("follower_left")
        pick = pitched(np.array([-1.0, 0.0]), 60)
        meet_r = pitched(np.array([-1.0, 0.0]), 30)
        meet_l = _rot(np.array([1.0, 0.0, 0.0]), roll=np.pi / 2)
        # Like a teleoperator, the right arm grips the cube off centre and hands it over wherever is
        # convenient: where the left arm must take it varies by several cm, so it has to be found by
        # looking, not from the timetable or the right gripper's pose
        at = cube + self.grip_offset()
        above = at + [0.0, 0.0, 0.075]
        m = self.meet + self.jitter(*self.MEET_JITTER)
        hold = m + [0.02, 0, 0]  # the right grasp point, holding the cube at the meet point
        right = [
            Waypoint(0, rp, rR, 1.0),
            Waypoint(80, above, pick, 1.0),
            Waypoint(120, at, pick, 1.0),
            Waypoint(140, at, pick, 0.0),
            Waypoint(210, hold, meet_r, 0.0),
            Waypoint(305, hold, meet_r, 0.0),
            Waypoint(325, hold, meet_r, 1.0),
            Waypoint(370, m + [0.15, 0, 0.05], meet_r, 1.0),
        ]
        take = hold + self.take_offset  # planned where the right grasp point holds the cube
        # The left arm's waypoints at the cube, as (waypoint, offset from the take point): `correct`
        # moves them to where the cube is. It creeps the last 3 cm (0.6 s) and stays 0.3 s before
        # closing, so that arm states just short of the cube are demonstrated as "keep going".
        self.at_cube = [
            (Waypoint(230, take + self.creep, meet_l, 1.0), self.creep),
            (Waypoint(260, take, meet_l, 1.0), np.zeros(3)),
            (Waypoint(275, take, meet_l, 1.0), np.zeros(3)),
            (Waypoint(self.closed, take, meet_l, 0.0), np.zeros(3)),
            (Waypoint(330, take, meet_l, 0.0), np.zeros(3)),
        ]
        left = [
            Waypoint(0, lp, lR, 1.0),
            Waypoint(200, m + [-0.15, 0, 0], meet_l, 1.0),
            *(wp for wp, _ in self.at_cube),
            Waypoint(380, m + [-0.1, 0, 0], meet_l, 0.0),
        ]
        return {"follower_left": left, "follower_right": right}

    def correct(self, obs):
        # The left arm goes to where the cube actually is once the right arm holds it at the meet point.
        t = self.warp.inverse(int(obs.get("step", self.step_count)))
        if 200 <= t < self.closed:
            cube = _obj(obs, "red cube")
            for wp, offset in self.at_cube:
                wp.pos = cube + self.take_offset + offset
            return True
        return False


class InsertionPolicy(ScriptedPolicy):
    """Left arm lifts the socket, right arm the peg; they meet and the peg slides into the socket
    until it touches the pin (final approach corrected from the observed peg/socket poses)."""

    meet = np.array([0.0, 0.5, 0.15])
    nominal_end = 360

    def plan(self, obs):
        peg, socket = _obj(obs, "red peg"), _obj(obs, "blue socket")
        # Hold both off-centre, at their outer ends, so the two grippers stay apart at insertion.
        peg, socket = peg + [0.03, 0, 0], socket + [-0.03, 0, 0]
        self.offset = None
        rp, rR = self.home("follower_right")
        lp, lR = self.home("follower_left")
        # Straight-down grasps hold the thin peg and the socket walls over their full height, and
        # keep both long axes horizontal when lifted.
        down_r = pitched(np.array([-1.0, 0.0]), 90)
        down_l = pitched(np.array([1.0, 0.0]), 90)
        m = self.meet
        right = [
            Waypoint(0, rp, rR, 1.0),
            Waypoint(90, peg + [0, 0, 0.1], down_r, 1.0),
            Waypoint(130, peg + [0, 0, 0.02], down_r, 1.0),
            Waypoint(150, peg + [0, 0, 0.02], down_r, 0.0),
            Waypoint(170, peg + [0, 0, 0.06], down_r, 0.0),
            Waypoint(240, m + [0.2, 0, 0], down_r, 0.0),
            Waypoint(300, m + [0.13, 0, 0], down_r, 0.0),
            Waypoint(360, m + [0.09, 0, 0], down_r, 0.0),
        ]
        left = [
            Waypoint(0, lp, lR, 1.0),
            Waypoint(90, socket + [0, 0, 0.1], down_l, 1.0),
            Waypoint(130, socket + [0, 0, 0.01], down_l, 1.0),
            Waypoint(150, socket + [0, 0, 0.01], down_l, 0.0),
            Waypoint(170, socket + [0, 0, 0.06], down_l, 0.0),
            Waypoint(240, m + [-0.1, 0, 0], down_l, 0.0),
            Waypoint(360, m + [-0.1, 0, 0], down_l, 0.0),
        ]
        return {"follower_left": left, "follower_right": right}

    def correct(self, obs):
        # Servo the peg onto the socket's axis: shift the right arm's remaining waypoints by the
        # observed offset between where the peg is and where it should be relative to the socket.
        t = self.warp.inverse(int(obs.get("step", self.step_count)))
        if t < 240:
            return False
        peg, socket = _obj(obs, "red peg"), _obj(obs, "blue socket")
        if t < 330 or self.offset is None:
            # how the peg sits in the hand, from the measured arm pose (not the command, which
            # leads it): it slips a little while the arm moves, so keep tracking until the approach
            q = np.asarray(obs["state"], float)[7:13]
            grasp, _ = self.ik["follower_right"].forward(q)
            off = grasp - peg
            self.offset = off if self.offset is None else 0.7 * self.offset + 0.3 * off
        # end 2 mm short of the pin: pressing on it makes the peg slip in the grasp
        for wp, dx in zip(self.waypoints["follower_right"][6:], (0.14, 0.098), strict=False):
            wp.pos = socket + [dx, 0.0, 0.0] + self.offset
        return True


class PlaceCubePolicy(ScriptedPolicy):
    """Right arm picks the cube, carries it above the plate, lowers it and lets go."""

    nominal_end = 340

    def plan(self, obs):
        cube, plate = _obj(obs, "red cube"), _obj(obs, "green plate")
        rp, rR = self.home("follower_right")
        lp, lR = self.home("follower_left")
        pick = pitched(np.array([-1.0, 0.0]), 60)
        place = cube * 0 + plate + [0, 0, 0.0]
        right = [
            Waypoint(0, rp, rR, 1.0),
            Waypoint(80, cube + [0, 0, 0.08], pick, 1.0),
            Waypoint(120, cube + [0, 0, 0.005], pick, 1.0),
            Waypoint(140, cube + [0, 0, 0.005], pick, 0.0),
            Waypoint(190, cube + [0, 0, 0.1], pick, 0.0),
            Waypoint(250, place + [0, 0, 0.1], pick, 0.0),
            Waypoint(280, place + [0, 0, 0.035], pick, 0.0),
            Waypoint(300, place + [0, 0, 0.035], pick, 1.0),
            Waypoint(340, place + [0.05, 0, 0.12], pick, 1.0),
        ]
        left = [Waypoint(0, lp, lR, 1.0)]
        return {"follower_left": left, "follower_right": right}


class _PickAndRelease(ScriptedPolicy):
    """Right arm picks the red cube (fingers tilted 60 deg down), carries it over `release_at(obs)`
    (where the cube's centre should be when let go), lowers it there, lets go and backs off."""

    nominal_end = 340

    def release_at(self, obs: dict) -> np.ndarray:
        raise NotImplementedError

    def plan(self, obs):
        cube, place = _obj(obs, "red cube"), self.release_at(obs)
        rp, rR = self.home("follower_right")
        lp, lR = self.home("follower_left")
        pick = pitched(np.array([-1.0, 0.0]), 60)
        carry = max(place[2], cube[2]) + 0.08 + self.jitter(0.02)[0]  # a hand's height above both
        grasp = cube + [0, 0, 0.005]
        release = place + [0, 0, 0.01]
        retreat = release + [0.05, 0, 0.1] + self.jitter(0.02, 0.02, 0.02)
        right = [
            Waypoint(0, rp, rR, 1.0),
            Waypoint(80, grasp + [0, 0, 0.075] + self.jitter(0.01, 0.01, 0.015), pick, 1.0),
            Waypoint(120, grasp, pick, 1.0),
            Waypoint(140, grasp, pick, 0.0),
            Waypoint(190, np.r_[cube[:2], carry], pick, 0.0),
            Waypoint(250, np.r_[place[:2], carry], pick, 0.0),
            Waypoint(280, release, pick, 0.0),
            Waypoint(300, release, pick, 1.0),
            Waypoint(340, retreat, pick, 1.0),
        ]
        return {"follower_left": [Waypoint(0, lp, lR, 1.0)], "follower_right": right}


class StackCubePolicy(_PickAndRelease):
    def release_at(self, obs):
        from clamp_sim.tasks import StackCube

        return _obj(obs, "blue cube") + [0, 0, StackCube.BLUE + StackCube.RED + 0.003]


class CubeInBinPolicy(_PickAndRelease):
    """Lets go with the cube 2 cm above the walls, over the bin's centre: it drops in."""

    def release_at(self, obs):
        from clamp_sim.tasks import CubeInBin

        return _obj(obs, "blue bin") + [0, 0, CubeInBin.HEIGHT + 0.02 + 0.02]


class OpenDrawerPolicy(ScriptedPolicy):
    """Right arm closes its fingers (nearly level, 15 deg down) around the vertical handle bar from
    the front, pulls the drawer 11.5 cm straight out, lets go and backs off."""

    nominal_end = 300

    def plan(self, obs):
        from clamp_sim.tasks import OpenDrawer

        h = _obj(obs, "drawer handle")
        rp, rR = self.home("follower_right")
        lp, lR = self.home("follower_left")
        grip = pitched(np.array([-1.0, 0.0]), 15)
        out = np.array([OpenDrawer.OPEN + 0.025, 0.0, 0.0])
        right = [
            Waypoint(0, rp, rR, 1.0),
            Waypoint(90, h + [0.09, 0, 0.02] + self.jitter(0.02, 0.02, 0.02), grip, 1.0),
            Waypoint(130, h, grip, 1.0),
            Waypoint(150, h, grip, 0.0),
            Waypoint(230, h + out, grip, 0.0),
            Waypoint(250, h + out, grip, 1.0),
            Waypoint(300, h + out + [0.08, 0, 0.05] + self.jitter(0.02, 0.02, 0.02), grip, 1.0),
        ]
        return {"follower_left": [Waypoint(0, lp, lR, 1.0)], "follower_right": right}


POLICIES = {
    "transfer_cube": TransferCubePolicy,
    "insertion": InsertionPolicy,
    "place_cube": PlaceCubePolicy,
    "stack_cube": StackCubePolicy,
    "cube_in_bin": CubeInBinPolicy,
    "open_drawer": OpenDrawerPolicy,
}


def make_scripted_policy(task: str) -> ScriptedPolicy:
    if task not in POLICIES:
        raise ValueError(f"no scripted policy for task {task!r}; choose one of {sorted(POLICIES)}")
    return POLICIES[task](task)
