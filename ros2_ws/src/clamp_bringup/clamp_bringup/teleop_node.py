"""Teleop node: leaders mirrored onto the followers at the control rate (thin; logic in teleop.py).

Publishes 14-D targets on rig.JOINT_COMMAND_TOPIC (the arm driver owns the xs_sdk topics). Starts
when both leader grippers are squeezed (as on ALOHA) or by ~/start (std_srvs/Trigger); ~/stop stops.
"""

from __future__ import annotations

import threading

from clamp_core import profile as profiles
from clamp_core import rig
from clamp_core.ros import declare_profile, latched_subscriber_qos, positions_by_name, spin_node, state14
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from clamp_bringup.teleop import GripperGesture, TeleopCore, leader_action


class TeleopNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop("node_name", "teleop"), **kwargs)
        self.profile = declare_profile(self)
        tel = self.profile["teleop"]
        self.rate_hz = float(self.declare_parameter("rate_hz", float(tel["rate_hz"])).value)
        self.use_gesture = bool(self.declare_parameter("start_gesture", bool(tel["start_gesture"])).value)
        self.core = TeleopCore(profiles.safety_limits(self.profile), self.rate_hz)
        self.gesture = GripperGesture(float(tel["gesture_threshold"]), float(tel["gesture_hold_s"]))
        self.leader_gripper = profiles.gripper_calibration(self.profile, "leader")
        self.follower_gripper = profiles.gripper_calibration(self.profile, "follower")
        self._lock = threading.Lock()
        self._leaders: dict[str, dict[str, float]] = {}
        self._followers: dict[str, dict[str, float]] = {}
        self.published = 0
        for arm in rig.LEADERS:
            self.create_subscription(JointState, rig.joint_states_topic(arm), self._store(self._leaders, arm), 10)
        for arm in rig.FOLLOWERS:
            self.create_subscription(JointState, rig.joint_states_topic(arm), self._store(self._followers, arm), 10)
        self._pub = self.create_publisher(JointState, rig.JOINT_COMMAND_TOPIC, 10)
        self.create_subscription(String, rig.DRIVER_STATE_TOPIC, self._on_driver_state, latched_subscriber_qos())
        self.create_service(Trigger, "~/start", self._srv_start)
        self.create_service(Trigger, "~/stop", self._srv_stop)
        self.create_timer(1.0 / self.rate_hz, self._on_tick)

    def _store(self, table: dict, arm: str):
        def cb(msg: JointState) -> None:
            with self._lock:
                table[arm] = positions_by_name(msg)

        return cb

    def _on_driver_state(self, msg: String) -> None:
        with self._lock:
            stopped = self.core.on_driver_state(msg.data)
        if stopped:
            self.get_logger().warning(f"teleop stopped: the arm driver is {msg.data}")

    def _start(self) -> str | None:
        """Start mirroring; returns an error text when it cannot."""
        with self._lock:
            if self.core.active:
                return "teleop is already running"
            why = self.core.can_start()
            if why:
                return why
            followers = state14(self._followers, rig.FOLLOWERS, self.follower_gripper)
            if followers is None or state14(self._leaders, rig.LEADERS, self.leader_gripper) is None:
                return f"no joint states yet from {rig.FOLLOWERS + rig.LEADERS}; is the robot (or sim) up?"
            self.core.start(followers)
        self.get_logger().info("teleop started: followers mirror the leaders")
        return None

    def _srv_start(self, request, response):
        err = self._start()
        response.success, response.message = err is None, err or "teleop started"
        return response

    def _srv_stop(self, request, response):
        with self._lock:
            was = self.core.active
            self.core.stop()
        response.success, response.message = was, "teleop stopped" if was else "teleop was not running"
        return response

    def _on_tick(self) -> None:
        with self._lock:
            if state14(self._leaders, rig.LEADERS, self.leader_gripper) is None:
                return
            target = leader_action(self._leaders, self.leader_gripper)
            fire = self.use_gesture and self.gesture.update(
                self.get_clock().now().nanoseconds * 1e-9, target[6], target[13]
            )
        if fire and not self.core.active:
            self._start()
        with self._lock:
            cmd = self.core.step(target)
        if cmd is None:
            return
        msg = JointState(name=list(rig.ACTION_NAMES), position=[float(v) for v in cmd])
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = rig.COMMAND_SOURCE_TELEOP  # the driver takes commands from its mode's owner
        self._pub.publish(msg)
        self.published += 1


def main(args=None) -> None:
    spin_node(TeleopNode, args)


if __name__ == "__main__":
    main()
