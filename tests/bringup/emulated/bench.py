"""The emulated ALOHA: the `aloha` profile's graph against emulated hardware, in one rclpy context.

`AlohaBench(ros, tmp_path, mode)` builds clamp_bringup.graph.build_graph(aloha, mode) - the graph
`ros2 launch clamp_bringup aloha.launch.py mode:=...` launches - and starts

- for every IncludeSpec (interbotix xsarm_control): an XsSdkEmulator with that include's own
  arguments (robot_name, motor_configs - whose `port` must exist -, mode_configs);
- for every realsense2_camera NodeSpec: a RealSenseEmulator with the spec's name, namespace,
  parameters (as typed overrides) and remappings;
- for every tf2_ros static_transform_publisher NodeSpec: a StaticTransformEmulator parsing its
  command-line arguments;
- the clamp nodes through clamp_bringup.runner.start_graph, exactly as `python -m clamp_bringup.run`.

The profile is aloha.yaml with one change: each arm's `port` points at a pseudo-terminal linked as
ttyDXL_<arm> in tmp_path (what ALOHA's udev rules create under /dev).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from clamp_bringup.graph import build_graph
from clamp_bringup.runner import start_graph
from clamp_core import rig, world
from clamp_core.profile import load_profile
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from emulated.realsense import R_LINK_OPTICAL, RealSenseEmulator
from emulated.xs_sdk import XsSdkEmulator, make_ports

ALOHA = Path(load_profile("aloha")["path"])


class StaticTransformEmulator(Node):
    """tf2_ros static_transform_publisher with the named-argument CLI (--x ... --frame-id ...)."""

    def __init__(self, name: str, arguments, **kwargs) -> None:
        super().__init__(name, **kwargs)
        args = list(arguments)
        val = {args[i].lstrip("-"): args[i + 1] for i in range(0, len(args), 2)}
        self.parent, self.child = val["frame-id"], val["child-frame-id"]
        xyz = [float(val[k]) for k in ("x", "y", "z")]
        rpy = [float(val[k]) for k in ("roll", "pitch", "yaw")]
        self.matrix = world.pose_matrix(xyz, rpy)
        from clamp_core.geometry import matrix_to_quat

        t = TransformStamped()
        t.header.stamp = self.get_clock().now().to_msg()
        t.header.frame_id, t.child_frame_id = self.parent, self.child
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = xyz
        x, y, z, w = matrix_to_quat(self.matrix[:3, :3])
        t.transform.rotation.x, t.transform.rotation.y = float(x), float(y)
        t.transform.rotation.z, t.transform.rotation.w = float(z), float(w)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_publisher(TFMessage, "/tf_static", qos).publish(TFMessage(transforms=[t]))


def bench_profile(tmp_path: Path, arms=tuple(rig.FOLLOWERS + rig.LEADERS), edit=None) -> Path:
    """aloha.yaml with ports on pseudo-terminals in tmp_path; `edit(raw)` may change more."""
    raw = yaml.safe_load(ALOHA.read_text(encoding="utf-8"))
    # CPU on the shared test VM: joint states at 50 Hz (the robot's xs_sdk: 100 Hz)
    raw["joint_state_hz"] = 50.0
    ports = make_ports(tmp_path, arms)
    for arm, port in ports.items():
        raw["arms"][arm]["port"] = port
    if edit is not None:
        edit(raw)
    path = tmp_path / "aloha_bench.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


class AlohaBench:
    def __init__(
        self,
        ros,
        tmp_path: Path,
        mode: str,
        skip=(),
        starts: dict | None = None,
        overrides: dict | None = None,
        profile_path: Path | None = None,
        fps_cap: float = 5.0,
    ) -> None:
        self.ros = ros
        self.profile_path = profile_path or bench_profile(tmp_path)
        self.profile = load_profile(self.profile_path)
        self.graph = build_graph(self.profile, mode)
        sleep = np.array(self.profile["driver"]["sleep_pose"])
        starts = dict(starts or {})
        self.xs: dict[str, XsSdkEmulator] = {}
        for inc in self.graph.includes:
            arm = inc.arguments["robot_name"]
            side = 0 if arm.endswith("left") else 1
            start = starts.get(arm, sleep[7 * side : 7 * side + 7])
            self.xs[arm] = ros.add(
                XsSdkEmulator(
                    arm, inc.arguments["motor_configs"], inc.arguments["mode_configs"], start, context=ros.context
                )
            )
        self.static: dict[str, np.ndarray] = {}
        self.cameras: dict[str, RealSenseEmulator] = {}
        devices = [str(c["serial"]) for c in self.profile["cameras"].values()]
        for spec in self.graph.nodes:
            if spec.package == "tf2_ros":
                node = ros.add(StaticTransformEmulator(spec.name, spec.arguments, context=ros.context))
                self.static[node.child] = (node.parent, node.matrix)
        for spec in self.graph.nodes:
            if spec.package == "realsense2_camera":
                remaps = [a for src, dst in spec.remappings for a in ("-r", f"{src}:={dst}")]
                cam = spec.namespace
                self.cameras[cam] = ros.add(
                    RealSenseEmulator(
                        spec.name,
                        spec.namespace,
                        devices,
                        self._camera_pose_fn(spec.parameters["camera_name"]),
                        fps_cap=fps_cap,
                        context=ros.context,
                        parameter_overrides=[Parameter(k, value=v) for k, v in spec.parameters.items()],
                        cli_args=["--ros-args", *remaps],
                    )
                )
        hardware = [n.name for n in self.graph.nodes if not n.in_process]  # emulated above
        self.running = start_graph(
            self.graph, context=ros.context, executor=ros.executor, skip=(*hardware, *skip), overrides=overrides
        )
        self.nodes = self.running.nodes

    def _camera_pose_fn(self, camera_name: str):
        def pose(_stamp_ns):
            parent, link = self.static[f"{camera_name}_link"]
            T = link
            while parent != world.FRAME:  # through the emulated arm's kinematics
                arm, child_link = parent.split("/")
                if child_link == "base_link":
                    parent, base = self.static[parent]
                    T = base @ T
                    continue
                q = self.xs[arm].state7()[:6]
                T = world.arm_fk(q, child_link) @ T
                parent = f"{arm}/base_link"
            out = np.eye(4)
            out[:3, :3] = T[:3, :3] @ R_LINK_OPTICAL
            out[:3, 3] = T[:3, 3]
            return out

        return pose

    def state14(self) -> np.ndarray:
        return np.r_[self.xs["follower_left"].state7(), self.xs["follower_right"].state7()]

    def stop(self) -> None:
        self.running.stop()
