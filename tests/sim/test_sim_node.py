"""SimNode over real DDS: commands move the joints, images + camera_info + TF arrive and agree."""

from __future__ import annotations

import numpy as np
from clamp_core import rig
from clamp_core.msg_conversions import camera_info_to_K, image_to_numpy, transform_to_matrix
from clamp_sim.sim_node import SimNode
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import TorqueEnable
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import wait_until
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _call(ros, srv_type, name, req, timeout=10.0):
    client = ros._probe.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), f"service {name} not offered"
    fut = client.call_async(req)
    deadline = __import__("time").monotonic() + timeout
    while not fut.done() and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.02)
    assert fut.done(), f"no answer from {name}"
    return fut.result()


def test_sim_node_speaks_the_robot_interfaces(ros):
    node = SimNode(
        context=ros.context,
        parameter_overrides=[
            Parameter("task", value="transfer_cube"),
            Parameter("seed", value=3),
            Parameter("image_height", value=120),
            Parameter("image_width", value=160),
            Parameter("camera_hz", value=5.0),
        ],
    )
    ros.add(node)
    arm = "follower_right"
    js = ros.wait_for_message(rig.joint_states_topic(arm), JointState, timeout=20)
    assert tuple(js.name) == rig.XS_JOINT_NAMES and len(js.position) == len(js.effort) == 9
    ros.wait_for_message("/clock", Clock)

    # xs_sdk services answer; torque on
    _call(
        ros,
        TorqueEnable,
        rig.torque_enable_service(arm),
        TorqueEnable.Request(cmd_type="group", name="arm", enable=True),
    )
    target = [0.2, -0.4, 0.5, 0.1, 0.4, -0.2]
    group = ros.publisher(JointGroupCommand, rig.joint_group_topic(arm))
    single = ros.publisher(JointSingleCommand, rig.joint_single_topic(arm))
    ros.wait_for_subscribers(group)
    ros.wait_for_subscribers(single)
    group.publish(JointGroupCommand(name="arm", cmd=target))
    single.publish(JointSingleCommand(name="gripper", cmd=float(rig.FOLLOWER_GRIPPER.closed)))

    def reached(msg):
        return (
            np.allclose(msg.position[:6], target, atol=0.02) and rig.FOLLOWER_GRIPPER.normalise(msg.position[6]) < 0.15
        )

    ros.wait_for_message(rig.joint_states_topic(arm), JointState, timeout=20, predicate=reached)

    # camera: colour, depth 16UC1 and camera_info; the cube, projected with the published CameraInfo
    # and the /tf_static pose of cam_high, lands on red pixels at the rendered depth
    cam = "cam_high"
    got = {"color": {}, "depth": {}, "info": []}
    probe = ros.node("sim_test_cam")
    key = lambda m: (m.header.stamp.sec, m.header.stamp.nanosec)  # noqa: E731
    probe.create_subscription(Image, rig.color_topic(cam), lambda m: got["color"].setdefault(key(m), m), 10)
    probe.create_subscription(Image, rig.depth_topic(cam), lambda m: got["depth"].setdefault(key(m), m), 10)
    probe.create_subscription(CameraInfo, rig.camera_info_topic(rig.color_topic(cam)), got["info"].append, 10)
    wait_until(lambda: set(got["color"]) & set(got["depth"]) and got["info"], 40, f"colour + depth of {cam}")
    stamp = sorted(set(got["color"]) & set(got["depth"]))[0]
    color, depth, info = got["color"][stamp], got["depth"][stamp], got["info"][0]
    assert color.encoding == "rgb8" and depth.encoding == "16UC1"
    assert color.header.frame_id == rig.color_optical_frame(cam) == info.header.frame_id
    static = ros.wait_for_message("/tf_static", TFMessage, qos=LATCHED)
    tfs = {t.child_frame_id: t for t in static.transforms}
    assert tfs[rig.color_optical_frame(cam)].header.frame_id == rig.WORLD_FRAME
    assert tfs[rig.color_optical_frame("cam_left_wrist")].header.frame_id == rig.gripper_frame("follower_left")
    T_world_cam = transform_to_matrix(tfs[rig.color_optical_frame(cam)])
    K, (h, w) = camera_info_to_K(info)
    rgb, d = image_to_numpy(color), image_to_numpy(depth)
    assert rgb.shape == (h, w, 3) == (120, 160, 3)
    cube = np.array(node.sim.object_positions()["red cube"]) + [0, 0, 0.02]  # top face centre
    p = np.linalg.inv(T_world_cam) @ np.append(cube, 1.0)
    u, v, _ = K @ (p[:3] / p[2])
    u, v = int(round(u)), int(round(v))
    assert rgb[v, u, 0] > 100 and rgb[v, u, 1] < 60, f"pixel {(u, v)} is not the red cube"
    assert abs(d[v, u] / 1000.0 - p[2]) < 0.01

    # dynamic TF carries the gripper frame under the arm base
    dyn = ros.wait_for_message("/tf", TFMessage, timeout=10)
    frames = {t.child_frame_id: t.header.frame_id for t in dyn.transforms}
    assert frames[rig.gripper_frame(arm)] == f"{arm}/base_link"

    # success flag streams; reset answers with the next seed
    assert ros.wait_for_message("/clamp_sim/success", Bool).data is False
    res = _call(ros, Trigger, "/clamp_sim/reset", Trigger.Request())
    assert res.success and "seed 4" in res.message
