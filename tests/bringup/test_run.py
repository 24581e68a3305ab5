"""The in-process runner starts exactly the graph's nodes (the ones the launch files launch)."""

from __future__ import annotations

import numpy as np
import pytest
from clamp_bringup.graph import NodeSpec, build_graph
from clamp_bringup.run import main
from clamp_bringup.runner import RunnerError, node_class, start_graph
from clamp_core.profile import load_profile
from ros_harness import wait_until
from xs_emulator import XsEmulator

START = np.array(load_profile("sim")["driver"]["start_pose"])


def test_runner_starts_graph_nodes_with_graph_parameters(ros):
    xs = ros.add(XsEmulator(start=START + 0.2, context=ros.context))
    graph = build_graph("sim", "teleop")
    running = start_graph(
        graph,
        context=ros.context,
        executor=ros.executor,
        skip=("sim",),  # the xs_sdk emulator stands in for the arms here
        overrides={"arm_driver": {"use_sim_time": False}, "teleop": {"use_sim_time": False}},
    )
    try:
        assert list(running.nodes) == ["arm_driver", "teleop"]
        driver = running.nodes["arm_driver"]
        assert driver.get_parameter("profile").value == graph.node("arm_driver").parameters["profile"]
        wait_until(lambda: driver.core.state == "ready", 20.0, "the graph's arm driver to reach the start pose")
        wait_until(lambda: np.abs(xs.state14() - START).max() < 0.02, 5.0, "the emulated arms at the start pose")
    finally:
        for node in running.nodes.values():
            ros.executor.remove_node(node)
            node.destroy_node()


def test_runner_errors_name_the_fix():
    with pytest.raises(RunnerError, match="--skip perception"):
        node_class(NodeSpec("perception", "clamp_perception", "x", module="clamp_perception.no_such_node", cls="X"))
    with pytest.raises(RunnerError, match="hardware driver"):
        node_class(build_graph("aloha", "policy").node("cam_high"))
    with pytest.raises(RunnerError, match="unknown node"):
        start_graph(build_graph("sim", "arms"), skip=("camera",))
    with pytest.raises(SystemExit, match="aloha.launch.py"):
        main(["--profile", "aloha"])


def test_runner_prints_the_graph(capsys):
    assert main(["--profile", "aloha", "--mode", "record", "--print"]) == 0
    out = capsys.readouterr().out
    assert "include interbotix_xsarm_control/launch/xsarm_control.launch.py" in out
    assert "node recorder: clamp_bringup.recorder_node:RecorderNode" in out
