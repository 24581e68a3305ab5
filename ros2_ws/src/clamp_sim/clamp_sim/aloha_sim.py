"""A MuJoCo bimanual ALOHA (ViperX followers) with the robot's four RGB-D cameras. No ROS here.

The arms, meshes, actuators and table are gym-aloha's installed assets; this module edits that
model in code (MjSpec): task objects come from `clamp_sim.tasks`, the four rig cameras are added
(cam_high overhead, cam_low in front, a D405-like camera on each gripper), and sites mark the
Interbotix `ee_gripper_link` of each arm. Everything is expressed in the rig's conventions:
xs_sdk joint names/order, the `gripper` joint angle of `rig.FOLLOWER_GRIPPER`, camera poses in the
REP 103 optical convention (z forward, x right, y down) in the MuJoCo world (z up).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco loads GL

import mujoco
import numpy as np
from clamp_core import rig

# gym-aloha's model of the followers: finger slide joints in metres, normalised 0 closed .. 1 open.
FINGER_CLOSED = 0.01844  # gym_aloha.constants.PUPPET_GRIPPER_POSITION_CLOSE
FINGER_OPEN = 0.05800  # gym_aloha.constants.PUPPET_GRIPPER_POSITION_OPEN
START_ARM_POSE = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])  # gym-aloha's home pose, per arm
# MuJoCo warnings after which it has reset the state to the model default
_RESET_WARNINGS = (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL, mujoco.mjtWarning.mjWARN_BADQACC)
PHYSICS_DT = 0.002  # gym-aloha's MuJoCo timestep
CONTROL_DT = 1.0 / rig.CONTROL_HZ  # 0.02 s = 10 physics steps

# Interbotix vx300s URDF: gripper_link -> ee_arm (0.042825) -> fingers (0.023) -> ee_gripper (0.027575)
EE_GRIPPER_OFFSET = 0.042825 + 0.023 + 0.027575
# Where the scripted demonstrators hold objects: between the pads of ALOHA's long custom fingers.
GRASP_OFFSET = 0.125

MJ_ARM = {"follower_left": "vx300s_left", "follower_right": "vx300s_right"}
# MuJoCo camera axes (x right, y up, looks along -z) -> optical (x right, y down, z forward)
_MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


def gym_aloha_assets() -> Path:
    try:
        import gym_aloha
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "clamp_sim needs gym-aloha's MuJoCo assets: `pip install gym-aloha` (see requirements)"
        ) from exc
    return Path(gym_aloha.__file__).parent / "assets"


def finger_from_normalised(g: np.ndarray | float) -> np.ndarray | float:
    return FINGER_CLOSED + np.clip(g, 0.0, 1.0) * (FINGER_OPEN - FINGER_CLOSED)


def normalised_from_finger(p: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(p) - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED)


def look_at_quat(pos, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """MuJoCo camera quaternion (w, x, y, z) for a camera at `pos` looking at `target`."""
    pos, target, up = (np.asarray(v, float) for v in (pos, target, up))
    back = pos - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([right, cam_up, back]).ravel())
    return quat


@dataclass(frozen=True)
class CameraMount:
    """A rig camera: world-fixed (`body` None) or rigidly mounted on a body; pose given as a look-at."""

    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    fovy: float  # vertical field of view, degrees
    body: str | None = None
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)


# D405: ~58 deg vertical field of view. cam_high looks down from above the front edge of the table,
# cam_low from low in front (the ALOHA frame layout); wrist cameras sit above each gripper, looking
# along the fingers (in the gripper_link frame, x along the fingers, z up).
CAMERA_MOUNTS: dict[str, CameraMount] = {
    "cam_high": CameraMount(pos=(0.0, 0.12, 0.78), target=(0.0, 0.55, 0.0), fovy=58.0),
    "cam_low": CameraMount(pos=(0.0, 0.16, 0.2), target=(0.0, 0.6, 0.04), fovy=58.0),
    "cam_left_wrist": CameraMount(
        pos=(0.03, 0.0, 0.07), target=(0.2, 0.0, -0.02), fovy=58.0, body="vx300s_left/gripper_link"
    ),
    "cam_right_wrist": CameraMount(
        pos=(0.03, 0.0, 0.07), target=(0.2, 0.0, -0.02), fovy=58.0, body="vx300s_right/gripper_link"
    ),
}
assert tuple(CAMERA_MOUNTS) == rig.CAMERAS, "one mount per rig camera"


# Software (llvmpipe) EGL rendering: gym-aloha's 4096 shadow map and 4x MSAA cost ~20x per frame
# (176 vs 7.4 ms per 240x424 camera measured here), so "fast" turns both off; "gym" keeps them.
RENDER_QUALITY = {"fast": (0, 0), "gym": (4096, 4)}  # name -> (shadowsize, offsamples)


def build_spec(
    task, max_size: tuple[int, int] = (480, 640), render_quality: str = "fast", board: dict | None = None
) -> mujoco.MjSpec:
    """gym-aloha's bimanual ViperX scene with this task's objects, the rig cameras and EE sites."""
    spec = mujoco.MjSpec.from_file(str(gym_aloha_assets() / "bimanual_viperx_transfer_cube.xml"))
    spec.delete(spec.body("box"))  # gym-aloha's cube; tasks add their own objects
    for key in list(spec.keys):
        spec.delete(key)
    spec.option.timestep = PHYSICS_DT
    spec.visual.global_.offheight = max(int(max_size[0]), 480)
    spec.visual.global_.offwidth = max(int(max_size[1]), 640)
    spec.visual.map.znear = 0.01  # x extent; wrist cameras see the fingers a few cm away
    spec.visual.map.zfar = 10.0
    if render_quality not in RENDER_QUALITY:
        raise ValueError(f"render_quality {render_quality!r}: choose one of {sorted(RENDER_QUALITY)}")
    spec.visual.quality.shadowsize, spec.visual.quality.offsamples = RENDER_QUALITY[render_quality]
    for arm, mj in MJ_ARM.items():
        gl = spec.body(f"{mj}/gripper_link")
        gl.add_site(name=rig.gripper_frame(arm), pos=[EE_GRIPPER_OFFSET, 0, 0], size=[0.005] * 3, rgba=[0, 0, 0, 0])
        gl.add_site(name=f"{arm}/grasp", pos=[GRASP_OFFSET, 0, 0], size=[0.005] * 3, rgba=[0, 0, 0, 0])
    for cam, mount in CAMERA_MOUNTS.items():
        parent = spec.worldbody if mount.body is None else spec.body(mount.body)
        parent.add_camera(
            name=cam, pos=list(mount.pos), quat=list(look_at_quat(mount.pos, mount.target, mount.up)), fovy=mount.fovy
        )
    task.add_objects(spec)
    if board is not None:  # a ChArUco board for clamp_bringup.calibrate (clamp_sim.board)
        from clamp_sim.board import add_board

        add_board(spec, board)
    return spec


def camera_matrix(fovy_deg: float, height: int, width: int) -> np.ndarray:
    """Pinhole K of a MuJoCo camera rendered at height x width (square pixels, centred principal point).

    Pixel (u, v) covers [u, u+1) in MuJoCo's image plane, so in the ROS convention (pixel centres at
    integer coordinates) the principal point is at ((W-1)/2, (H-1)/2).
    """
    f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def pose_matrix(pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(rot).reshape(3, 3)
    T[:3, 3] = pos
    return T


@dataclass
class CameraFrame:
    """One rendered RGB-D frame in the rig's conventions."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres along the optical axis; 0 = no return
    K: np.ndarray  # (3, 3)
    T_world_cam: np.ndarray  # (4, 4) pose of rig.color_optical_frame(cam) in world

    @property
    def depth_mm(self) -> np.ndarray:
        """16UC1 depth in millimetres, as realsense2_camera publishes it (0 = invalid)."""
        return np.clip(np.round(self.depth * 1000.0), 0, 65535).astype(np.uint16)


class Renderer:
    """Renders colour and depth of one camera in a single OpenGL pass (half the cost of two renders)."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int, max_depth: float = 2.0) -> None:
        if height > model.vis.global_.offheight or width > model.vis.global_.offwidth:
            raise ValueError(
                f"image {height}x{width} exceeds the offscreen buffer "
                f"{model.vis.global_.offheight}x{model.vis.global_.offwidth}; build the sim with a larger image_size"
            )
        self.model, self.height, self.width, self.max_depth = model, height, width, max_depth
        self._gl = mujoco.GLContext(width, height)
        self._gl.make_current()
        self._scene = mujoco.MjvScene(model, maxgeom=10000)
        self._option = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._viewport = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), np.uint8)
        self._zbuf = np.empty((height, width), np.float32)
        extent = model.stat.extent
        self._near, self._far = model.vis.map.znear * extent, model.vis.map.zfar * extent

    def render(self, data: mujoco.MjData, camera_id: int) -> tuple[np.ndarray, np.ndarray]:
        self._gl.make_current()
        self._cam.fixedcamid = camera_id
        mujoco.mjv_updateScene(self.model, data, self._option, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        mujoco.mjr_render(self._viewport, self._scene, self._ctx)
        mujoco.mjr_readPixels(self._rgb, self._zbuf, self._viewport, self._ctx)
        # OpenGL rows run bottom-up; the z-buffer is non-linear in depth.
        rgb = np.flipud(self._rgb).copy()
        z = np.flipud(self._zbuf)
        near, far = self._near, self._far
        depth = (near / (1.0 - z * (1.0 - near / far))).astype(np.float32)
        depth[(depth >= self.max_depth) | (z >= 1.0)] = 0.0  # beyond the D405's range: no return
        return rgb, depth

    def close(self) -> None:
        if self._gl is not None:
            self._ctx.free()
            self._gl.free()
            self._gl = None


class AlohaSim:
    """The simulated bimanual ALOHA: position-controlled followers, four RGB-D cameras, one task.

    Commands follow xs_sdk semantics: `command_arm(arm, 6 joint positions)` and
    `command_gripper(arm, gripper joint angle)`; `apply_action(14-D)` takes the rig action layout
    (gripper normalised). `step()` advances one control period (rig.CONTROL_HZ).
    """

    def __init__(
        self,
        task: str = "transfer_cube",
        image_size: tuple[int, int] = (480, 640),
        cameras: tuple[str, ...] = rig.CAMERAS,
        max_depth: float = 2.0,
        render_quality: str = "fast",
        board: dict | None = None,
    ) -> None:
        from clamp_sim.tasks import make_task

        unknown = [c for c in cameras if c not in rig.CAMERAS]
        if unknown:
            raise ValueError(f"unknown cameras {unknown}; choose from rig.CAMERAS {rig.CAMERAS}")
        self.task = make_task(task)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.cameras = tuple(cameras)
        self.spec = build_spec(self.task, self.image_size, render_quality, board)
        self.model = self.spec.compile()
        self.data = mujoco.MjData(self.model)
        self.max_depth = max_depth
        self._renderer: Renderer | None = None
        self.n_substeps = round(CONTROL_DT / self.model.opt.timestep)
        m = self.model
        self._qadr = {}  # arm -> qpos addresses of the 6 arm joints + 2 fingers
        self._dadr = {}
        self._act = {}  # arm -> actuator ids (6 arm + left finger + right finger)
        for arm, mj in MJ_ARM.items():
            joints = [f"{mj}/{j}" for j in (*rig.ARM_JOINT_NAMES, "left_finger", "right_finger")]
            self._qadr[arm] = np.array([m.jnt_qposadr[m.joint(j).id] for j in joints])
            self._dadr[arm] = np.array([m.jnt_dofadr[m.joint(j).id] for j in joints])
            self._act[arm] = np.array(
                [next(i for i in range(m.nu) if m.actuator_trnid[i, 0] == m.joint(j).id) for j in joints]
            )
        self._cam_ids = {c: m.camera(c).id for c in rig.CAMERAS}
        self._ee_site = {arm: m.site(rig.gripper_frame(arm)).id for arm in rig.FOLLOWERS}
        self._grasp_site = {arm: m.site(f"{arm}/grasp").id for arm in rig.FOLLOWERS}
        self.torque_enabled = {arm: True for arm in rig.FOLLOWERS}
        self.seed: int | None = None
        self.diverged = False
        # std (rad) of a seeded offset of each arm joint from the home pose at reset: where a
        # teleoperator's episode starts varies (scripted demonstrations set it; 0 = exact home)
        self.start_jitter = 0.0
        self.reset(0)

    # ------------------------------------------------------------------------------------ state
    @property
    def time(self) -> float:
        return float(self.data.time)

    def reset(self, seed: int | None = None) -> None:
        """Home pose, grippers open, task objects at a seeded random pose."""
        self.seed = seed
        self.diverged = False
        mujoco.mj_resetData(self.model, self.data)
        # its own stream, so object poses of a seed do not depend on start_jitter
        arm_rng = np.random.default_rng(None if seed is None else [int(seed), 1])
        for arm in rig.FOLLOWERS:
            home = START_ARM_POSE + (arm_rng.normal(0.0, self.start_jitter, 6) if self.start_jitter > 0 else 0.0)
            home = np.clip(home, rig.VX300S_LIMITS.lower[:6], rig.VX300S_LIMITS.upper[:6])
            q = np.concatenate([home, [FINGER_OPEN, -FINGER_OPEN]])
            self.data.qpos[self._qadr[arm]] = q
            self.data.ctrl[self._act[arm]] = q
        self.task.reset(self.model, self.data, np.random.default_rng(seed))
        mujoco.mj_forward(self.model, self.data)
        self.task.update(self.model, self.data)

    def command_arm(self, arm: str, positions) -> None:
        positions = np.asarray(positions, float)
        if positions.shape != (6,):
            raise ValueError(
                f"{arm}: an arm command takes 6 joint positions {rig.ARM_JOINT_NAMES}, got {positions.shape}"
            )
        if not np.all(np.isfinite(positions)):
            raise ValueError(f"{arm}: non-finite arm command {positions}")
        lo, hi = rig.VX300S_LIMITS.lower[:6], rig.VX300S_LIMITS.upper[:6]
        if self.torque_enabled[arm]:
            self.data.ctrl[self._act[arm][:6]] = np.clip(positions, lo, hi)

    def command_gripper(self, arm: str, joint_angle: float) -> None:
        """xs_sdk `gripper` joint angle (rad), mapped through rig.FOLLOWER_GRIPPER to the finger slides."""
        if not np.isfinite(joint_angle):
            raise ValueError(f"{arm}: non-finite gripper command {joint_angle}")
        self.command_gripper_normalised(arm, float(rig.FOLLOWER_GRIPPER.normalise(joint_angle)))

    def command_gripper_normalised(self, arm: str, g: float) -> None:
        if self.torque_enabled[arm]:
            p = finger_from_normalised(g)
            self.data.ctrl[self._act[arm][6:]] = (p, -p)

    def apply_action(self, action) -> None:
        """14-D rig action: per arm six joints then the gripper in [0, 1], left arm first."""
        action = np.asarray(action, float)
        if action.shape != (rig.ACTION_DIM,):
            raise ValueError(f"expected a {rig.ACTION_DIM}-D action {rig.ACTION_NAMES}, got shape {action.shape}")
        for i, arm in enumerate(rig.FOLLOWERS):
            self.command_arm(arm, action[7 * i : 7 * i + 6])
            self.command_gripper_normalised(arm, action[7 * i + 6])

    def set_torque(self, arm: str, enable: bool) -> None:
        """Torque off: the arm holds no position (ctrl follows qpos so it does not jump when re-enabled)."""
        self.torque_enabled[arm] = bool(enable)
        if not enable:
            self.data.ctrl[self._act[arm]] = self.data.qpos[self._qadr[arm]]

    def step(self, n_control: int = 1) -> None:
        """Advance n control periods (each rig.CONTROL_HZ^-1 s of sim time)."""
        for _ in range(n_control):
            for arm in rig.FOLLOWERS:
                if not self.torque_enabled[arm]:  # limp: targets track the measured pose
                    self.data.ctrl[self._act[arm]] = self.data.qpos[self._qadr[arm]]
            mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
            self._after_physics()

    def step_physics(self, dt: float) -> None:
        """Advance `dt` seconds of sim time (rounded to physics steps); the node's 100 Hz tick."""
        for arm in rig.FOLLOWERS:
            if not self.torque_enabled[arm]:
                self.data.ctrl[self._act[arm]] = self.data.qpos[self._qadr[arm]]
        mujoco.mj_step(self.model, self.data, nstep=max(1, round(dt / self.model.opt.timestep)))
        self._after_physics()

    def _after_physics(self) -> None:
        # On a bad acceleration MuJoCo silently resets the state to the model's default pose: objects
        # jump home and a success detector could fire on a scene the policy never produced. Flag the
        # episode and freeze the task's verdict (success reached before the divergence still counts).
        if not self.diverged and any(self.data.warning[w].number for w in _RESET_WARNINGS):
            self.diverged = True
            warnings.warn(
                f"simulation diverged at t={self.data.time:.3f} s (task {self.task.name}, seed {self.seed}); "
                "the task verdict is frozen for this episode. Usually a violent command: check the limits.",
                RuntimeWarning,
                stacklevel=3,
            )
        if not self.diverged:
            self.task.update(self.model, self.data)

    def joint_states(self, arm: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
        """(names, position, velocity, effort) in xs_sdk order incl. `gripper` and both fingers."""
        q = self.data.qpos[self._qadr[arm]]
        v = self.data.qvel[self._dadr[arm]]
        f = self.data.actuator_force[self._act[arm]]
        g = normalised_from_finger(q[6])
        gripper = rig.FOLLOWER_GRIPPER.closed + g * (rig.FOLLOWER_GRIPPER.open - rig.FOLLOWER_GRIPPER.closed)
        span = (rig.FOLLOWER_GRIPPER.open - rig.FOLLOWER_GRIPPER.closed) / (FINGER_OPEN - FINGER_CLOSED)
        gripper_vel = v[6] * span
        pos = np.concatenate([q[:6], [gripper], q[6:8]])
        vel = np.concatenate([v[:6], [gripper_vel], v[6:8]])
        eff = np.concatenate([f[:6], [f[6]], f[6:8]])
        return rig.XS_JOINT_NAMES, pos, vel, eff

    def state(self) -> np.ndarray:
        """14-D state in the action layout (gripper normalised)."""
        out = np.empty(rig.ACTION_DIM)
        for i, arm in enumerate(rig.FOLLOWERS):
            q = self.data.qpos[self._qadr[arm]]
            out[7 * i : 7 * i + 6] = q[:6]
            out[7 * i + 6] = normalised_from_finger(q[6])
        return out

    def arm_qpos(self, arm: str) -> np.ndarray:
        return self.data.qpos[self._qadr[arm][:6]].copy()

    # --------------------------------------------------------------------------------- frames
    def gripper_pose(self, arm: str) -> np.ndarray:
        """World pose (4x4) of rig.gripper_frame(arm) (Interbotix ee_gripper_link)."""
        s = self._ee_site[arm]
        return pose_matrix(self.data.site_xpos[s], self.data.site_xmat[s])

    def grasp_point(self, arm: str) -> np.ndarray:
        """World position (3,) of the point between the fingertips where a grasped object sits
        (GRASP_OFFSET along gripper_link's x): where reaching is judged, not ee_gripper_link."""
        return self.data.site_xpos[self._grasp_site[arm]].copy()

    def camera_pose(self, cam: str) -> np.ndarray:
        """World pose (4x4) of rig.color_optical_frame(cam), REP 103 optical axes."""
        c = self._cam_ids[cam]
        return pose_matrix(self.data.cam_xpos[c], self.data.cam_xmat[c].reshape(3, 3) @ _MJ_TO_OPTICAL)

    def camera_mount(self, cam: str) -> tuple[str, np.ndarray]:
        """(parent frame, 4x4 pose of the optical frame in it): world for fixed cameras, the
        arm's ee_gripper_link for wrist cameras (a rigid mount, as on the robot)."""
        T = self.camera_pose(cam)
        body = CAMERA_MOUNTS[cam].body
        if body is None:
            return rig.WORLD_FRAME, T
        arm = next(a for a, mj in MJ_ARM.items() if body.startswith(mj + "/"))
        return rig.gripper_frame(arm), np.linalg.inv(self.gripper_pose(arm)) @ T

    def link_poses(self) -> dict[str, np.ndarray]:
        """World poses of the arm links, named like Interbotix (`follower_left/upper_arm_link`, ...)."""
        out = {}
        for arm, mj in MJ_ARM.items():
            out[f"{arm}/base_link"] = pose_matrix(
                self.data.xpos[self.model.body(mj).id], self.data.xmat[self.model.body(mj).id]
            )
            for link in (
                "shoulder_link",
                "upper_arm_link",
                "upper_forearm_link",
                "lower_forearm_link",
                "wrist_link",
                "gripper_link",
                "left_finger_link",
                "right_finger_link",
            ):
                b = self.model.body(f"{mj}/{link}").id
                out[f"{arm}/{link}"] = pose_matrix(self.data.xpos[b], self.data.xmat[b])
            out[rig.gripper_frame(arm)] = self.gripper_pose(arm)
        return out

    def intrinsics(self, cam: str, image_size: tuple[int, int] | None = None) -> np.ndarray:
        h, w = image_size or self.image_size
        return camera_matrix(self.model.cam_fovy[self._cam_ids[cam]], h, w)

    # ------------------------------------------------------------------------------- rendering
    def render(self, cameras: tuple[str, ...] | None = None) -> dict[str, CameraFrame]:
        """RGB + depth (metres, optical z) of each camera, with K and T_world_cam."""
        if self._renderer is None:
            self._renderer = Renderer(self.model, *self.image_size, max_depth=self.max_depth)
        frames = {}
        for cam in cameras or self.cameras:
            rgb, depth = self._renderer.render(self.data, self._cam_ids[cam])
            frames[cam] = CameraFrame(rgb, depth, self.intrinsics(cam), self.camera_pose(cam))
        return frames

    # ---------------------------------------------------------------------------------- task
    def success(self) -> bool:
        return bool(self.task.success(self.model, self.data))

    def description(self) -> str:
        return self.task.description

    def object_positions(self) -> dict[str, list[float]]:
        return self.task.object_positions(self.model, self.data)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> AlohaSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
