"""SimNode: the simulated ALOHA on the robot's ROS interfaces (xs_sdk, realsense2_camera, TF, /clock).

Subscribes  /<follower>/commands/joint_group (name "arm", 6 positions) and .../joint_single
            ("gripper" angle, or one arm joint by name) - interbotix_xs_msgs, position targets.
Serves      /<follower>/torque_enable, /<follower>/set_operating_modes (like xs_sdk),
            /clamp_sim/reset (std_srvs/Trigger: next seed).
Publishes   /<follower>/joint_states (xs_sdk order incl. fingers) at `joint_state_hz` of sim time,
            per camera colour (rgb8) + aligned depth (16UC1 mm) + camera_info at `camera_hz`,
            /tf (arm links under <arm>/base_link, incl. ee_gripper_link) with every joint state,
            /tf_static (bases and fixed cameras in world, wrist cameras on ee_gripper_link),
            /clock, /clamp_sim/success (std_msgs/Bool), /clamp/task (text), /clamp_sim/objects (JSON).

Physics runs in its own thread, paced to `rate_factor` x real time; rendering that is slower than
that slows sim time instead of dropping frames, and every stamp is sim time (run consumers with
use_sim_time). Parameters: task, seed, image_height, image_width, camera_hz, joint_state_hz,
rate_factor, cameras.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from clamp_core import rig
from clamp_core.msg_conversions import make_camera_info, matrix_to_transform, ns_to_stamp, numpy_to_image
from clamp_core.ros import latched_publisher_qos, spin_node
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes, TorqueEnable
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from clamp_sim.aloha_sim import AlohaSim
from clamp_sim.demonstrations import dynamic_tf, static_tf

POSITION_MODES = ("position", "current_based_position", "ext_position")


class SimNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("clamp_sim", **kwargs)
        p = {
            "task": "transfer_cube",
            "seed": 0,
            "image_height": 480,
            "image_width": 640,
            "camera_hz": 10.0,
            "joint_state_hz": 100.0,
            "rate_factor": 1.0,
            "cameras": list(rig.CAMERAS),
            "render_quality": "fast",
            "profile": "",
            "calibration_board": False,  # place the profile's ChArUco board (clamp_sim.board)
        }
        for name, default in p.items():
            self.declare_parameter(name, default)
        get = lambda n: self.get_parameter(n).value  # noqa: E731
        self.seed = int(get("seed"))
        self.camera_hz, self.js_hz = float(get("camera_hz")), float(get("joint_state_hz"))
        self.rate_factor = float(get("rate_factor"))
        if self.js_hz <= 0 or self.rate_factor <= 0 or self.camera_hz < 0:
            raise ValueError("joint_state_hz and rate_factor must be > 0 and camera_hz >= 0 (0 = no cameras)")
        cams = tuple(get("cameras"))
        board = None
        if get("calibration_board"):
            from clamp_core.profile import load_profile

            board = load_profile(get("profile") or "sim")["calibration"]["board"]
        self.sim = AlohaSim(
            str(get("task")), image_size=(int(get("image_height")), int(get("image_width"))), cameras=cams, board=board
        )
        self.sim.reset(self.seed)
        self._t_offset = 0.0  # added to MuJoCo time so that ROS time never goes back on a reset
        self.lock = threading.Lock()
        self.modes: dict[str, str] = {}

        self.js_pub = {a: self.create_publisher(JointState, rig.joint_states_topic(a), 10) for a in rig.FOLLOWERS}
        self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
        self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", latched_publisher_qos())
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.success_pub = self.create_publisher(Bool, "/clamp_sim/success", 10)
        # transient-local (rig.TASK_LATCHED) so late joiners (policy, recorder) get the task text
        self.task_pub = self.create_publisher(
            String, rig.TASK_TOPIC, latched_publisher_qos() if rig.TASK_LATCHED else 10
        )
        self.objects_pub = self.create_publisher(String, "/clamp_sim/objects", 10)
        self.cam_pubs = {}
        for cam in cams:
            ct, dt = rig.color_topic(cam), rig.depth_topic(cam)
            self.cam_pubs[cam] = tuple(
                self.create_publisher(t, topic, 5)
                for t, topic in (
                    (Image, ct),
                    (CameraInfo, rig.camera_info_topic(ct)),
                    (Image, dt),
                    (CameraInfo, rig.camera_info_topic(dt)),
                )
            )
        for arm in rig.FOLLOWERS:
            self.create_subscription(
                JointGroupCommand, rig.joint_group_topic(arm), lambda m, a=arm: self.on_group(a, m), 10
            )
            self.create_subscription(
                JointSingleCommand, rig.joint_single_topic(arm), lambda m, a=arm: self.on_single(a, m), 10
            )
            self.create_service(
                TorqueEnable, rig.torque_enable_service(arm), lambda req, res, a=arm: self.on_torque(a, req, res)
            )
            self.create_service(
                OperatingModes, rig.operating_modes_service(arm), lambda req, res, a=arm: self.on_modes(a, req, res)
            )
        self.create_service(Trigger, "/clamp_sim/reset", self.on_reset)
        self.publish_static()
        self._running = True
        self.frames_published = 0
        self._thread = threading.Thread(target=self._loop, name="clamp_sim_physics", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"clamp_sim: task {self.sim.task.name} seed {self.seed}, cameras {cams} at {self.camera_hz} Hz "
            f"{self.sim.image_size[1]}x{self.sim.image_size[0]}, joint states at {self.js_hz} Hz, x{self.rate_factor}"
        )

    # ----------------------------------------------------------------------------- commands
    def on_group(self, arm: str, msg: JointGroupCommand) -> None:
        if msg.name not in (rig.ARM_GROUP, "all") or len(msg.cmd) != 6:
            self.get_logger().error(
                f"{arm}: joint_group command name={msg.name!r} with {len(msg.cmd)} values ignored; "
                f"send name='{rig.ARM_GROUP}' with 6 positions {rig.ARM_JOINT_NAMES}",
                throttle_duration_sec=2.0,
            )
            return
        try:
            with self.lock:
                self.sim.command_arm(arm, np.asarray(msg.cmd, float))
        except ValueError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=2.0)

    def on_single(self, arm: str, msg: JointSingleCommand) -> None:
        with self.lock:
            if msg.name == rig.GRIPPER_NAME:
                if np.isfinite(msg.cmd):
                    self.sim.command_gripper(arm, float(msg.cmd))
                return
            if msg.name in rig.ARM_JOINT_NAMES and np.isfinite(msg.cmd):
                i = rig.ARM_JOINT_NAMES.index(msg.name)
                target = self.sim.data.ctrl[self.sim._act[arm][:6]].copy()
                target[i] = msg.cmd
                self.sim.command_arm(arm, target)
                return
        self.get_logger().error(
            f"{arm}: joint_single for unknown joint {msg.name!r} ignored; use 'gripper' or "
            f"one of {rig.ARM_JOINT_NAMES}",
            throttle_duration_sec=2.0,
        )

    def on_torque(self, arm: str, req, res):
        # xs_sdk: cmd_type 'group' (name 'arm' or 'all') or 'single' (joint name); the sim's gripper
        # always holds its target, so only the arm group is switched.
        if req.cmd_type == "group" and req.name in (rig.ARM_GROUP, "all"):
            with self.lock:
                self.sim.set_torque(arm, bool(req.enable))
        return res

    def on_modes(self, arm: str, req, res):
        self.modes[f"{arm}/{req.cmd_type}/{req.name}"] = req.mode
        if req.mode not in POSITION_MODES:
            self.get_logger().warning(
                f"{arm}: operating mode {req.mode!r} for {req.cmd_type} {req.name!r} is not simulated; "
                f"clamp_sim is position-controlled ({POSITION_MODES})"
            )
        return res

    def _now_ns(self) -> int:
        """ROS time of the simulation (monotonic across resets)."""
        return int(round((self._t_offset + self.sim.time) * 1e9))

    def on_reset(self, req, res):
        with self.lock:
            self.seed += 1
            # ROS time never goes back: a reset continues the clock (MuJoCo restarts at t = 0); nodes
            # on sim time (the chunk executor's ticker, TF buffers) would otherwise stall or mix episodes
            self._t_offset += self.sim.time
            self.sim.reset(self.seed)
            self._reset_pending = True
        res.success, res.message = True, f"reset {self.sim.task.name} with seed {self.seed}"
        return res

    # ---------------------------------------------------------------------------- publishing
    def publish_static(self) -> None:
        ns = self._now_ns()
        tf = TFMessage(
            transforms=[matrix_to_transform(T, parent, child, ns) for parent, child, T in static_tf(self.sim)]
        )
        self.tf_static_pub.publish(tf)
        self.task_pub.publish(String(data=self.sim.description()))

    def _publish_state(self, ns: int) -> None:
        stamp = ns_to_stamp(ns)
        self.clock_pub.publish(Clock(clock=stamp))
        for arm in rig.FOLLOWERS:
            names, pos, vel, eff = self.sim.joint_states(arm)
            msg = JointState(name=list(names), position=pos.tolist(), velocity=vel.tolist(), effort=eff.tolist())
            msg.header.stamp = stamp
            self.js_pub[arm].publish(msg)
        self.tf_pub.publish(
            TFMessage(
                transforms=[matrix_to_transform(T, parent, child, stamp) for parent, child, T in dynamic_tf(self.sim)]
            )
        )

    def _publish_frames(self, ns: int) -> None:
        stamp = ns_to_stamp(ns)
        for cam, f in self.sim.render().items():
            frame = rig.color_optical_frame(cam)
            h, w = f.rgb.shape[:2]
            info = make_camera_info(f.K, h, w, frame, stamp)
            color_pub, color_info_pub, depth_pub, depth_info_pub = self.cam_pubs[cam]
            color_pub.publish(numpy_to_image(f.rgb, "rgb8", stamp, frame))
            color_info_pub.publish(info)
            depth_pub.publish(numpy_to_image(f.depth_mm, "16UC1", stamp, frame))
            depth_info_pub.publish(info)
        self.frames_published += 1

    def _loop(self) -> None:
        js_dt = 1.0 / self.js_hz
        cam_dt = 1.0 / self.camera_hz if self.camera_hz > 0 and self.cam_pubs else None
        wall0, sim0 = time.monotonic(), self.sim.time
        next_cam = self.sim.time
        self._reset_pending = False
        while self._running and self.context.ok():
            try:
                with self.lock:
                    if self._reset_pending:  # restart pacing and TF from the reset state
                        self._reset_pending = False
                        wall0, sim0, next_cam = time.monotonic(), self.sim.time, self.sim.time
                        self.publish_static()
                    ns = self._now_ns()
                    self._publish_state(ns)
                    if cam_dt is not None and self.sim.time + 1e-9 >= next_cam:
                        self._publish_frames(ns)
                        next_cam += cam_dt
                    self.sim.step_physics(js_dt)
                    success = self.sim.success()
                    self.success_pub.publish(Bool(data=success))
                    if int(round(self.sim.time / js_dt)) % 10 == 0:
                        self.objects_pub.publish(String(data=json.dumps(self.sim.object_positions())))
                # pace: never ahead of rate_factor x real time; behind (slow rendering) -> sim time slows
                ahead = (self.sim.time - sim0) / self.rate_factor - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -0.5:  # far behind: re-anchor instead of racing to catch up
                    wall0, sim0 = time.monotonic(), self.sim.time
            except Exception as exc:  # keep the robot "up"; report loudly
                if not self.context.ok():
                    break
                self.get_logger().error(f"sim loop: {type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
                time.sleep(0.1)
        self.sim.close()  # the GL context belongs to this thread

    def destroy_node(self):
        self._running = False
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> None:
    spin_node(SimNode, args)


if __name__ == "__main__":
    main()
