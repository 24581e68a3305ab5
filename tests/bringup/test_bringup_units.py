"""ROS-free parts of clamp_bringup: profiles, the node graph + launch adapter, driver/teleop/recorder logic."""

from __future__ import annotations

import copy
import importlib.util
import runpy
import struct
from pathlib import Path

import numpy as np
import pytest
from clamp_bringup import graph as G
from clamp_bringup.arm_driver import (
    ArmDriverCore,
    CommandError,
    action_from_command,
    min_jerk,
    to_xs_commands,
)
from clamp_bringup.recorder import StreamStats, header_stamp_ns
from clamp_bringup.replay import open_loop_error
from clamp_bringup.teleop import GripperGesture, TeleopCore, leader_action
from clamp_core import rig
from clamp_core.profile import ProfileError, load_profile, safety_limits

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "ros2_ws/src/clamp_bringup/launch"


# ----------------------------------------------------------------------------------------- profiles
@pytest.mark.parametrize("name", ["aloha", "sim"])
def test_profiles_load_and_follow_the_rig(name):
    p = load_profile(name)
    assert set(p["cameras"]) == set(rig.CAMERAS)
    assert all(a in p["arms"] for a in rig.FOLLOWERS + rig.LEADERS)
    assert len(p["driver"]["start_pose"]) == rig.ACTION_DIM
    lim = safety_limits(p)
    assert np.all(lim.lower <= p["driver"]["start_pose"]) and np.all(p["driver"]["start_pose"] <= lim.upper)


def test_aloha_profile_has_distinct_cameras_and_calibration():
    p = load_profile("aloha")
    assert p["hardware"] and not p["use_sim_time"]
    serials = [c["serial"] for c in p["cameras"].values()]
    assert len(set(serials)) == 4 and all(len(s) == 12 and s.isdigit() for s in serials)
    assert sorted(c["camera_name"] for c in p["cameras"].values()) == sorted(rig.CAMERAS)
    assert all(c["align_depth"] for c in p["cameras"].values())
    assert p["cameras"]["cam_left_wrist"]["mount"]["parent"] == "follower_left/gripper_link"


def test_bad_profiles_are_named():
    good = load_profile("aloha")
    del good["path"]
    for mutate, match in [
        (lambda p: p.update(colour="x"), "unknown top-level"),
        (lambda p: p["arms"].update(follower_middle={}), "not a rig arm"),
        (lambda p: p["cameras"]["cam_low"].update(serial=p["cameras"]["cam_high"]["serial"]), "distinct"),
        (lambda p: p["cameras"]["cam_low"].update(camera_name="cam_high"), "collide"),
        (lambda p: p["cameras"]["cam_low"].pop("mount"), "mount"),
        (lambda p: p["driver"].update(start_pose=[0.0] * 13), "14 finite"),
        (lambda p: p["driver"].update(sleep_pose=[0, -3.0, 0, 0, 0, 0, 0.5] * 2), "outside the joint limits"),
        (lambda p: p["limits"].update(speed=1), "limits"),
    ]:
        bad = copy.deepcopy(good)
        mutate(bad)
        with pytest.raises(ProfileError, match=match):
            load_profile(bad)
    with pytest.raises(ProfileError, match="available"):
        load_profile("nonexistent")


# -------------------------------------------------------------------------------------------- graph
def test_graph_modes_and_node_names():
    sim = G.build_graph("sim", "policy")
    assert sim.names == ["sim", "arm_driver", "perception", "inference", "chunk_executor"] and not sim.includes
    assert all(n.in_process for n in sim.nodes)
    assert all(n.parameters["use_sim_time"] is True for n in sim.nodes)
    assert G.build_graph("sim", "record").names == ["sim", "arm_driver", "teleop", "recorder"]
    specs = {n.name: f"{n.module}:{n.cls}" for n in sim.nodes}
    assert specs["perception"] == "clamp_perception.perception_node:PerceptionNode"
    assert specs["chunk_executor"] == "clamp_policy.executor_node:ChunkExecutorNode"
    with pytest.raises(ValueError, match="modes"):
        G.build_graph("sim", "dance")
    simp = sim.node("sim").parameters
    assert (simp["image_width"], simp["image_height"], simp["camera_hz"], simp["joint_state_hz"]) == (640, 480, 10, 100)
    assert simp["cameras"] == list(rig.CAMERAS) and simp["task"] == "transfer_cube"


def test_aloha_graph_drives_the_hardware_on_rig_topics():
    g = G.build_graph("aloha", "record")
    arms = {i.arguments["robot_name"]: i for i in g.includes}
    assert set(arms) == set(rig.FOLLOWERS + rig.LEADERS)
    assert arms["follower_left"].arguments["mode_configs"].endswith("follower_modes.yaml")
    assert Path(arms["leader_right"].arguments["mode_configs"]).is_file()
    for cam in rig.CAMERAS:
        rs = g.node(cam)
        assert rs.package == "realsense2_camera" and rs.hardware and not rs.in_process
        assert rs.parameters["camera_name"] == cam and rs.parameters["align_depth.enable"] is True
        remaps = dict(rs.remappings)
        assert remaps["~/color/image_rect_raw"] == rig.color_topic(cam)
        assert remaps["~/aligned_depth_to_color/image_raw"] == rig.depth_topic(cam)
        assert remaps["~/aligned_depth_to_color/camera_info"] == rig.camera_info_topic(rig.depth_topic(cam))
        tf = g.node(f"tf_{cam}_mount")
        args = list(tf.arguments)
        assert args[args.index("--child-frame-id") + 1] == f"{cam}_link"
    assert {"arm_driver", "teleop", "recorder"} <= set(g.names)
    # only followers (no leaders) in the policy graph
    assert {i.arguments["robot_name"] for i in G.build_graph("aloha", "policy").includes} == set(rig.FOLLOWERS)


def test_recorded_topics_are_the_episode_schema():
    topics = G.recorded_topics(load_profile("sim"))
    for arm in rig.FOLLOWERS + rig.LEADERS:
        assert topics[rig.joint_states_topic(arm)] == "sensor_msgs/msg/JointState"
    for cam in rig.CAMERAS:
        assert topics[rig.depth_topic(cam)] == "sensor_msgs/msg/Image"
        assert topics[rig.camera_info_topic(rig.color_topic(cam))] == "sensor_msgs/msg/CameraInfo"
    assert topics["/tf_static"] == "tf2_msgs/msg/TFMessage" and topics[rig.TASK_TOPIC] == "std_msgs/msg/String"


class _Recorded:
    """Records how the launch adapter calls the launch API (launch/launch_ros are not installable here)."""

    def __init__(self, kind):
        self.kind = kind

    def __call__(self, *args, **kwargs):
        obj = _Recorded(self.kind)
        obj.args, obj.kwargs = args, kwargs
        return obj


def test_launch_adapter_emits_every_graph_entry():
    g = G.build_graph("aloha", "record")
    kinds = ("LaunchDescription", "Node", "IncludeLaunchDescription", "GroupAction", "SetLaunchConfiguration")
    kinds += ("SetEnvironmentVariable",)
    api = {k: _Recorded(k) for k in kinds}
    api["PythonLaunchDescriptionSource"] = lambda path: path
    api["get_package_share_directory"] = lambda pkg: f"/opt/ros/humble/share/{pkg}"
    ld = G.to_launch_description(g, api)
    actions = ld.args[0]
    groups = [a for a in actions if a.kind == "GroupAction"]  # xs_sdk behind the shutdown guard
    includes = [g.args[0][-1] for g in groups]
    assert all(i.kind == "IncludeLaunchDescription" for i in includes)
    prefix = [c.args for c in groups[0].args[0][:-1]]
    assert ("launch-prefix", G.SHUTDOWN_GUARD_PREFIX) in prefix and groups[0].kwargs == {"scoped": True}
    nodes = [a for a in actions if a.kind == "Node"]
    assert len(includes) == 4 and len(nodes) == len(g.nodes)
    # Fast DDS with a shared-memory segment for camera images, set before anything starts
    env = [a.args for a in actions[:2]]
    assert [a.kind for a in actions[:2]] == ["SetEnvironmentVariable"] * 2
    assert {k for k, _ in env} == set(G.FASTDDS_PROFILE_VARIABLES) and len({v for _, v in env}) == 1
    assert includes[0].args[0] == "/opt/ros/humble/share/interbotix_xsarm_control/launch/xsarm_control.launch.py"
    rs = next(n for n in nodes if n.kwargs.get("name") == "cam_low")
    assert (
        rs.kwargs["namespace"] == "cam_low"
        and ("~/color/image_rect_raw", rig.color_topic("cam_low")) in rs.kwargs["remappings"]
    )
    rec = next(n for n in nodes if n.kwargs["executable"] == "recorder")
    assert rec.kwargs["executable"] == "recorder" and rec.kwargs["parameters"][0]["profile"].endswith("aloha.yaml")
    assert "name" not in rec.kwargs  # clamp nodes keep their own names, as in the in-process runner


@pytest.mark.parametrize("name", ["aloha", "sim", "teleop", "record"])
def test_launch_files_are_thin_and_use_the_graph(name):
    path = LAUNCH_DIR / f"{name}.launch.py"
    ns = runpy.run_path(str(path))  # importable without `launch` (imported lazily)
    assert callable(ns["generate_launch_description"])
    text = path.read_text()
    assert "launch_description(" in text and len(text.splitlines()) < 25
    if importlib.util.find_spec("launch") is not None and importlib.util.find_spec("launch_ros") is not None:
        assert ns["generate_launch_description"]() is not None  # on a ROS install


def test_console_scripts_point_at_real_functions():
    import clamp_bringup.arm_driver_node as d
    import clamp_bringup.recorder_node as r
    import clamp_bringup.replay as rp
    import clamp_bringup.run as run
    import clamp_bringup.teleop_node as t

    text = (LAUNCH_DIR.parent / "setup.py").read_text()
    for script, mod in [("arm_driver", d), ("teleop", t), ("recorder", r), ("replay", rp), ("run", run)]:
        assert f"{script} = {mod.__name__}:main" in text and callable(mod.main)


# ------------------------------------------------------------------------------------------- driver
def _core(move_time=0.5):
    p = load_profile("sim")
    return ArmDriverCore(safety_limits(p), p["driver"]["start_pose"], p["driver"]["sleep_pose"], move_time, 50.0)


def test_driver_moves_smoothly_to_start_then_accepts_commands():
    core = _core()
    assert core.command(np.zeros(14)) is None  # not ready before the start move
    here = np.array(core.sleep_pose)
    core.on_measured(here)
    duration = core.begin_start()
    assert duration >= 0.5
    cmds = [here]
    while core.state == "moving_to_start":
        cmds.append(core.tick())
    cmds = np.array(cmds)
    np.testing.assert_allclose(cmds[-1], core.start_pose, atol=1e-9)
    steps = np.abs(np.diff(cmds, axis=0))
    assert np.all(steps <= core.limits.velocity * core.dt + 1e-9)  # never faster than the limits
    assert core.limiter.total() == 0  # the min-jerk profile needed no clamping
    assert core.state == "ready"
    far = core.start_pose.copy()
    far[0] += 2.0
    out = core.command(core.start_pose, stamp=1.0)  # a stream starts at the arm...
    out = core.command(far, stamp=1.5)  # ...and a late command still moves at most one tick
    assert abs(out[0] - core.start_pose[0]) <= core.limits.velocity[0] * core.dt + 1e-9
    assert abs(out[0] - core.start_pose[0]) <= core.limits.velocity[0] * 0.02 + 1e-9


def test_driver_sleep_and_gripper_mapping_both_ways():
    core = _core(0.2)
    core.on_measured(core.start_pose)
    core.begin_sleep()
    while core.state == "moving_to_sleep":
        last = core.tick()
    np.testing.assert_allclose(last, core.sleep_pose, atol=1e-9)
    a = np.array(core.start_pose)
    a[6], a[13] = 0.0, 1.0
    cmds = to_xs_commands(a)
    assert [c.arm for c in cmds] == list(rig.FOLLOWERS)
    assert cmds[0].gripper == pytest.approx(rig.FOLLOWER_GRIPPER.closed)
    assert cmds[1].gripper == pytest.approx(rig.FOLLOWER_GRIPPER.open)
    assert rig.FOLLOWER_GRIPPER.normalise(cmds[1].gripper) == pytest.approx(1.0)
    np.testing.assert_allclose(cmds[1].joints, a[7:13])


def test_joint_command_parsing():
    names = list(rig.ACTION_NAMES)
    vals = np.arange(14.0)
    np.testing.assert_array_equal(action_from_command(names[::-1], vals[::-1]), vals)
    with pytest.raises(CommandError, match="lacks"):
        action_from_command(names[:13] + ["left_elbow_x"], vals)
    with pytest.raises(CommandError, match="names but"):
        action_from_command(names, vals[:5])
    assert min_jerk(0.0) == 0.0 and min_jerk(1.0) == 1.0 and min_jerk(0.5) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------- teleop
def test_teleop_gesture_fires_once_per_squeeze():
    g = GripperGesture(threshold=0.15, hold_s=0.3)
    fired = [g.update(t * 0.02, 0.05, 0.1) for t in range(50)]  # 1 s squeeze
    assert sum(fired) == 1 and fired.index(True) == 15
    assert not g.update(1.1, 0.05, 0.9)  # one gripper open: re-arms
    assert [g.update(1.2 + t * 0.02, 0.0, 0.0) for t in range(20)].count(True) == 1


def test_teleop_maps_leaders_and_limits():
    leader = {
        arm: {**dict.fromkeys(rig.XS_JOINT_NAMES, 0.0), "gripper": rig.LEADER_GRIPPER.open + 0.1} for arm in rig.LEADERS
    }
    leader["leader_left"]["gripper"] = rig.LEADER_GRIPPER.closed
    a = leader_action(leader)
    assert a[6] == pytest.approx(0.0) and a[13] == 1.0  # normalised and clipped to [0, 1]
    core = TeleopCore(safety_limits(load_profile("sim")))
    assert core.step(a) is None  # idle until started
    core.on_driver_state("ready")
    core.start(np.full(14, 0.5))
    out = core.step(a)
    assert np.all(np.abs(out - 0.5) <= core.limiter.limits.velocity * 0.02 + 1e-9)


# ----------------------------------------------------------------------------------------- recorder
def test_dropped_frames_from_header_gaps():
    s = StreamStats(fps=30.0)
    period = int(1e9 / 30)
    for k in [0, 1, 2, 5, 6, 7, 12]:  # 2 + 4 frames missing
        s.add(k * period)
    assert s.count == 7 and s.dropped == 6
    cdr = b"\x00\x01\x00\x00" + struct.pack("<iI", 12, 345) + b"\x00" * 8
    assert header_stamp_ns(cdr) == 12_000_000_345


# ------------------------------------------------------------------------------------------- replay
def test_open_loop_error_against_recorded_actions():
    t_ns = np.arange(200) * 20_000_000
    actions = np.tile(np.linspace(0, 1, 200)[:, None], (1, 14))
    offsets = np.arange(50) * 0.02
    perfect = [(t_ns[i], offsets, actions[i : i + 50]) for i in range(0, 150, 10)]
    assert open_loop_error(perfect, t_ns, actions)["mae"] == pytest.approx(0.0, abs=1e-12)
    biased = [(s, o, c + 0.1) for s, o, c in perfect]
    rep = open_loop_error(biased, t_ns, actions)
    assert rep["mae"] == pytest.approx(0.1) and len(rep["mae_per_step"]) == 50
    with pytest.raises(ValueError, match="no action chunks"):
        open_loop_error([], t_ns, actions)


def test_calibrate_mode_starts_followers_cameras_and_a_driver_owned_by_the_calibration():
    g = G.build_graph("aloha", "calibrate")
    assert {i.arguments["robot_name"] for i in g.includes} == set(rig.FOLLOWERS)  # no leaders
    assert {n.name for n in g.nodes if n.package == "realsense2_camera"} == set(rig.CAMERAS)
    assert {f"tf_{cam}_mount" for cam in rig.CAMERAS} <= set(g.names)
    assert not {"perception", "inference", "chunk_executor", "teleop", "recorder"} & set(g.names)
    assert g.node("arm_driver").parameters["command_owner"] == rig.COMMAND_SOURCE_CALIBRATION
    sim = G.build_graph("sim", "calibrate")
    assert sim.node("sim").parameters["calibration_board"] is True
    assert "calibration_board" not in G.build_graph("sim", "arms").node("sim").parameters


def test_episode_queue_is_bounded_when_the_disk_stalls(tmp_path, monkeypatch):
    """A writer that stops (stalled disk) must not let the queue grow without bound: beyond
    max_backlog_bytes messages are dropped, counted and flagged; what was queued is written after."""
    import threading

    from clamp_bringup.recorder import FLAG_BACKLOG, Episode
    from clamp_core.episode_bag import EpisodeReader, EpisodeWriter

    writer = EpisodeWriter(tmp_path / "ep", {"task": "t", "source": "teleop"})
    disk = threading.Event()  # the disk hangs until set
    real_write = writer.write_raw

    def stalled_write(*args, **kwargs):
        disk.wait()
        return real_write(*args, **kwargs)

    monkeypatch.setattr(writer, "write_raw", stalled_write)
    ep = Episode(writer, {}, max_backlog_bytes=10_000)
    payload = b"\0" * 1000
    for i in range(100):
        ep.add("/blob", "std_msgs/msg/String", payload, 1_000_000_000 + i)
    assert ep.max_backlog_seen <= 10_000
    assert 85 <= ep.backlog_dropped <= 91  # ~10 fit in the bound (one may already be in the writer's hands)
    disk.set()
    meta = ep.close()
    assert FLAG_BACKLOG in meta["flags"] and meta["extras"]["recorder_backlog_dropped"] == ep.backlog_dropped
    assert EpisodeReader(tmp_path / "ep").topics()["/blob"].count == 100 - ep.backlog_dropped


def test_hardware_graphs_give_every_process_the_large_message_fastdds_profile(monkeypatch):
    import xml.etree.ElementTree as ET

    for v in G.FASTDDS_PROFILE_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    env = G.build_graph("aloha", "record").environment
    path = env["FASTRTPS_DEFAULT_PROFILES_FILE"]
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == path
    ns = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(path).getroot()
    shm = [t for t in root.iterfind(".//f:transport_descriptor", ns) if t.findtext("f:type", namespaces=ns) == "SHM"]
    assert int(shm[0].findtext("f:segment_size", namespaces=ns)) >= 640 * 480 * 3 * 16  # many colour frames
    assert G.build_graph("sim", "policy").environment == {}  # one process on loopback: Fast DDS defaults
    # a profile the user chose is kept
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", "/etc/my_dds.xml")
    assert set(G.build_graph("aloha", "policy").environment.values()) == {"/etc/my_dds.xml"}
