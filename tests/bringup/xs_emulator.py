"""An xs_sdk stand-in for protocol tests of the arm driver while no simulator is in the loop.

It speaks xs_sdk's ROS interface (joint_states at 100 Hz, JointGroupCommand / JointSingleCommand,
torque_enable / set_operating_modes services) and tracks commands with a first-order lag; it
records every service call and command so tests can check what the driver sent.
"""

from __future__ import annotations

import threading

import numpy as np
from clamp_core import rig
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes, TorqueEnable
from rclpy.node import Node
from sensor_msgs.msg import JointState


class XsEmulator(Node):
    def __init__(self, arms=rig.FOLLOWERS, start=None, tau=0.03, gripper=rig.FOLLOWER_GRIPPER, services=True, **kwargs):
        super().__init__(kwargs.pop("node_name", "xs_emulator"), **kwargs)
        self.arms = tuple(arms)
        self.gripper = gripper
        self.lock = threading.Lock()
        start = np.zeros(14) if start is None else np.asarray(start, float)
        self.q = {a: np.r_[start[7 * i : 7 * i + 6], gripper.joint(start[7 * i + 6])] for i, a in enumerate(self.arms)}
        self.target = {a: self.q[a].copy() for a in self.arms}
        self.alpha = 1.0 - np.exp(-0.01 / tau)
        self.calls: list[tuple] = []
        self.group_cmds: dict[str, list[np.ndarray]] = {a: [] for a in self.arms}
        self.single_cmds: dict[str, list[float]] = {a: [] for a in self.arms}
        self.pubs = {a: self.create_publisher(JointState, rig.joint_states_topic(a), 10) for a in self.arms}
        for a in self.arms:
            self.create_subscription(JointGroupCommand, rig.joint_group_topic(a), self._group(a), 10)
            self.create_subscription(JointSingleCommand, rig.joint_single_topic(a), self._single(a), 10)
            if services:
                self.create_service(TorqueEnable, rig.torque_enable_service(a), self._torque(a))
                self.create_service(OperatingModes, rig.operating_modes_service(a), self._modes(a))
        self.create_timer(0.01, self._tick)

    def _group(self, arm):
        def cb(msg):
            assert msg.name == rig.ARM_GROUP
            with self.lock:
                self.group_cmds[arm].append(np.array(msg.cmd, float))
                self.target[arm][:6] = msg.cmd

        return cb

    def _single(self, arm):
        def cb(msg):
            assert msg.name == rig.GRIPPER_NAME
            with self.lock:
                self.single_cmds[arm].append(float(msg.cmd))
                self.target[arm][6] = msg.cmd

        return cb

    def _torque(self, arm):
        def cb(req, resp):
            self.calls.append((arm, "torque", req.cmd_type, req.name, bool(req.enable)))
            return resp

        return cb

    def _modes(self, arm):
        def cb(req, resp):
            self.calls.append((arm, "mode", req.cmd_type, req.name, req.mode))
            return resp

        return cb

    def _tick(self):
        with self.lock:
            for a in self.arms:
                self.q[a] += self.alpha * (self.target[a] - self.q[a])
                q = self.q[a]
                msg = JointState(name=list(rig.XS_JOINT_NAMES))
                fingers = 0.02 + 0.01 * self.gripper.normalise(q[6])
                msg.position = [*map(float, q), float(fingers), float(-fingers)]
                msg.header.stamp = self.get_clock().now().to_msg()
                self.pubs[a].publish(msg)

    def state14(self) -> np.ndarray:
        with self.lock:
            return np.concatenate([np.r_[self.q[a][:6], self.gripper.normalise(self.q[a][6])] for a in self.arms])
