"""The followers' latest joint states as one 14-D state, for the policy nodes. ROS-free."""

from __future__ import annotations

import threading

import numpy as np
from clamp_core import rig


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
