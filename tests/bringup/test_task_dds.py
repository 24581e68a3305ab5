"""Item 13 of issue 15: on the robot something publishes /clamp/task, the operator can set it, and a
subscriber that joins late gets it (latched, and re-published for volatile subscribers)."""

from __future__ import annotations

from clamp_bringup.graph import build_graph
from clamp_bringup.set_task import set_task
from clamp_bringup.task_node import TaskNode
from clamp_core import rig
from clamp_core.ros import latched_subscriber_qos
from rclpy.parameter import Parameter
from std_msgs.msg import String


def test_graph_has_one_task_publisher_on_the_robot_only():
    for mode in ("policy", "record"):
        assert "task" in build_graph("aloha", mode).names
    assert "task" not in build_graph("aloha", "teleop").names
    assert "task" not in build_graph("sim", "policy").names  # clamp_sim publishes it there


def test_task_reaches_late_latched_and_volatile_subscribers_and_the_operator_sets_it(ros):
    node = ros.add(
        TaskNode(
            context=ros.context,
            parameter_overrides=[Parameter("task", value="stack the cubes"), Parameter("republish_s", value=0.2)],
        )
    )
    # a latched subscriber created after the publish gets it at once
    msg = ros.wait_for_message(rig.TASK_TOPIC, String, timeout=10.0, qos=latched_subscriber_qos())
    assert msg.data == "stack the cubes"
    # a volatile subscriber (depth 10, as the inference node subscribes today) gets the re-publish
    msg = ros.wait_for_message(rig.TASK_TOPIC, String, timeout=10.0, qos=10)
    assert msg.data == "stack the cubes"
    assert set_task("put the cube in the bowl", "/task", 10.0, context=ros.context) == ""
    assert node.task == "put the cube in the bowl"
    msg = ros.wait_for_message(
        rig.TASK_TOPIC, String, timeout=10.0, qos=latched_subscriber_qos(), predicate=lambda m: "bowl" in m.data
    )
    assert msg.data == "put the cube in the bowl"


def test_set_task_without_a_task_node_says_so(ros):
    err = set_task("anything", "/no_task_node_here", 0.5, context=ros.context)
    assert "no task node" in err
