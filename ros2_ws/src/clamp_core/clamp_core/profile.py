"""Robot profiles (clamp_core/config/profiles/<name>.yaml): load, fill defaults, validate. ROS-free.

A profile is the single source of truth for one robot: arms, cameras (serials, stream profiles,
mounts), gripper calibration, limits, and the settings of the driver, teleop, recorder and policy
nodes. clamp_bringup's node graph hands each node the profile's path as its `profile` parameter;
the nodes read it through this module.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from clamp_core import rig
from clamp_core.safety import SafetyConfigError, SafetyLimits, WorkspaceGuard

PACKAGE = "clamp_core"
TOP_LEVEL_KEYS = {
    "name",
    "use_sim_time",
    "joint_state_hz",
    "hardware",
    "arms",
    "cameras",
    "camera_defaults",
    "grippers",
    "limits",
    "sim",
    "driver",
    "teleop",
    "recorder",
    "perception",
    "policy",
    "calibration",
    "workspace",
}
REQUIRED_KEYS = ("name", "arms", "cameras", "driver")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the key and the fix."""


def config_dir() -> Path:
    """config/ of this package: the source tree (symlink install) or the installed share dir."""
    here = Path(__file__).resolve().parent.parent / "config"
    if (here / "profiles").is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / "config"
    except Exception as exc:
        raise ProfileError(f"cannot find {PACKAGE}/config; build the workspace (make setup)") from exc


def profile_names() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "profiles").glob("*.yaml"))


def resolve_profile_path(name_or_path: str | os.PathLike) -> Path:
    """'sim' -> config/profiles/sim.yaml; a path to a .yaml is taken as is."""
    s = str(name_or_path)
    if s.endswith((".yaml", ".yml")) or os.sep in s:
        path = Path(s).expanduser()
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist")
        return path
    path = config_dir() / "profiles" / f"{s}.yaml"
    if not path.is_file():
        raise ProfileError(f"unknown profile {s!r}; available: {profile_names()} (or give a path to a .yaml)")
    return path


def load_profile(name_or_path: str | os.PathLike | dict) -> dict:
    """Load and validate a profile; returns a plain dict with `path` set to its file (or None)."""
    if isinstance(name_or_path, dict):
        raw, path = copy.deepcopy(name_or_path), None
    else:
        path = resolve_profile_path(name_or_path)
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
        if not isinstance(raw, dict):
            raise ProfileError(f"{path}: a profile is a YAML mapping, got {type(raw).__name__}")
    prof = validate_profile(raw, str(path) if path else "<dict>")
    prof["path"] = str(path) if path else None
    return prof


def _vec14(value: Any, where: str) -> list[float]:
    arr = np.asarray(value, dtype=float)
    if arr.shape != (rig.ACTION_DIM,) or not np.all(np.isfinite(arr)):
        raise ProfileError(f"{where}: expected {rig.ACTION_DIM} finite numbers in rig.ACTION_NAMES order")
    return arr.tolist()


def validate_profile(raw: dict, where: str = "<profile>") -> dict:
    prof = copy.deepcopy(raw)
    unknown = sorted(set(prof) - TOP_LEVEL_KEYS)
    if unknown:
        raise ProfileError(f"{where}: unknown top-level key(s) {unknown}; allowed: {sorted(TOP_LEVEL_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in prof]
    if missing:
        raise ProfileError(f"{where}: missing key(s) {missing}")
    prof.setdefault("use_sim_time", False)
    prof.setdefault("hardware", False)
    prof["joint_state_hz"] = float(prof.get("joint_state_hz", 100.0))
    for key in (
        "camera_defaults",
        "grippers",
        "limits",
        "sim",
        "teleop",
        "recorder",
        "perception",
        "policy",
        "workspace",
    ):
        prof[key] = dict(prof.get(key) or {})

    arms = prof["arms"] = dict(prof["arms"] or {})
    for arm, spec in arms.items():
        spec = arms[arm] = dict(spec or {})
        expected = "follower" if arm in rig.FOLLOWERS else "leader" if arm in rig.LEADERS else None
        if expected is None:
            raise ProfileError(f"{where}: arm {arm!r} is not a rig arm {rig.FOLLOWERS + rig.LEADERS}")
        if spec.setdefault("role", expected) != expected:
            raise ProfileError(f"{where}: arm {arm} must have role {expected!r}, not {spec['role']!r}")
        spec.setdefault("robot_model", "vx300s" if expected == "follower" else "wx250s")
        # one U2D2 per arm; ALOHA's udev rules name them /dev/ttyDXL_<arm>
        spec.setdefault("port", f"/dev/ttyDXL_{arm}")
    ports = [spec["port"] for spec in arms.values()]
    if prof.get("hardware") and len(set(ports)) != len(ports):
        raise ProfileError(f"{where}: every arm needs its own port (arms.<arm>.port), got {ports}")
    if not all(a in arms for a in rig.FOLLOWERS):
        raise ProfileError(f"{where}: both followers {rig.FOLLOWERS} are required under arms")

    cams = prof["cameras"] = dict(prof["cameras"] or {})
    serials = []
    for cam, spec in cams.items():
        if cam not in rig.CAMERAS:
            raise ProfileError(f"{where}: camera {cam!r} is not a rig camera {rig.CAMERAS}")
        spec = cams[cam] = {**prof["camera_defaults"], **dict(spec or {})}
        spec.setdefault("camera_name", cam)  # distinct per camera: realsense frames are <camera_name>_*
        if prof["hardware"]:
            if not str(spec.get("serial", "")).strip():
                raise ProfileError(f"{where}: camera {cam} needs a serial (rs-enumerate-devices -s)")
            serials.append(str(spec["serial"]))
            if "mount" not in spec:
                raise ProfileError(f"{where}: camera {cam} needs a calibrated mount {{parent, xyz, rpy}}")
        for key in ("color_profile", "depth_profile"):
            if key in spec and (len(spec[key]) != 3 or any(int(v) <= 0 for v in spec[key])):
                raise ProfileError(f"{where}: cameras.{cam}.{key} must be [width, height, fps]")
    if len(set(serials)) != len(serials):
        raise ProfileError(f"{where}: camera serials must be distinct, got {serials}")
    names = [c["camera_name"] for c in cams.values()]
    if len(set(names)) != len(names):
        raise ProfileError(f"{where}: camera_name must differ per camera (TF frames would collide): {names}")

    sim_keys = {"task", "seed", "rate_factor"}
    unknown = sorted(set(prof["sim"]) - sim_keys)
    if unknown:
        raise ProfileError(
            f"{where}: unknown sim key(s) {unknown}; allowed: {sorted(sim_keys)} (image size and "
            "rate come from camera_defaults.color_profile)"
        )

    g = prof["grippers"]
    for who, default in (("follower", rig.FOLLOWER_GRIPPER), ("leader", rig.LEADER_GRIPPER)):
        cal = g[who] = dict(g.get(who) or {"closed": default.closed, "open": default.open})
        if float(cal["closed"]) == float(cal["open"]):
            raise ProfileError(f"{where}: grippers.{who}: closed and open must differ")

    drv = prof["driver"] = dict(prof["driver"] or {})
    drv.setdefault("rate_hz", rig.CONTROL_HZ)
    drv.setdefault("motor_setup", True)
    drv.setdefault("service_timeout_s", 10.0)
    drv.setdefault("gripper_current_limit", 300)
    drv.setdefault("gripper_setup", True)  # reboot the follower grippers + write their current limit
    drv.setdefault("move_time_s", 2.0)
    drv.setdefault("leaders_to_start", False)
    drv.setdefault("command_owner", "")  # graph.py sets the owner per mode
    drv.setdefault("engage_tolerance", 0.1)  # rad / gripper units: a command stream must start at the arm
    drv.setdefault("command_timeout_s", 0.2)  # no command this long while moving: brake to rest
    for key in ("start_pose", "sleep_pose"):
        if key not in drv:
            raise ProfileError(f"{where}: driver.{key} is required (14 numbers, rig.ACTION_NAMES order)")
        drv[key] = _vec14(drv[key], f"{where}: driver.{key}")

    try:
        limits = SafetyLimits.from_profile(prof["limits"])
    except SafetyConfigError as exc:
        raise ProfileError(f"{where}: limits: {exc}") from exc
    for key in ("start_pose", "sleep_pose"):
        pose = np.asarray(drv[key])
        bad = [rig.ACTION_NAMES[i] for i in np.flatnonzero((pose < limits.lower) | (pose > limits.upper))]
        if bad:
            raise ProfileError(f"{where}: driver.{key} is outside the joint limits for {bad}")
    try:
        guard = WorkspaceGuard.from_profile(prof["workspace"])
    except (SafetyConfigError, TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: workspace: {exc}") from exc
    for key in ("start_pose", "sleep_pose"):
        why = guard.violation(drv[key])
        if why:
            raise ProfileError(f"{where}: driver.{key} fails the workspace guard: {why}")

    tel = prof["teleop"]
    tel.setdefault("rate_hz", rig.CONTROL_HZ)
    tel.setdefault("start_gesture", True)
    tel.setdefault("gesture_threshold", 0.15)
    tel.setdefault("gesture_hold_s", 0.3)

    rec = prof["recorder"]
    rec.setdefault("out_dir", "~/clamp_episodes")
    rec.setdefault("min_free_gb", 1.0)
    rec.setdefault("flush_interval_s", 0.5)
    rec.setdefault("min_control_hz", 45.0)
    rec.setdefault("gesture", True)
    # realsense2_camera and clamp_sim publish images reliable: a reliable subscription loses no frame;
    # best_effort is for cameras publishing with the sensor_data profile
    rec.setdefault("sensor_qos", "reliable")
    rec.setdefault("gesture_threshold", 0.15)
    rec.setdefault("gesture_hold_s", 1.5)
    rec.setdefault("task", "")
    rec.setdefault("source", "teleop")
    rec.setdefault("action_source", "leader_joint_states/leader_gripper")
    prof["calibration"] = validate_calibration(prof.get("calibration"), where)
    return prof


# The ChArUco board of clamp_bringup.calibrate and clamp_sim: 7 x 5 squares of 5 cm on A3, on a
# 35-degree wedge at a marked place behind the task area, printed face towards the front and up.
CALIBRATION_DEFAULTS = {
    "board": {
        "squares": [7, 5],
        "square_m": 0.05,
        "marker_m": 0.037,
        "margin_m": 0.01,
        "dictionary": "DICT_4X4_50",
        "xyz": [-0.175, 0.8824, 0.1634],  # board frame origin (outer corner of the first square) in world
        "rpy": [-2.5307274, 0.0, 0.0],
    },
    "wrist_poses": 12,  # eye-in-hand views per wrist camera (>= 10)
    "speed_scale": 0.25,  # fraction of the joint velocity limits for calibration moves
    "fixed_use_depth": True,  # refine fixed cameras' board pose with its depth pixels (after the depth check)
    "max_reprojection_px": 1.0,  # per view RMS
    "max_view_mm": 3.0,  # per wrist view: board pose implied by the view vs the consensus
    "max_view_deg": 0.5,
    "max_depth_mm": 6.0,  # depth plane vs colour pose of the board
    "max_depth_deg": 3.0,
}


def validate_calibration(section: Any, where: str) -> dict:
    """The `calibration` section: defaults filled, unknown keys named, board geometry checked."""
    cal = copy.deepcopy(CALIBRATION_DEFAULTS)
    section = dict(section or {})
    unknown = sorted(set(section) - set(cal))
    if unknown:
        raise ProfileError(f"{where}: unknown calibration key(s) {unknown}; allowed: {sorted(cal)}")
    board = dict(section.pop("board", None) or {})
    unknown = sorted(set(board) - set(cal["board"]))
    if unknown:
        raise ProfileError(f"{where}: unknown calibration.board key(s) {unknown}; allowed: {sorted(cal['board'])}")
    cal["board"].update(board)
    cal.update(section)
    b = cal["board"]
    if len(b["squares"]) != 2 or min(int(v) for v in b["squares"]) < 3:
        raise ProfileError(f"{where}: calibration.board.squares must be [columns, rows], each >= 3")
    if not 0 < float(b["marker_m"]) < float(b["square_m"]):
        raise ProfileError(f"{where}: calibration.board.marker_m must be > 0 and smaller than square_m")
    if len(b["xyz"]) != 3 or len(b["rpy"]) != 3:
        raise ProfileError(f"{where}: calibration.board.xyz and rpy take 3 numbers each (metres, radians)")
    if int(cal["wrist_poses"]) < 10:
        raise ProfileError(f"{where}: calibration.wrist_poses must be >= 10 (hand-eye needs diverse views)")
    if not 0 < float(cal["speed_scale"]) <= 0.5:
        raise ProfileError(f"{where}: calibration.speed_scale must be in (0, 0.5]: calibration moves run slowly")
    return cal


def safety_limits(profile: dict):
    """clamp_core.safety.SafetyLimits of this profile."""
    return SafetyLimits.from_profile(profile["limits"])


def workspace_guard(profile: dict) -> WorkspaceGuard:
    """clamp_core.safety.WorkspaceGuard of this profile (its `workspace` section)."""
    return WorkspaceGuard.from_profile(profile.get("workspace"))


def gripper_calibration(profile: dict, who: str) -> rig.GripperCalibration:
    cal = profile["grippers"][who]
    return rig.GripperCalibration(closed=float(cal["closed"]), open=float(cal["open"]))


def followers(profile: dict) -> tuple[str, ...]:
    return tuple(a for a in rig.FOLLOWERS if a in profile["arms"])


def leaders(profile: dict) -> tuple[str, ...]:
    return tuple(a for a in rig.LEADERS if a in profile["arms"])
