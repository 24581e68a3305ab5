"""Item 6 of issue 15: clamp_sim's reset must not send ROS time back to 0 (the executor's sim-time
ticker and every TF buffer would stall or mix episodes)."""

from __future__ import annotations

from clamp_bringup.graph import build_graph
from clamp_bringup.runner import start_graph
from clamp_core.ros import best_effort_qos, stamp_to_s
from ros_harness import wait_until
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger


def test_sim_reset_keeps_the_clock_running_forward(ros):
    running = start_graph(
        build_graph("sim", "arms"),
        context=ros.context,
        executor=ros.executor,
        only=("sim",),
        overrides={"sim": {"camera_hz": 0.0}},
    )
    try:
        sim = running.nodes["sim"]
        clock = lambda: stamp_to_s(ros.wait_for_message("/clock", Clock, timeout=20.0, qos=best_effort_qos()).clock)  # noqa: E731
        wait_until(lambda: sim.sim.time > 0.5, 30.0, "half a second of simulation")
        before = clock()
        client = ros._probe.create_client(Trigger, "/clamp_sim/reset")
        assert client.wait_for_service(timeout_sec=20.0)
        fut = client.call_async(Trigger.Request())
        wait_until(fut.done, 20.0, "/clamp_sim/reset")
        assert fut.result().success
        after = [clock() for _ in range(5)]
        assert min(after) >= before, (before, after)  # MuJoCo restarted at 0, ROS time did not
        assert sim.sim.time < before  # (the simulation itself did restart)
    finally:
        running.stop()
