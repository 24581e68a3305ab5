"""The interface packages the pip ROS lacks (tf2_msgs, interbotix_xs_msgs) import, serialise and talk."""

import threading

import numpy as np
from geometry_msgs.msg import TransformStamped
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes, TorqueEnable
from rclpy.serialization import deserialize_message, serialize_message
from ros_harness import wait_until
from tf2_msgs.msg import TFMessage


def test_messages_round_trip_through_cdr():
    tf = TransformStamped(child_frame_id="cam_high_link")
    tf.header.frame_id = "world"
    tf.transform.translation.x, tf.transform.rotation.w = 0.25, 1.0
    samples = [
        TFMessage(transforms=[tf, tf]),
        JointGroupCommand(name="arm", cmd=[0.1, -0.2, 0.3, 0.0, 0.5, -0.6]),
        JointSingleCommand(name="gripper", cmd=0.5),
    ]
    for msg in samples:
        back = deserialize_message(serialize_message(msg), type(msg))
        assert back == msg


def test_service_definitions_have_upstream_fields():
    req = TorqueEnable.Request(cmd_type="group", name="arm", enable=True)
    assert (req.cmd_type, req.name, req.enable) == ("group", "arm", True)
    modes = OperatingModes.Request(cmd_type="single", name="gripper", mode="current_based_position")
    assert modes.profile_velocity == 0 and modes.mode == "current_based_position"


def test_command_topic_and_service_over_dds(ros):
    node = ros.node("fixture_server")
    calls = []
    enabled = threading.Event()

    def on_torque(request, response):
        calls.append((request.cmd_type, request.name, request.enable))
        enabled.set()
        return response

    node.create_service(TorqueEnable, "/follower_left/torque_enable", on_torque)
    pub = ros.publisher(JointGroupCommand, "/follower_left/commands/joint_group")
    received = []
    node.create_subscription(JointGroupCommand, "/follower_left/commands/joint_group", received.append, 10)
    ros.wait_for_subscribers(pub)
    pub.publish(JointGroupCommand(name="arm", cmd=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5]))

    client = ros.node("fixture_client").create_client(TorqueEnable, "/follower_left/torque_enable")
    assert client.wait_for_service(timeout_sec=10.0), "torque_enable service never appeared"
    future = client.call_async(TorqueEnable.Request(cmd_type="group", name="arm", enable=True))
    assert enabled.wait(10.0), "service callback never ran"
    wait_until(future.done, 10.0, "the TorqueEnable response")
    assert isinstance(future.result(), TorqueEnable.Response)
    assert calls == [("group", "arm", True)]

    wait_until(lambda: len(received) == 1, 10.0, "the JointGroupCommand")
    np.testing.assert_allclose(received[0].cmd, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], rtol=1e-6)
