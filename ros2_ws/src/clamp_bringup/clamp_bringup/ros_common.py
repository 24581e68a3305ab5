"""Small rclpy helpers shared by the clamp_bringup nodes (Humble-compatible API only)."""

from __future__ import annotations

import threading

import numpy as np
from clamp_perception import rig

from clamp_bringup.profile import load_profile


def declare_profile(node) -> dict:
    """Declare the `profile` parameter (name or path; default 'sim') and load that profile."""
    name = node.declare_parameter("profile", "sim").value
    return load_profile(name)


def positions_by_name(msg) -> dict[str, float]:
    return dict(zip(msg.name, msg.position, strict=False))


def call_service(node, client, request, timeout: float) -> object:
    """Call a service from a non-executor thread; the node must be spun elsewhere. Raises on timeout."""
    if not client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"service {client.srv_name} not available after {timeout:.1f}s")
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout):
        raise TimeoutError(f"service {client.srv_name} did not answer within {timeout:.1f}s")
    return future.result()


def state14(latest: dict[str, dict[str, float]], arms, gripper: rig.GripperCalibration) -> np.ndarray | None:
    """14-D state from the latest joint states of `arms`, or None until both arrived."""
    if not all(a in latest for a in arms):
        return None
    return rig.state_from_joint_states(latest, tuple(arms), gripper)


def msg_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class (clear error when the package is missing)."""
    import importlib

    pkg, sub, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"message type {msgtype} is not available; install/source the {pkg} package") from exc
