"""The ALOHA rig contract: names, topics, frames, joint order, limits and the 14-D action space.

One source of truth, imported by every package and by training/ (no ROS imports here).
Names and conventions follow ARCHITECTURE.md; joint limits are the ViperX 300 6DOF values of the
Interbotix motor configs, gripper calibration the ALOHA (ACT) constants; adjust per robot in the
bringup profile, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ------------------------------------------------------------------------------------------ names
FOLLOWERS = ("follower_left", "follower_right")  # left arm first in every 14-D vector
LEADERS = ("leader_left", "leader_right")
CAMERAS = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
WORLD_FRAME = "world"

# xs_sdk joint_states order
XS_JOINT_NAMES = (
    "waist",
    "shoulder",
    "elbow",
    "forearm_roll",
    "wrist_angle",
    "wrist_rotate",
    "gripper",
    "left_finger",
    "right_finger",
)
ARM_JOINT_NAMES = XS_JOINT_NAMES[:6]
ARM_GROUP = "arm"  # JointGroupCommand.name
GRIPPER_NAME = "gripper"  # JointSingleCommand.name

# 14-D action / state: per arm six joints then the gripper in [0, 1] (0 closed), left arm first.
ACTION_NAMES = tuple(f"{side}_{j}" for side in ("left", "right") for j in (*ARM_JOINT_NAMES, "gripper"))
ACTION_DIM = 14
CHUNK_LENGTH = 50  # actions per chunk
CONTROL_HZ = 50.0  # chunk points are 1 / CONTROL_HZ apart

# CLAMP virtual views: three fixed, two following the grippers; 224x224, channels depth, x, y, z.
VIEW_NAMES = ("overhead", "back_right", "front_left", "left_wrist", "right_wrist")
VIEW_SIZE = 224
VIEW_CHANNELS = ("depth", "x", "y", "z")


# ----------------------------------------------------------------------------------------- topics
def joint_states_topic(arm: str) -> str:
    return f"/{arm}/joint_states"


def joint_group_topic(arm: str) -> str:
    return f"/{arm}/commands/joint_group"


def joint_single_topic(arm: str) -> str:
    return f"/{arm}/commands/joint_single"


def torque_enable_service(arm: str) -> str:
    return f"/{arm}/torque_enable"


def operating_modes_service(arm: str) -> str:
    return f"/{arm}/set_operating_modes"


def reboot_service(arm: str) -> str:
    return f"/{arm}/reboot_motors"


def set_registers_service(arm: str) -> str:
    return f"/{arm}/set_motor_registers"


def get_registers_service(arm: str) -> str:
    return f"/{arm}/get_motor_registers"


def color_topic(cam: str) -> str:
    return f"/{cam}/camera/color/image_rect_raw"


def depth_topic(cam: str) -> str:
    return f"/{cam}/camera/aligned_depth_to_color/image_raw"


def camera_info_topic(image_topic: str) -> str:
    return image_topic.rsplit("/", 1)[0] + "/camera_info"


def color_optical_frame(cam: str) -> str:
    """realsense2_camera's frame for colour (and aligned depth) images."""
    return f"{cam}_color_optical_frame"


def gripper_frame(arm: str) -> str:
    """Interbotix's end-effector frame, which the wrist views follow."""
    return f"{arm}/ee_gripper_link"


# 14-D joint targets (gripper normalised) from the chunk executor or teleop to the arm driver,
# the single owner of the xs_sdk command topics: sensor_msgs/JointState, names = ACTION_NAMES.
JOINT_COMMAND_TOPIC = "/clamp/joint_command"
# One producer owns the arms at a time, chosen by mode (clamp_bringup.graph): each stamps its
# commands' header.frame_id with its name and the driver refuses every other source.
COMMAND_SOURCE_EXECUTOR = "chunk_executor"
COMMAND_SOURCE_TELEOP = "teleop"
COMMAND_SOURCE_OPERATOR = "operator"  # `arms` mode: a person's script; nothing else runs
COMMAND_SOURCE_CALIBRATION = "calibration"  # `arms` mode: clamp_bringup.calibrate moving the wrists
VIEWS_TOPIC = "/clamp/views"
CLOUD_TOPIC = "/clamp/cloud"
TASK_TOPIC = "/clamp/task"
# /clamp/task is latched like /tf_static: publishers AND subscribers use RELIABLE + TRANSIENT_LOCAL
# (depth 1), so a node started after the task was set still receives it (a volatile subscriber
# never gets a task published before it joined).
TASK_LATCHED = True
ACTION_CHUNK_TOPIC = "/clamp/action_chunk"
DIAGNOSTICS_TOPIC = "/diagnostics"
# The arm driver's state (std_msgs/String, transient-local QoS so late joiners get it): "waiting",
# "moving_to_start", "ready", "moving_to_sleep", "asleep". The chunk executor takes over the arms
# only while it is "ready" (commands sent before are dropped by the driver).
DRIVER_STATE_TOPIC = "/clamp/driver_state"


# ------------------------------------------------------------------------------------------ limits
@dataclass(frozen=True)
class JointLimits:
    lower: np.ndarray  # (14,) position lower bounds, rad (gripper: normalised 0)
    upper: np.ndarray  # (14,) position upper bounds, rad (gripper: normalised 1)
    velocity: np.ndarray  # (14,) max |velocity|, rad/s (gripper: normalised units / s)

    def clip(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, self.lower, self.upper)


# ViperX 300 6DOF (rad): waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate
_VX300S_LOWER = [-3.14158, -1.85005, -1.76278, -3.14158, -1.86750, -3.14158]
_VX300S_UPPER = [3.14158, 1.25664, 1.60570, 3.14158, 2.23402, 3.14158]
_VX300S_VEL = [3.14, 3.14, 3.14, 3.14, 3.14, 3.14]
_GRIPPER_VEL = 4.0  # full open<->close in 0.25 s

VX300S_LIMITS = JointLimits(
    lower=np.array((_VX300S_LOWER + [0.0]) * 2),
    upper=np.array((_VX300S_UPPER + [1.0]) * 2),
    velocity=np.array((_VX300S_VEL + [_GRIPPER_VEL]) * 2),
)


# ------------------------------------------------------------------------------- gripper mapping
@dataclass(frozen=True)
class GripperCalibration:
    """Linear map between the xs_sdk `gripper` joint angle (rad) and the normalised [0, 1] action."""

    closed: float
    open: float

    def normalise(self, joint: np.ndarray | float) -> np.ndarray | float:
        return (np.asarray(joint) - self.closed) / (self.open - self.closed)

    def joint(self, normalised: np.ndarray | float) -> np.ndarray | float:
        return self.closed + np.clip(normalised, 0.0, 1.0) * (self.open - self.closed)


FOLLOWER_GRIPPER = GripperCalibration(closed=-0.6213, open=1.4910)
LEADER_GRIPPER = GripperCalibration(closed=-0.6842, open=0.3083)


def state_from_joint_states(
    positions_by_arm: dict[str, dict[str, float]],
    arms: tuple[str, str] = FOLLOWERS,
    gripper: GripperCalibration = FOLLOWER_GRIPPER,
) -> np.ndarray:
    """14-D state from per-arm {joint name: position} (xs_sdk names), left arm first."""
    out = np.empty(ACTION_DIM)
    for i, arm in enumerate(arms):
        joints = positions_by_arm[arm]
        missing = [j for j in (*ARM_JOINT_NAMES, GRIPPER_NAME) if j not in joints]
        if missing:
            raise KeyError(f"joint_states of {arm} lack {missing}; expected xs_sdk names {XS_JOINT_NAMES}")
        out[7 * i : 7 * i + 6] = [joints[j] for j in ARM_JOINT_NAMES]
        out[7 * i + 6] = gripper.normalise(joints[GRIPPER_NAME])
    return out
