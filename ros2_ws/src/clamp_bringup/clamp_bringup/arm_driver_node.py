"""Arm driver node: the single owner of the xs_sdk command topics (thin; logic in driver.py).

Subscribes rig.JOINT_COMMAND_TOPIC (sensor_msgs/JointState, 14-D, gripper normalised) and the
followers' joint states; publishes interbotix_xs_msgs JointGroupCommand ("arm") and
JointSingleCommand ("gripper") per follower; calls xs_sdk's set_operating_modes / torque_enable
services at startup (followers: arm position, gripper current_based_position + current limit;
leaders: moved to the start pose, then torque off); moves smoothly to the start pose before
accepting commands and to the sleep pose on shutdown (`go_to_sleep`). Publishes /diagnostics.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from clamp_core import profile as profiles
from clamp_core import rig
from clamp_core.ros import (
    call_service,
    declare_profile,
    latched_publisher_qos,
    positions_by_name,
    publish_status,
    spin_node,
    state14,
)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes, Reboot, RegisterValues, TorqueEnable
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from clamp_bringup.arm_driver import ArmDriverCore, CommandError, SmoothMove, action_from_command, move_duration


class ArmDriverNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop("node_name", "arm_driver"), **kwargs)
        self.profile = declare_profile(self)
        drv = self.profile["driver"]
        self.rate_hz = float(self.declare_parameter("rate_hz", float(drv["rate_hz"])).value)
        self.motor_setup = bool(self.declare_parameter("motor_setup", bool(drv["motor_setup"])).value)
        self.service_timeout = float(self.declare_parameter("service_timeout_s", float(drv["service_timeout_s"])).value)
        move_time = float(self.declare_parameter("move_time_s", float(drv["move_time_s"])).value)
        self.leaders_to_start = bool(self.declare_parameter("leaders_to_start", bool(drv["leaders_to_start"])).value)
        self.current_limit = int(drv["gripper_current_limit"])
        self.gripper_setup = bool(drv["gripper_setup"])
        tel = self.profile["teleop"]
        self.squeeze_threshold = float(tel["gesture_threshold"])
        self.leaders_released = threading.Event()
        # who may command the arms in this mode (graph.py sets it per mode); "" = anyone
        owner = str(self.declare_parameter("command_owner", str(drv["command_owner"])).value)
        engage = float(self.declare_parameter("engage_tolerance", float(drv["engage_tolerance"])).value)
        timeout = float(self.declare_parameter("command_timeout_s", float(drv["command_timeout_s"])).value)

        self.followers = profiles.followers(self.profile)
        self.leaders = profiles.leaders(self.profile) if self.leaders_to_start else ()
        self.follower_gripper = profiles.gripper_calibration(self.profile, "follower")
        self.leader_gripper = profiles.gripper_calibration(self.profile, "leader")
        self.core = ArmDriverCore(
            profiles.safety_limits(self.profile),
            drv["start_pose"],
            drv["sleep_pose"],
            move_time_s=move_time,
            rate_hz=self.rate_hz,
            gripper=self.follower_gripper,
            owner=owner or None,
            engage_tolerance=engage,
            command_timeout_s=timeout,
        )
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, float]] = {}
        self._sleeping = threading.Event()
        self.startup_error: str | None = None

        self._group_pub = {}
        self._single_pub = {}
        self._torque = {}
        self._modes = {}
        for arm in self.followers + self.leaders:
            self._group_pub[arm] = self.create_publisher(JointGroupCommand, rig.joint_group_topic(arm), 10)
            self._single_pub[arm] = self.create_publisher(JointSingleCommand, rig.joint_single_topic(arm), 10)
            self._torque[arm] = self.create_client(TorqueEnable, rig.torque_enable_service(arm))
            self._modes[arm] = self.create_client(OperatingModes, rig.operating_modes_service(arm))
        self._reboot = {a: self.create_client(Reboot, rig.reboot_service(a)) for a in self.followers}
        self._set_reg = {a: self.create_client(RegisterValues, rig.set_registers_service(a)) for a in self.followers}
        self._get_reg = {a: self.create_client(RegisterValues, rig.get_registers_service(a)) for a in self.followers}
        for arm in self.followers + self.leaders:
            self.create_subscription(JointState, rig.joint_states_topic(arm), self._on_joint_states(arm), 10)
        self.create_subscription(JointState, rig.JOINT_COMMAND_TOPIC, self._on_command, 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, rig.DIAGNOSTICS_TOPIC, 10)
        # latched: the chunk executor takes the arms over only while this says "ready"
        self._state_pub = self.create_publisher(String, rig.DRIVER_STATE_TOPIC, latched_publisher_qos())
        self._published_state: str | None = None
        self.create_timer(1.0 / self.rate_hz, self._on_tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self._startup = threading.Thread(target=self._startup_sequence, name="arm_driver_startup", daemon=True)
        self._startup.start()

    # ----------------------------------------------------------------------------------- inputs
    def _on_joint_states(self, arm: str):
        def cb(msg: JointState) -> None:
            with self._lock:
                self._latest[arm] = positions_by_name(msg)
                state = state14(self._latest, self.followers, self.follower_gripper)
                if state is not None:
                    self.core.on_measured(state)

        return cb

    def _on_command(self, msg: JointState) -> None:
        try:
            target = action_from_command(msg.name, msg.position)
        except CommandError as exc:
            self.get_logger().error(
                f"ignoring joint command on {rig.JOINT_COMMAND_TOPIC}: {exc}", throttle_duration_sec=1.0
            )
            return
        now = time.monotonic()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            before = self.core.commands_rejected
            # the command's stamp is its producer's clock (arrival times jitter); unstamped = one tick
            cmd = self.core.command(target, stamp if stamp > 0 else None, msg.header.frame_id, now)
            refused = self.core.last_rejection if self.core.commands_rejected > before else ""
        if cmd is not None:
            self._publish(cmd)
        elif refused:
            self.get_logger().warning(f"joint command refused: {refused}", throttle_duration_sec=1.0)

    def _on_tick(self) -> None:
        with self._lock:
            state = self.core.state
        if state != self._published_state:
            self._state_pub.publish(String(data=state))
            self._published_state = state
        if self._sleeping.is_set():
            return
        with self._lock:
            cmd = self.core.tick(time.monotonic())
        if cmd is not None:
            self._publish(cmd)

    # ---------------------------------------------------------------------------------- outputs
    def _publish(self, cmd14: np.ndarray) -> None:
        for c in self.core.xs_commands(cmd14):
            self._send(c.arm, c.joints, c.gripper)

    def _send(self, arm: str, joints, gripper_joint: float) -> None:
        self._group_pub[arm].publish(JointGroupCommand(name=rig.ARM_GROUP, cmd=[float(v) for v in joints]))
        self._single_pub[arm].publish(JointSingleCommand(name=rig.GRIPPER_NAME, cmd=float(gripper_joint)))

    def _publish_diagnostics(self) -> None:
        with self._lock:
            state, counts = self.core.state, self.core.limiter.counts_by_joint()
            n_in, n_rej = self.core.commands_in, self.core.commands_rejected
            rejections = dict(self.core.rejections)
        level = DiagnosticStatus.ERROR if self.startup_error else DiagnosticStatus.OK
        values = {"state": state, "commands": n_in, "commands_refused": n_rej}
        values.update({f"refused_{k}": v for k, v in rejections.items()})
        values.update({f"clamped_{k}": sum(v.values()) for k, v in counts.items()})
        message = self.startup_error or state
        publish_status(self, self._diag_pub, "clamp_bringup/arm_driver", level, message, values)

    # ---------------------------------------------------------------------------------- startup
    def _wait_for_states(self, arms, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        last_log = time.monotonic()
        while self.context.ok() and not self._sleeping.is_set():
            with self._lock:
                if all(a in self._latest for a in arms):
                    return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            if time.monotonic() - last_log > 5.0:
                missing = [rig.joint_states_topic(a) for a in arms if a not in self._latest]
                self.get_logger().warn(f"waiting for joint states on {missing}")
                last_log = time.monotonic()
            time.sleep(0.02)
        return False

    def _set_modes(self, arm: str, gripper_mode: str) -> None:
        for cmd_type, name, mode in (("group", rig.ARM_GROUP, "position"), ("single", rig.GRIPPER_NAME, gripper_mode)):
            req = OperatingModes.Request(cmd_type=cmd_type, name=name, mode=mode, profile_type="time")
            call_service(self, self._modes[arm], req, self.service_timeout)

    def _torque_on(self, arm: str, enable: bool, cmd_type: str = "group", name: str = "all") -> None:
        req = TorqueEnable.Request(cmd_type=cmd_type, name=name, enable=enable)
        call_service(self, self._torque[arm], req, self.service_timeout)

    def _setup_follower_gripper(self, arm: str) -> None:
        """ALOHA's follower gripper setup: reboot (clears an overload error), then the current limit.

        Current_Limit is an EEPROM register: a servo takes it only with torque off (xs_sdk's
        set_operating_modes turns torque back on, so it must come before that). Read back to be sure.
        """
        call_service(
            self,
            self._reboot[arm],
            Reboot.Request(cmd_type="single", name=rig.GRIPPER_NAME, enable=False, smart_reboot=False),
            self.service_timeout,
        )
        self._torque_on(arm, False, "single", rig.GRIPPER_NAME)
        req = RegisterValues.Request(
            cmd_type="single", name=rig.GRIPPER_NAME, reg="Current_Limit", value=self.current_limit
        )
        call_service(self, self._set_reg[arm], req, self.service_timeout)
        got = call_service(
            self,
            self._get_reg[arm],
            RegisterValues.Request(cmd_type="single", name=rig.GRIPPER_NAME, reg="Current_Limit"),
            self.service_timeout,
        )
        if list(got.values) != [self.current_limit]:
            raise RuntimeError(
                f"{arm} gripper Current_Limit reads {list(got.values)} after writing {self.current_limit} "
                "(EEPROM write refused: torque still on?)"
            )

    def _startup_sequence(self) -> None:
        try:
            if not self._wait_for_states(self.followers):
                return
            if self.motor_setup:
                for arm in self.followers:
                    if self.gripper_setup:
                        self._setup_follower_gripper(arm)
                    self._set_modes(arm, "current_based_position")
                    self._torque_on(arm, True)
                if self.leaders:
                    self._leaders_to_start()
            with self._lock:
                duration = self.core.begin_start()
            self.get_logger().info(f"moving followers to the start pose over {duration:.2f}s")
            if self.leaders and self.motor_setup:
                self._release_leaders_on_squeeze()
        except Exception as exc:
            self.startup_error = f"startup failed: {exc}"
            self.get_logger().error(self.startup_error + " (the arms will not move; fix and restart the driver)")

    def _leaders_to_start(self) -> None:
        """ALOHA's opening: leaders in position mode, smooth move to the start pose; grippers released."""
        if not self._wait_for_states(self.leaders, self.service_timeout):
            raise TimeoutError(f"no joint states from leaders {self.leaders}")
        for arm in self.leaders:
            self._set_modes(arm, "position")
            self._torque_on(arm, True)
        with self._lock:
            start = rig.state_from_joint_states(self._latest, self.leaders, self.leader_gripper)
        goal = self.core.start_pose
        move = SmoothMove(start, goal, move_duration(start, goal, self.core.limits.velocity, self.core.move_time_s))
        self._run_move(move, self.leaders, self.leader_gripper)
        for arm in self.leaders:  # the arms stay held; the operator squeezes the grippers to take over
            self._torque_on(arm, False, "single", rig.GRIPPER_NAME)

    def _release_leaders_on_squeeze(self) -> None:
        """Hold the leader arms until the operator squeezes both grippers (else they would drop)."""
        self.get_logger().info("leaders held at the start pose: squeeze both leader grippers to take over")
        while self.context.ok() and not self._sleeping.is_set():
            with self._lock:
                q = rig.state_from_joint_states(self._latest, self.leaders, self.leader_gripper)
            if q[6] < self.squeeze_threshold and q[13] < self.squeeze_threshold:
                for arm in self.leaders:
                    self._torque_on(arm, False)
                self.leaders_released.set()
                self.get_logger().info("leaders released: teleoperate")
                return
            time.sleep(0.02)

    def _run_move(self, move: SmoothMove, arms, gripper: rig.GripperCalibration) -> None:
        dt = 1.0 / self.rate_hz
        while not move.done and self.context.ok():
            q = move.step(dt)
            for i, arm in enumerate(arms):
                self._send(arm, q[7 * i : 7 * i + 6], float(gripper.joint(q[7 * i + 6])))
            time.sleep(dt)

    # --------------------------------------------------------------------------------- shutdown
    def go_to_sleep(self, timeout: float = 15.0, settle_s: float = 3.0, spin_self: bool = False) -> bool:
        """Move the followers smoothly to the sleep pose (blocking; wall-clock paced). True when there.

        After the last command it waits (up to `settle_s`) until the followers' joint states show the
        sleep pose, and only then reports "asleep": the motor drivers (shutdown_guard) stop after that.
        `spin_self`: spin this node here meanwhile (at process shutdown nothing else spins it).
        """
        self._sleeping.set()
        spinner = None
        if spin_self:
            from rclpy.executors import SingleThreadedExecutor

            executor = SingleThreadedExecutor(context=self.context)
            executor.add_node(self)
            stop = threading.Event()

            def spin():
                while not stop.is_set() and self.context.ok():
                    executor.spin_once(timeout_sec=0.05)

            spinner = threading.Thread(target=spin, daemon=True)
            spinner.start()
        try:
            return self._sleep_move(timeout, settle_s)
        finally:
            if spinner is not None:
                stop.set()
                spinner.join(timeout=2.0)
                executor.remove_node(self)

    def _sleep_move(self, timeout: float, settle_s: float) -> bool:
        with self._lock:
            if self.core.measured is None:
                return False
            self.core.begin_sleep()
        self._announce()
        dt = 1.0 / self.rate_hz
        deadline = time.monotonic() + timeout
        last = None
        while self.context.ok() and time.monotonic() < deadline:
            with self._lock:
                cmd = self.core.tick()
            if cmd is None:
                break
            self._publish(cmd)
            last = cmd
            time.sleep(dt)
        arrived = False
        settle = time.monotonic() + settle_s
        while self.context.ok() and time.monotonic() < settle:
            with self._lock:
                measured = self.core.measured
            arm = [i for i in range(rig.ACTION_DIM) if i not in (6, 13)]
            if measured is not None and np.abs(measured - self.core.sleep_pose)[arm].max() < 0.03:
                arrived = True
                break
            if last is not None:
                self._publish(last)  # hold the sleep pose while the servos get there
            time.sleep(dt)
        self._announce()  # "asleep": the motor drivers may stop now (shutdown_guard)
        if not arrived:
            self.get_logger().warning("the followers did not report the sleep pose; stopping anyway")
        return self.core.state == "asleep" and arrived

    def _announce(self) -> None:
        """Publish the state now (during shutdown the tick timer no longer runs)."""
        with self._lock:
            state = self.core.state
        if self.context.ok() and state != self._published_state:
            self._state_pub.publish(String(data=state))
            self._published_state = state


def main(args=None) -> None:
    # the sleep move reads the joint states: the node is spun again while it runs
    spin_node(ArmDriverNode, args, on_shutdown=lambda node: node.go_to_sleep(spin_self=True))


if __name__ == "__main__":
    main()
