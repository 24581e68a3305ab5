"""Small rclpy helpers shared by the clamp_policy nodes (Humble-compatible API only)."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
from clamp_perception import rig


def stamp_to_s(stamp) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t: float):
    from builtin_interfaces.msg import Time

    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def now_s(node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


def load_profile_section(profile: str, section: str, sub: str) -> tuple[dict | None, dict]:
    """(whole profile or None, profile[section][sub] or {}) for a profile name/path ('' = none).

    The robot profile is clamp_bringup's (config/profiles/*.yaml); imported lazily so clamp_policy
    runs without clamp_bringup when no profile is given.
    """
    if not profile:
        return None, {}
    from clamp_bringup.profile import load_profile

    prof = load_profile(profile)
    return prof, dict(prof.get(section, {}).get(sub, {}) or {})


def declare_dataclass_params(node, cls, overrides: dict, skip: tuple[str, ...] = ()) -> dict:
    """Declare one ROS parameter per dataclass field and return {field: value}.

    Defaults come from `overrides` (the robot profile) else the field's default. Optional
    sequences (e.g. a pose) are string parameters holding comma-separated numbers ('' = None),
    because an empty ROS array parameter has no type on Humble.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    values = {}
    for name, f in fields.items():
        default = overrides.get(name, f.default)
        if f.default is None or isinstance(f.default, (list, tuple)):
            text = default if isinstance(default, str) else ",".join(str(float(v)) for v in (default or []))
            text = node.declare_parameter(name, text).value
            values[name] = [float(v) for v in text.split(",")] if text.strip() else None
        elif isinstance(f.default, bool):
            values[name] = bool(node.declare_parameter(name, bool(default)).value)
        elif isinstance(f.default, float):
            values[name] = float(node.declare_parameter(name, float(default)).value)
        else:
            values[name] = node.declare_parameter(name, type(f.default)(default)).value
    return values


class FollowerState:
    """Latest follower joint states (xs_sdk names) -> 14-D state with the older arm's stamp."""

    def __init__(self, gripper: rig.GripperCalibration = rig.FOLLOWER_GRIPPER) -> None:
        self.gripper = gripper
        self._latest: dict[str, dict[str, float]] = {}
        self._stamps: dict[str, float] = {}
        self._lock = threading.Lock()

    def update(self, arm: str, names, positions, stamp: float) -> tuple[np.ndarray, float] | None:
        if len(names) != len(positions):
            raise KeyError(f"joint_states of {arm}: {len(names)} names but {len(positions)} positions")
        with self._lock:
            self._latest[arm] = dict(zip(names, positions, strict=True))
            self._stamps[arm] = stamp
            if not all(a in self._latest for a in rig.FOLLOWERS):
                return None
            state = rig.state_from_joint_states(self._latest, rig.FOLLOWERS, self.gripper)
            return state, min(self._stamps.values())

    def latest(self) -> tuple[np.ndarray, float] | None:
        with self._lock:
            if not all(a in self._latest for a in rig.FOLLOWERS):
                return None
            return rig.state_from_joint_states(self._latest, rig.FOLLOWERS, self.gripper), min(self._stamps.values())


def publish_status(node, publisher, name: str, level, message: str, values: dict) -> None:
    """One /diagnostics status for `node`: every entry of `values` as a key/value pair."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id="aloha",
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(arr)
