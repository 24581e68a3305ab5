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


@pytest.mark.timeout(180)
def test_spawned_graph_part_runs_in_a_child_with_the_given_parameters(ros, tmp_path):
    import subprocess
    import sys

    from clamp_bringup.runner import spawn_graph, stop_process
    from clamp_core import rig
    from sensor_msgs.msg import JointState

    log = open(tmp_path / "child.log", "w+")
    params = {"task": "place_cube", "seed": 3, "image_height": 48, "image_width": 64, "rate_factor": 1.0}
    child = spawn_graph("sim", "policy", ["sim"], {"sim": params, "inference": {"checkpoint": "x"}}, log=log)
    try:
        msgs = ros.wait_for_messages(rig.joint_states_topic(rig.FOLLOWERS[0]), JointState, count=2, timeout=60)
        assert len(msgs[0].position) > 0
        assert child.poll() is None
    finally:
        code = stop_process(child)
    log.seek(0)
    printed = log.read()
    assert code == 0, printed  # SIGINT is the runner's clean stop
    assert "running ['sim']" in printed  # only the named node, from the one graph
    assert "--set" in " ".join(child.args) and "sim.rate_factor=1.0" in child.args  # a float stays a float

    # a child whose parent is gone stops by itself (a killed demo leaves nothing publishing on the domain)
    script = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-m', 'clamp_bringup.run', '--profile', 'sim', '--mode', 'arms',"
        " '--only', 'arm_driver', '--parent-pid', str(os.getpid())],"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True)\n"
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    orphan = int(parent.stdout.split()[0])
    wait_until(lambda: not _alive(orphan), 60.0, "the orphaned runner to exit")


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_objects_alive_after_start_up_are_out_of_the_collectors_reach():
    import gc

    from clamp_core.ros import freeze_startup_objects

    before = len(gc.get_objects())  # what a full collection scans
    freeze_startup_objects()
    try:
        assert gc.get_freeze_count() > 0
        assert len(gc.get_objects()) < before / 10  # the start-up objects are frozen
        garbage = [[]]
        garbage[0].append(garbage)  # a cycle made later is still collected
        del garbage
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()  # the rest of the test session as it was
