"""The one description of the node graph, built from a profile. ROS-free (no rclpy, no launch).

`build_graph(profile, mode)` returns a `Graph` of

- `NodeSpec`: one ROS node (package, executable, name, namespace, parameters, remappings). The clamp
  nodes also name their Python class (`module:cls`) so the in-process runner can start them;
- `IncludeSpec`: another package's launch file with arguments (Interbotix xsarm_control per arm).

launch/*.launch.py turn a Graph into launch_ros actions (`to_launch_description`); run.py starts
its clamp nodes in one process. Both read only this, so what is tested here is what launches.

Modes: ``policy`` (arms + cameras + perception + inference + chunk executor + driver),
``teleop`` (arms + cameras + driver + teleop), ``record`` (teleop + recorder), ``arms`` (arms +
driver only), ``calibrate`` (followers + cameras + driver owned by clamp_bringup.calibrate; in
simulation the ChArUco board is placed). Hardware profiles start xs_sdk / realsense2_camera /
static TF; sim profiles start clamp_sim instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clamp_core import rig
from clamp_core.profile import followers, leaders, load_profile

MODES = ("policy", "teleop", "record", "arms", "calibrate")

# The clamp nodes: name -> (package, console script, module, class)
CLAMP_NODES: dict[str, tuple[str, str, str, str]] = {
    "sim": ("clamp_sim", "sim_node", "clamp_sim.sim_node", "SimNode"),
    "perception": ("clamp_perception", "perception_node", "clamp_perception.perception_node", "PerceptionNode"),
    "inference": ("clamp_policy", "inference_node", "clamp_policy.inference_node", "InferenceNode"),
    "chunk_executor": ("clamp_policy", "chunk_executor", "clamp_policy.executor_node", "ChunkExecutorNode"),
    "arm_driver": ("clamp_bringup", "arm_driver", "clamp_bringup.arm_driver_node", "ArmDriverNode"),
    "teleop": ("clamp_bringup", "teleop", "clamp_bringup.teleop_node", "TeleopNode"),
    "recorder": ("clamp_bringup", "recorder", "clamp_bringup.recorder_node", "RecorderNode"),
    "task": ("clamp_bringup", "task", "clamp_bringup.task_node", "TaskNode"),
}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    package: str
    executable: str
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()
    module: str | None = None  # Python module of a clamp node (in-process runnable)
    cls: str | None = None
    hardware: bool = False  # needs the robot (drivers from apt/robot image)

    @property
    def in_process(self) -> bool:
        return self.module is not None


@dataclass(frozen=True)
class IncludeSpec:
    name: str
    package: str
    launch_file: str  # relative to the package's share dir
    arguments: dict[str, str] = field(default_factory=dict)
    hardware: bool = True


# Fast DDS profile with a shared-memory segment large enough for camera images (see the file)
FASTDDS_PROFILE_FILE = "fastdds_large_messages.xml"
FASTDDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")  # Humble, Kilted


def fastdds_profile_path() -> Path:
    """The packaged Fast DDS profile (installed share/, or the source tree when run from it)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("clamp_bringup")) / "config" / FASTDDS_PROFILE_FILE
        if installed.is_file():
            return installed
    except (ImportError, LookupError):
        pass
    return Path(__file__).resolve().parents[1] / "config" / FASTDDS_PROFILE_FILE


@dataclass
class Graph:
    profile: dict
    mode: str
    nodes: list[NodeSpec]
    includes: list[IncludeSpec]
    # environment every process of the graph starts with (launch: SetEnvironmentVariable)
    environment: dict[str, str] = field(default_factory=dict)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in the {self.mode} graph; nodes: {[n.name for n in self.nodes]}")

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


def _clamp(key: str, params: dict) -> NodeSpec:
    package, exe, module, cls = CLAMP_NODES[key]
    return NodeSpec(name=key, package=package, executable=exe, parameters=params, module=module, cls=cls)


def _static_tf(name: str, parent: str, child: str, xyz, rpy) -> NodeSpec:
    """tf2_ros static_transform_publisher with the named-argument CLI (Humble and later)."""
    x, y, z = (float(v) for v in xyz)
    roll, pitch, yaw = (float(v) for v in rpy)
    args = ("--x", x, "--y", y, "--z", z, "--roll", roll, "--pitch", pitch, "--yaw", yaw)
    args += ("--frame-id", parent, "--child-frame-id", child)
    return NodeSpec(
        name=name,
        package="tf2_ros",
        executable="static_transform_publisher",
        arguments=tuple(str(a) for a in args),
        hardware=True,
    )


def _profile_str(profile: list[int] | tuple[int, ...]) -> str:
    w, h, fps = (int(v) for v in profile)
    return f"{w}x{h}x{fps}"


def realsense_spec(cam: str, spec: dict) -> NodeSpec:
    """realsense2_camera (4.51+) for one D405: distinct camera_name, aligned depth, remapped to rig topics."""
    name = spec["camera_name"]
    params = {
        # launch_ros reads an all-digit string as an integer and realsense2_camera refuses a non-string
        # serial_no; like realsense-ros's own launch files, pass it with a "_" prefix (the node strips it)
        "serial_no": "_" + str(spec["serial"]).lstrip("_"),
        "camera_name": name,
        "camera_namespace": cam,
        "enable_color": True,
        "enable_depth": True,
        "enable_infra1": False,
        "enable_infra2": False,
        "align_depth.enable": bool(spec.get("align_depth", True)),
        "pointcloud.enable": False,
        "publish_tf": True,
        # the D405 streams colour from its depth module
        "depth_module.depth_profile": _profile_str(spec["depth_profile"]),
        "depth_module.color_profile": _profile_str(spec["color_profile"]),
        "rgb_camera.color_profile": _profile_str(spec["color_profile"]),
    }
    color, depth = rig.color_topic(cam), rig.depth_topic(cam)
    remaps = (
        ("~/color/image_rect_raw", color),
        ("~/color/camera_info", rig.camera_info_topic(color)),
        ("~/aligned_depth_to_color/image_raw", depth),
        ("~/aligned_depth_to_color/camera_info", rig.camera_info_topic(depth)),
    )
    return NodeSpec(
        name=name,
        namespace=cam,
        package="realsense2_camera",
        executable="realsense2_camera_node",
        parameters=params,
        remappings=remaps,
        hardware=True,
    )


def config_dir() -> Path:
    """config/ of clamp_bringup (xs_sdk mode files): the source tree or the installed share dir."""
    here = Path(__file__).resolve().parent.parent / "config"
    if (here / "xs_modes").is_dir():
        return here
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("clamp_bringup")) / "config"


def runtime_dir() -> Path:
    """Where generated per-arm files go ($CLAMP_RUNTIME_DIR, default ~/.ros/clamp_bringup)."""
    return Path(os.environ.get("CLAMP_RUNTIME_DIR", "~/.ros/clamp_bringup")).expanduser()


def _motor_template(model: str) -> str:
    """The xs_sdk motor config of `model`: interbotix_xsarm_control's own where installed, else ours."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            vendor = Path(get_package_share_directory("interbotix_xsarm_control")) / "config" / f"{model}.yaml"
            if vendor.is_file():
                return vendor.read_text(encoding="utf-8")
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    ours = config_dir() / "xs_motors" / f"{model}.yaml"
    if not ours.is_file():
        raise ValueError(f"no xs_sdk motor config for robot_model {model!r} (looked for {ours})")
    return ours.read_text(encoding="utf-8")


def motor_config(arm: str, spec: dict, joint_state_hz: float, out_dir: Path | None = None) -> Path:
    """Write `arm`'s xs_sdk motor config with its own `port` (one U2D2 per arm) and joint state rate."""
    text = _motor_template(spec["robot_model"])
    text, n = re.subn(r"(?m)^port:.*$", f"port: {spec['port']}", text)
    if n != 1:
        raise ValueError(f"motor config of {spec['robot_model']} has {n} `port:` lines, expected 1")
    text = re.sub(r"(?m)^(\s+update_rate:).*$", rf"\g<1> {int(round(joint_state_hz))}", text)
    out = (out_dir or runtime_dir() / "xs_motors") / f"{arm}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")
    return out


def xsarm_include(arm: str, spec: dict, joint_state_hz: float = 100.0) -> IncludeSpec:
    """Interbotix xs_sdk + robot_state_publisher for one arm (interbotix_xsarm_control)."""
    modes = config_dir() / "xs_modes" / ("follower_modes.yaml" if spec["role"] == "follower" else "leader_modes.yaml")
    args = {
        "robot_model": str(spec["robot_model"]),
        "robot_name": arm,
        "base_link_frame": "base_link",
        "use_world_frame": "false",
        "use_rviz": "false",
        "mode_configs": str(modes),
    }
    # an explicit motor_configs file is taken as is (its port is then the owner's business)
    args["motor_configs"] = str(spec.get("motor_configs") or motor_config(arm, spec, joint_state_hz))
    return IncludeSpec(
        name=f"xsarm_{arm}",
        package="interbotix_xsarm_control",
        launch_file="launch/xsarm_control.launch.py",
        arguments=args,
    )


def sim_parameters(profile: dict) -> dict[str, Any]:
    """clamp_sim parameters from the profile: task/seed/rate_factor, image size and rate of the cameras."""
    cams = profile["cameras"]
    if not cams:
        return {**profile["sim"], "camera_hz": 0.0, "joint_state_hz": profile["joint_state_hz"]}
    w, h, fps = next(iter(cams.values())).get("color_profile", (640, 480, 10))
    return {
        **profile["sim"],
        "image_width": int(w),
        "image_height": int(h),
        "camera_hz": float(fps),
        "joint_state_hz": float(profile["joint_state_hz"]),
        "cameras": list(cams),
    }


def build_graph(profile: dict | str, mode: str = "policy") -> Graph:
    """The node graph of `profile` (a loaded profile or its name/path) in `mode`."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; modes: {MODES}")
    prof = profile if isinstance(profile, dict) and "path" in profile else load_profile(profile)
    common = {"use_sim_time": bool(prof["use_sim_time"])}
    if prof.get("path"):
        common["profile"] = prof["path"]
    nodes: list[NodeSpec] = []
    includes: list[IncludeSpec] = []

    # the leaders take part in teleop and record only: there the driver runs ALOHA's opening
    # (leaders to the start pose, released on the operator's squeeze); in policy/arms it must not wait
    # for leaders nobody started
    with_leaders = mode in ("teleop", "record")
    if prof["hardware"]:
        needed = followers(prof) + (leaders(prof) if with_leaders else ())
        for arm in needed:
            spec = prof["arms"][arm]
            includes.append(xsarm_include(arm, spec, prof["joint_state_hz"]))
            base = spec.get("base")
            if base:
                nodes.append(_static_tf(f"tf_{arm}_base", base["parent"], f"{arm}/base_link", base["xyz"], base["rpy"]))
        if mode != "arms":
            for cam, spec in prof["cameras"].items():
                nodes.append(realsense_spec(cam, spec))
                m = spec["mount"]
                nodes.append(
                    _static_tf(f"tf_{cam}_mount", m["parent"], f"{spec['camera_name']}_link", m["xyz"], m["rpy"])
                )
    else:
        sim = {**common, **sim_parameters(prof)}
        if mode == "calibrate":  # the ChArUco board at its marked place (profile calibration.board)
            sim["calibration_board"] = True
        nodes.append(_clamp("sim", sim))

    owner = {
        "policy": rig.COMMAND_SOURCE_EXECUTOR,
        "teleop": rig.COMMAND_SOURCE_TELEOP,
        "record": rig.COMMAND_SOURCE_TELEOP,
        "arms": f"{rig.COMMAND_SOURCE_OPERATOR},{rig.COMMAND_SOURCE_CALIBRATION}",
        "calibrate": rig.COMMAND_SOURCE_CALIBRATION,
    }[mode]
    driver = {
        **common,
        "command_owner": owner,  # one producer owns the arms per mode; the driver refuses the rest
        "leaders_to_start": bool(prof["driver"]["leaders_to_start"]) and with_leaders and bool(leaders(prof)),
    }
    nodes.append(_clamp("arm_driver", driver))
    if mode == "policy":
        nodes.append(_clamp("perception", dict(common)))
        policy = {**common}
        if prof["policy"].get("checkpoint"):
            policy["checkpoint"] = str(prof["policy"]["checkpoint"])
        nodes.append(_clamp("inference", policy))
        nodes.append(_clamp("chunk_executor", dict(common)))
    if mode in ("teleop", "record"):
        nodes.append(_clamp("teleop", dict(common)))
    if mode == "record":
        nodes.append(_clamp("recorder", dict(common)))
    if prof["hardware"] and mode in ("policy", "record"):
        # the robot's one /clamp/task publisher (clamp_sim publishes the task in simulation)
        nodes.append(_clamp("task", {**common, "task": str(prof["policy"].get("task", ""))}))

    names = [n.name for n in nodes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate node names {sorted(dup)} in the {mode} graph")
    environment = {}
    if prof["hardware"]:  # camera images over shared memory, unless the user chose a profile of their own
        chosen = next((os.environ[v] for v in FASTDDS_PROFILE_VARIABLES if os.environ.get(v)), None)
        environment = dict.fromkeys(FASTDDS_PROFILE_VARIABLES, chosen or str(fastdds_profile_path()))
    return Graph(prof, mode, nodes, includes, environment)


def recorded_topics(profile: dict) -> dict[str, str]:
    """Topic -> message type that the recorder writes for this profile (the episode bag schema)."""
    topics: dict[str, str] = {}
    for arm in followers(profile) + leaders(profile):
        topics[rig.joint_states_topic(arm)] = "sensor_msgs/msg/JointState"
    for cam in profile["cameras"]:
        for image in (rig.color_topic(cam), rig.depth_topic(cam)):
            topics[image] = "sensor_msgs/msg/Image"
            topics[rig.camera_info_topic(image)] = "sensor_msgs/msg/CameraInfo"
    topics["/tf"] = "tf2_msgs/msg/TFMessage"
    topics["/tf_static"] = "tf2_msgs/msg/TFMessage"
    topics[rig.TASK_TOPIC] = "std_msgs/msg/String"
    return topics


def expected_rates(profile: dict) -> dict[str, float]:
    """Topic -> Hz the recorder should see (joint states at the control rate, cameras at their fps)."""
    rates: dict[str, float] = {}
    for arm in followers(profile) + leaders(profile):
        rates[rig.joint_states_topic(arm)] = float(profile["joint_state_hz"])
    for cam, spec in profile["cameras"].items():
        fps = float(spec.get("color_profile", (0, 0, 30))[2])
        for image in (rig.color_topic(cam), rig.depth_topic(cam)):
            rates[image] = fps
    return rates


# --------------------------------------------------------------------------------- launch adapter
def to_launch_description(graph: Graph, launch_api: dict | None = None):
    """launch.LaunchDescription for `graph` (imports launch/launch_ros only here, i.e. on the robot).

    `launch_api` may supply the classes by name (LaunchDescription, Node, IncludeLaunchDescription,
    PythonLaunchDescriptionSource, get_package_share_directory); by default they are imported.
    """
    api = dict(launch_api or {})
    if not api:
        from ament_index_python.packages import get_package_share_directory
        from launch import LaunchDescription
        from launch.actions import IncludeLaunchDescription
        from launch.launch_description_sources import PythonLaunchDescriptionSource
        from launch_ros.actions import Node

        api = {
            "LaunchDescription": LaunchDescription,
            "Node": Node,
            "IncludeLaunchDescription": IncludeLaunchDescription,
            "PythonLaunchDescriptionSource": PythonLaunchDescriptionSource,
            "get_package_share_directory": get_package_share_directory,
        }
    actions = []
    if graph.environment:
        if "SetEnvironmentVariable" not in api:
            from launch.actions import SetEnvironmentVariable

            api["SetEnvironmentVariable"] = SetEnvironmentVariable
        actions += [api["SetEnvironmentVariable"](k, v) for k, v in graph.environment.items()]
    for inc in graph.includes:
        share = api["get_package_share_directory"](inc.package)
        source = api["PythonLaunchDescriptionSource"](f"{share}/{inc.launch_file}")
        include = api["IncludeLaunchDescription"](source, launch_arguments=list(inc.arguments.items()))
        if inc.package == "interbotix_xsarm_control":
            include = _guarded(include, api)
        actions.append(include)
    for n in graph.nodes:
        kwargs: dict[str, Any] = {
            "package": n.package,
            "executable": n.executable,
            "output": "screen",
        }
        if not n.in_process:  # clamp nodes keep their own names (as in the in-process runner)
            kwargs["name"] = n.name
        if n.namespace:
            kwargs["namespace"] = n.namespace
        if n.parameters:
            kwargs["parameters"] = [dict(n.parameters)]
        if n.remappings:
            kwargs["remappings"] = list(n.remappings)
        if n.arguments:
            kwargs["arguments"] = list(n.arguments)
        actions.append(api["Node"](**kwargs))
    return api["LaunchDescription"](actions)


# Ctrl-C reaches every launched process at once; xs_sdk must outlive the arm driver's move to the
# sleep pose. Its processes start through clamp_bringup.shutdown_guard (launch-prefix), which holds
# the signal until the driver reports "asleep" (or exits); launch must not SIGTERM/SIGKILL it sooner.
SHUTDOWN_GUARD_PREFIX = "python3 -m clamp_bringup.shutdown_guard --timeout 25 --"
SHUTDOWN_GUARD_SIGTERM_S = "30"


def _guarded(include, api: dict):
    """`include` with its processes started through the shutdown guard (scoped launch configurations)."""
    if "GroupAction" not in api:
        from launch.actions import GroupAction, SetLaunchConfiguration

        api = {**api, "GroupAction": GroupAction, "SetLaunchConfiguration": SetLaunchConfiguration}
    return api["GroupAction"](
        [
            api["SetLaunchConfiguration"]("launch-prefix", SHUTDOWN_GUARD_PREFIX),
            api["SetLaunchConfiguration"]("sigterm_timeout", SHUTDOWN_GUARD_SIGTERM_S),
            api["SetLaunchConfiguration"]("sigkill_timeout", SHUTDOWN_GUARD_SIGTERM_S),
            include,
        ],
        scoped=True,
    )


def launch_description(default_profile: str, mode: str):
    """What every launch/*.launch.py returns: `profile:=` and `mode:=` arguments, then the graph."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    def setup(context):
        graph = build_graph(
            LaunchConfiguration("profile").perform(context), LaunchConfiguration("mode").perform(context)
        )
        return list(to_launch_description(graph).entities)

    return LaunchDescription(
        [
            DeclareLaunchArgument("profile", default_value=default_profile, description="config/profiles name or path"),
            DeclareLaunchArgument("mode", default_value=mode, description=f"one of {MODES}"),
            OpaqueFunction(function=setup),
        ]
    )
