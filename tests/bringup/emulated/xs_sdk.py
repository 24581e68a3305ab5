"""An emulated Interbotix xs_sdk: one node per arm, as `xsarm_control.launch.py robot_name:=<arm>` starts.

It behaves like the driver on the real U2D2 + Dynamixel chain where a bring-up can go wrong:

- the motor config's `port` must be an existing device, and one port serves one xs_sdk (a second
  opener fails, as the U2D2 is exclusive): four arms sharing /dev/ttyDXL do not come up;
- joint_states (7 joints + fingers, xs_sdk names) at the motor config's update_rate;
- torque_enable / set_operating_modes (which, like xs_sdk, turns torque off, sets the mode and back on),
  set_motor_registers / get_motor_registers with EEPROM semantics (EEPROM registers such as
  Current_Limit refuse writes while the motor is torqued: the value stays), reboot_motors (torque off,
  back on only if asked);
- JointGroupCommand / JointSingleCommand move only torqued motors (profile_velocity 0 = full speed: a
  first-order lag); torque off leaves a joint where it is (or where an operator moves it: `hand_move`);
- it records every command and service call, and `on_exit` writes its last state (Ctrl-C order tests).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time

import numpy as np
import yaml
from clamp_core import rig, world
from clamp_core.geometry import matrix_to_quat
from geometry_msgs.msg import TransformStamped
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes, Reboot, RegisterValues, TorqueEnable
from rclpy.node import Node
from sensor_msgs.msg import JointState
from tf2_msgs.msg import TFMessage

JOINTS = rig.XS_JOINT_NAMES[:7]  # waist .. wrist_rotate, gripper
EEPROM = {"Current_Limit", "Operating_Mode", "Max_Position_Limit", "Min_Position_Limit", "Velocity_Limit"}
DEFAULT_REGISTERS = {"Current_Limit": 1193, "Profile_Velocity": 0, "Profile_Acceleration": 0}


class PortError(RuntimeError):
    pass


class XsSdkEmulator(Node):
    def __init__(
        self,
        robot_name: str,
        motor_configs: str,
        mode_configs: str,
        start=None,
        gripper: rig.GripperCalibration | None = None,
        tau: float = 0.03,
        publish_tf: bool | None = None,
        **kwargs,
    ) -> None:
        cfg = yaml.safe_load(open(motor_configs, encoding="utf-8"))
        self.port = str(cfg["port"])
        # the real driver opens the U2D2 before anything else: no device, no xs_sdk
        if not os.path.exists(self.port):
            raise PortError(f"[xs_sdk] Failed to open port at {self.port} (robot_name {robot_name})")
        self._fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            raise PortError(f"[xs_sdk] port {self.port} is busy: another xs_sdk has it ({robot_name})") from exc
        super().__init__("xs_sdk", namespace=robot_name, **kwargs)
        self.arm = robot_name
        self.rate = float(cfg["joint_state_publisher"]["update_rate"])
        modes = yaml.safe_load(open(mode_configs, encoding="utf-8"))
        self.gripper = gripper or (rig.FOLLOWER_GRIPPER if robot_name in rig.FOLLOWERS else rig.LEADER_GRIPPER)
        self.lock = threading.Lock()
        q0 = np.zeros(7) if start is None else np.asarray(start, float)
        self.q = np.r_[q0[:6], self.gripper.joint(q0[6])]
        self.target = self.q.copy()
        self.alpha = 1.0 - np.exp(-1.0 / (self.rate * tau))
        arm_on = bool(modes["groups"]["arm"].get("torque_enable", True))
        grip_on = bool(modes["singles"]["gripper"].get("torque_enable", True))
        self.torque = {j: (grip_on if j == "gripper" else arm_on) for j in JOINTS}
        self.mode = {j: modes["groups"]["arm"]["operating_mode"] for j in JOINTS[:6]}
        self.mode["gripper"] = modes["singles"]["gripper"]["operating_mode"]
        self.registers = {j: dict(DEFAULT_REGISTERS) for j in JOINTS}
        self.calls: list[tuple] = []
        self.refused_writes: list[tuple] = []
        self.commands: list[tuple[float, np.ndarray]] = []  # (monotonic time, 7 targets) as commanded
        self.publish_tf = robot_name in rig.FOLLOWERS if publish_tf is None else publish_tf
        self.pub = self.create_publisher(JointState, "joint_states", 10)
        self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
        self.create_subscription(JointGroupCommand, "commands/joint_group", self._on_group, 10)
        self.create_subscription(JointSingleCommand, "commands/joint_single", self._on_single, 10)
        self.create_service(TorqueEnable, "torque_enable", self._srv_torque)
        self.create_service(OperatingModes, "set_operating_modes", self._srv_modes)
        self.create_service(RegisterValues, "set_motor_registers", self._srv_set_reg)
        self.create_service(RegisterValues, "get_motor_registers", self._srv_get_reg)
        self.create_service(Reboot, "reboot_motors", self._srv_reboot)
        self._ticks = 0
        self.create_timer(1.0 / self.rate, self._tick)

    # ------------------------------------------------------------------------------ helpers
    def _targets(self, cmd_type: str, name: str) -> list[str]:
        if cmd_type == "group":
            return list(JOINTS) if name == "all" else list(JOINTS[:6])
        if name not in JOINTS:
            raise KeyError(f"no joint {name!r}")
        return [name]

    def hand_move(self, joint7) -> None:
        """An operator moves the (torque-off) joints by hand; torqued ones resist."""
        q = np.asarray(joint7, float)
        with self.lock:
            for i, j in enumerate(JOINTS):
                if not self.torque[j]:
                    self.q[i] = self.target[i] = q[i]

    def state7(self) -> np.ndarray:
        """Arm joints + normalised gripper."""
        with self.lock:
            return np.r_[self.q[:6], self.gripper.normalise(self.q[6])]

    # -------------------------------------------------------------------------------- topics
    def _on_group(self, msg: JointGroupCommand) -> None:
        if msg.name != rig.ARM_GROUP or len(msg.cmd) != 6:
            self.get_logger().error(f"group command {msg.name!r} with {len(msg.cmd)} values refused")
            return
        with self.lock:
            for i in range(6):
                if self.torque[JOINTS[i]]:
                    self.target[i] = msg.cmd[i]
            self.commands.append((time.monotonic(), np.r_[np.asarray(msg.cmd, float), self.target[6]]))

    def _on_single(self, msg: JointSingleCommand) -> None:
        if msg.name != rig.GRIPPER_NAME:
            self.get_logger().error(f"single command for {msg.name!r} refused")
            return
        with self.lock:
            if self.torque["gripper"]:
                self.target[6] = msg.cmd
            self.commands.append((time.monotonic(), np.r_[self.target[:6], float(msg.cmd)]))

    def _tick(self) -> None:
        with self.lock:
            on = np.array([self.torque[j] for j in JOINTS])
            self.q[on] += self.alpha * (self.target[on] - self.q[on])
            q = self.q.copy()
        stamp = self.get_clock().now().to_msg()
        fingers = 0.02 + 0.017 * float(np.clip(self.gripper.normalise(q[6]), 0.0, 1.0))
        msg = JointState(name=list(rig.XS_JOINT_NAMES))
        msg.position = [*map(float, q), fingers, -fingers]
        msg.header.stamp = stamp
        self.pub.publish(msg)
        self._ticks += 1
        if self.publish_tf:  # robot_state_publisher's part of xsarm_control: the gripper frames
            tfs = []
            for link in world.LINKS:
                T = world.arm_fk(q[:6], link)
                t = TransformStamped()
                t.header.stamp = stamp
                t.header.frame_id = f"{self.arm}/base_link"
                t.child_frame_id = f"{self.arm}/{link}"
                t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, T[:3, 3])
                x, y, z, w = matrix_to_quat(T[:3, :3])
                t.transform.rotation.x, t.transform.rotation.y = float(x), float(y)
                t.transform.rotation.z, t.transform.rotation.w = float(z), float(w)
                tfs.append(t)
            self.tf_pub.publish(TFMessage(transforms=tfs))

    # ------------------------------------------------------------------------------ services
    def _srv_torque(self, req, resp):
        with self.lock:
            for j in self._targets(req.cmd_type, req.name):
                self.torque[j] = bool(req.enable)
                if req.enable:  # torque on holds where the joint is
                    self.target[JOINTS.index(j)] = self.q[JOINTS.index(j)]
            self.calls.append(("torque", req.cmd_type, req.name, bool(req.enable)))
        return resp

    def _srv_modes(self, req, resp):
        with self.lock:
            for j in self._targets(req.cmd_type, req.name):
                self.mode[j] = req.mode  # xs_sdk: torque off, write Operating_Mode, torque back on
                self.torque[j] = True
                self.target[JOINTS.index(j)] = self.q[JOINTS.index(j)]
            self.calls.append(("mode", req.cmd_type, req.name, req.mode))
        return resp

    def _srv_set_reg(self, req, resp):
        with self.lock:
            self.calls.append(("set_register", req.cmd_type, req.name, req.reg, int(req.value)))
            for j in self._targets(req.cmd_type, req.name):
                if req.reg in EEPROM and self.torque[j]:
                    # the Dynamixel answers with an access error; xs_sdk only logs it
                    self.refused_writes.append((j, req.reg, int(req.value)))
                    self.get_logger().error(f"[xs_sdk] failed to write {req.reg} of {j}: torque is on (EEPROM)")
                    continue
                self.registers[j][req.reg] = int(req.value)
        return resp

    def _srv_get_reg(self, req, resp):
        with self.lock:
            resp.values = [int(self.registers[j].get(req.reg, 0)) for j in self._targets(req.cmd_type, req.name)]
        return resp

    def _srv_reboot(self, req, resp):
        with self.lock:
            for j in self._targets(req.cmd_type, req.name):
                self.torque[j] = bool(req.enable)
                self.target[JOINTS.index(j)] = self.q[JOINTS.index(j)]
            self.calls.append(("reboot", req.cmd_type, req.name, bool(req.enable)))
        return resp

    def destroy_node(self):
        try:
            os.close(self._fd)  # releases the port's lock
        except OSError:
            pass
        return super().destroy_node()


def make_ports(directory, arms) -> dict[str, str]:
    """One pseudo-terminal per arm, linked as <directory>/ttyDXL_<arm> (what ALOHA's udev rules make)."""
    import pty

    ports = {}
    for arm in arms:
        master, slave = pty.openpty()
        link = os.path.join(str(directory), f"ttyDXL_{arm}")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.ttyname(slave), link)
        ports[arm] = link
        # keep both ends open for the test's lifetime (a closed master hangs the slave up)
        _KEEP.extend([master, slave])
    return ports


_KEEP: list[int] = []
