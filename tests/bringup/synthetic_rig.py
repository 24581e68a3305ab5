"""A synthetic ALOHA for recorder tests: every topic of the episode schema at known rates over DDS.

Joint states of all four arms (position[0] carries a sequence number so tests can find gaps),
small colour + aligned depth images with camera_info per camera (optionally skipping frames of one
camera while its header stamps run on: dropped frames), /tf, latched /tf_static, the task, and
optionally 14-D joint commands at a chosen rate (the control loop the recorder measures).
"""

from __future__ import annotations

import array
import threading
import time

import numpy as np
from clamp_core import rig
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SyntheticRig(Node):
    def __init__(self, joint_hz=50.0, camera_hz=15.0, command_hz=0.0, drop_every=0, drop_cam="cam_low", **kwargs):
        super().__init__("synthetic_rig", **kwargs)
        self.seq = 0
        self.joints_paused = False
        self.frame = 0
        self.drop_every, self.drop_cam = drop_every, drop_cam
        self.camera_hz = camera_hz
        self.js = {
            a: self.create_publisher(JointState, rig.joint_states_topic(a), 500) for a in rig.FOLLOWERS + rig.LEADERS
        }
        self.img, self.info = {}, {}
        for cam in rig.CAMERAS:
            for topic in (rig.color_topic(cam), rig.depth_topic(cam)):
                # deep (~6 s): a reliable writer keeps what a stalled reader has not acknowledged yet
                self.img[topic] = self.create_publisher(Image, topic, 100)
                self.info[topic] = self.create_publisher(CameraInfo, rig.camera_info_topic(topic), 100)
        self.tf = self.create_publisher(TFMessage, "/tf", 500)
        self.tf_static = self.create_publisher(TFMessage, "/tf_static", LATCHED)
        self.task = self.create_publisher(String, rig.TASK_TOPIC, LATCHED)
        self.cmd = self.create_publisher(JointState, rig.JOINT_COMMAND_TOPIC, 100)
        static = TFMessage(transforms=[self._tf("world", rig.color_optical_frame(c)) for c in rig.CAMERAS])
        self.tf_static.publish(static)
        self._rgb = array.array("B", np.full(24 * 32 * 3, 100, np.uint8).tobytes())
        self._depth = array.array("B", np.full(24 * 32, 500, np.uint16).tobytes())
        # One thread with absolute deadlines and nominal header stamps (rclpy timers burst under load,
        # which would make the streams themselves irregular); late events are published late, never skipped.
        self._streams = [(1.0 / joint_hz, self._joints), (1.0 / camera_hz, self._cameras), (0.5, self._task)]
        if command_hz:
            self._streams.append((1.0 / command_hz, self._command))
        self._stop = threading.Event()
        self._t0_ns = self.get_clock().now().nanoseconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        t0 = time.monotonic()
        counts = [0] * len(self._streams)
        while not self._stop.is_set():
            due = [t0 + (counts[i] + 1) * period for i, (period, _) in enumerate(self._streams)]
            i = int(np.argmin(due))
            delay = due[i] - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            counts[i] += 1
            try:
                self._streams[i][1](self._t0_ns + int((due[i] - t0) * 1e9))
            except Exception:  # context shut down at the end of a test
                return

    def destroy_node(self):
        self._stop.set()
        self._thread.join(timeout=2.0)
        super().destroy_node()

    @staticmethod
    def _stamp(ns):
        from builtin_interfaces.msg import Time

        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def _task(self, ns):
        self.task.publish(String(data="transfer the cube"))

    def _tf(self, parent, child):
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.header.stamp = self.get_clock().now().to_msg()
        t.transform.rotation.w = 1.0
        return t

    def _joints(self, ns):
        if self.joints_paused:
            return
        self.seq += 1
        stamp = self._stamp(ns)
        for pub in self.js.values():
            msg = JointState(name=list(rig.XS_JOINT_NAMES), position=[float(self.seq)] + [0.1] * 8)
            msg.header.stamp = stamp
            msg.effort = []  # as rclpy publishers send it: rosbags alone cannot read these back
            pub.publish(msg)
        self.tf.publish(TFMessage(transforms=[self._tf("world", "follower_left/ee_gripper_link")]))

    def _cameras(self, ns):
        self.frame += 1
        stamp = self._stamp(ns)
        for topic, pub in self.img.items():
            if self.drop_every and topic.startswith(f"/{self.drop_cam}/") and self.frame % self.drop_every == 0:
                continue
            depth = "aligned_depth" in topic
            msg = Image(height=24, width=32, encoding="16UC1" if depth else "rgb8", step=64 if depth else 96)
            msg.header.stamp = stamp
            msg.header.frame_id = topic.split("/")[1] + "_color_optical_frame"
            msg.data = self._depth if depth else self._rgb
            pub.publish(msg)
            info = CameraInfo(height=24, width=32)
            info.header = msg.header
            self.info[topic].publish(info)

    def _command(self, ns):
        msg = JointState(name=list(rig.ACTION_NAMES), position=[0.0] * 14)
        msg.header.stamp = self._stamp(ns)  # nominal, like the chunk executor's ticks: rated by stamp
        self.cmd.publish(msg)
