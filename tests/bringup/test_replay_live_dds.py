"""Item 8 of issue 15: replay never publishes recorded data onto a live robot's (or simulator's) topics."""

from __future__ import annotations

import pytest
from clamp_bringup.replay import BagPlayer, LiveGraphError
from clamp_core import rig
from clamp_core.episode_bag import EpisodeReader, EpisodeWriter
from clamp_core.ros import latched_publisher_qos
from rclpy.serialization import serialize_message
from ros_harness import wait_until
from sensor_msgs.msg import JointState
from std_msgs.msg import String


@pytest.fixture
def bag(tmp_path):
    with EpisodeWriter(tmp_path / "ep", {"task": "t"}) as w:
        for k in range(5):
            msg = JointState(name=list(rig.XS_JOINT_NAMES), position=[0.0] * 9)
            msg.header.stamp.sec = k
            topic = rig.joint_states_topic("follower_left")
            w.write_raw(topic, "sensor_msgs/msg/JointState", k * 10**9, serialize_message(msg))
    return EpisodeReader(tmp_path / "ep")


def test_replay_refuses_a_graph_with_a_live_driver_or_arm(ros, bag):
    node = ros.node("replay_under_test")
    player = BagPlayer(node, bag, clock=False)
    player.refuse_live_graph()  # nothing live: fine
    live = ros.node("xs_sdk", namespace="follower_left")
    live.create_publisher(JointState, rig.joint_states_topic("follower_left"), 10)
    wait_until(lambda: player.live_publishers(), 10.0, "discovery of the live joint states publisher")
    with pytest.raises(LiveGraphError, match="follower_left/joint_states by /follower_left/xs_sdk"):
        player.refuse_live_graph()


def test_replay_refuses_while_an_arm_driver_runs(ros, bag):
    node = ros.node("replay_under_test2")
    player = BagPlayer(node, bag, clock=False)
    driver = ros.node("arm_driver")
    driver.create_publisher(String, rig.DRIVER_STATE_TOPIC, latched_publisher_qos())
    wait_until(lambda: player.live_publishers(), 10.0, "discovery of the driver state publisher")
    with pytest.raises(LiveGraphError, match="driver_state"):
        player.refuse_live_graph()
