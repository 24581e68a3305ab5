"""Ctrl-C under `ros2 launch` (issue 15 item 12): the arms reach the sleep pose before xs_sdk stops.

Processes as on the robot: two emulated xs_sdk (each its own process, exiting at once on SIGINT
like the real one), the arm driver, and - as graph.py launches them - each xs_sdk behind
clamp_bringup.shutdown_guard. Ctrl-C is emulated as SIGINT to every launched process at the same
instant (what launch and the terminal do). Without the guard (the old launch) the xs_sdk processes
exit with the driver and the arms stay at the start pose; with it they end at the sleep pose.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clamp_bringup.graph import build_graph
from clamp_core import rig
from clamp_core.profile import load_profile
from emulated.bench import bench_profile
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

MAIN = Path(__file__).resolve().parent / "emulated" / "xs_sdk_main.py"
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _run(ros, tmp_path, guarded: bool) -> dict[str, np.ndarray]:
    path = bench_profile(tmp_path, arms=rig.FOLLOWERS + rig.LEADERS)
    prof = load_profile(path)
    graph = build_graph(prof, "arms")
    sleep = np.array(prof["driver"]["sleep_pose"])
    procs, files = [], {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for inc in graph.includes:
        arm = inc.arguments["robot_name"]
        files[arm] = tmp_path / f"{arm}_{guarded}.json"
        side = 0 if arm.endswith("left") else 1
        cmd = [sys.executable, str(MAIN), arm, inc.arguments["motor_configs"], inc.arguments["mode_configs"]]
        cmd += [str(files[arm]), *map(str, sleep[7 * side : 7 * side + 7])]
        if guarded:
            cmd = [sys.executable, "-m", "clamp_bringup.shutdown_guard", "--timeout", "25", "--", *cmd]
        # own process group: a guard killed in `finally` must not leave its xs_sdk child behind
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
    params = {**graph.node("arm_driver").parameters, "move_time_s": 1.0}  # what launch passes it
    args = [a for k, v in params.items() for a in ("-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}")]
    driver = subprocess.Popen(
        [sys.executable, "-m", "clamp_bringup.arm_driver_node", "--ros-args", *args], env=env, start_new_session=True
    )
    procs.append(driver)
    try:
        ros.wait_for_message(
            rig.DRIVER_STATE_TOPIC, String, timeout=60.0, qos=LATCHED, predicate=lambda m: m.data == "ready"
        )
        for p in procs:  # Ctrl-C: every launched process at once
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=60.0)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
    return {arm: np.array(json.loads(f.read_text())["q"]) for arm, f in files.items()}


@pytest.mark.parametrize("guarded", [True, False], ids=["with_shutdown_guard", "without_guard_old_launch"])
def test_ctrl_c_brings_the_arms_to_sleep_before_xs_sdk_stops(ros, tmp_path, guarded):
    prof = load_profile("aloha")
    sleep, start = np.array(prof["driver"]["sleep_pose"]), np.array(prof["driver"]["start_pose"])
    final = _run(ros, tmp_path, guarded)
    for i, arm in enumerate(rig.FOLLOWERS):
        at_sleep = np.abs(final[arm] - sleep[7 * i : 7 * i + 7]).max() < 0.05
        if guarded:
            assert at_sleep, f"{arm} stopped at {np.round(final[arm], 3)}, not at the sleep pose"
        else:  # the failure the guard prevents: xs_sdk gone while the arms were still at the start pose
            assert not at_sleep and np.abs(final[arm][:6] - start[7 * i : 7 * i + 6]).max() < 0.1
