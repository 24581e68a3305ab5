"""Keep a motor driver (xs_sdk) alive on Ctrl-C until the arm driver has put the arms to sleep.

    python3 -m clamp_bringup.shutdown_guard [--timeout S] [--state-topic T] -- COMMAND [ARGS...]

Under `ros2 launch`, Ctrl-C reaches every process at once (the terminal signals the whole process
group and launch sends SIGINT to each of its processes): xs_sdk would exit while the arm driver is
still moving the arms to the sleep pose, and the arms would freeze wherever they were (or drop
with torque off). graph.py therefore launches each xs_sdk through this guard (launch-prefix). The
guard runs COMMAND in its own session (so the terminal's SIGINT does not reach it), and on SIGINT
or SIGTERM waits until the arm driver reports "asleep" on rig.DRIVER_STATE_TOPIC, or the driver is
gone (its latched state publisher disappears), or `--timeout` passes; only then does it send SIGINT
to COMMAND (SIGTERM, SIGKILL if it does not exit). Without a running arm driver it forwards at once.
Exit status: COMMAND's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from clamp_core import rig


class Guard:
    """The waiting logic, ROS-free: fed with driver states and publisher counts by the node side."""

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self.state: str | None = None
        self.driver_seen = False
        self.driver_present = False
        self._lock = threading.Lock()

    def on_state(self, state: str) -> None:
        with self._lock:
            self.state, self.driver_seen = state, True

    def on_publishers(self, count: int) -> None:
        with self._lock:
            self.driver_present = count > 0
            self.driver_seen |= count > 0

    def may_stop(self) -> tuple[bool, str]:
        """(True, why) once the child may be stopped."""
        with self._lock:
            if not self.driver_seen:
                return True, "no arm driver running"
            if self.state in ("asleep", "waiting"):  # "waiting": it never moved the arms
                return True, f"arm driver is {self.state}"
            if not self.driver_present:
                return True, "arm driver has exited"
            return False, f"arm driver is {self.state}"


def _stop_child(child: subprocess.Popen, grace: float = 5.0) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if child.poll() is not None:
            break
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            break
        try:
            return child.wait(grace)
        except subprocess.TimeoutExpired:
            continue
    return child.wait()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python3 -m clamp_bringup.shutdown_guard [--timeout S] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    split = argv.index("--")
    ap = argparse.ArgumentParser(prog="clamp_bringup.shutdown_guard")
    ap.add_argument("--timeout", type=float, default=25.0, help="longest wait for the arms to sleep (s)")
    ap.add_argument("--state-topic", default=rig.DRIVER_STATE_TOPIC)
    a = ap.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        ap.error("no COMMAND after --")

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # its own session: the terminal's Ctrl-C goes to launch's process group, not to the driver
    child = subprocess.Popen(command, start_new_session=True)

    import rclpy
    from clamp_core.ros import latched_subscriber_qos
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from std_msgs.msg import String

    guard = Guard(a.timeout)
    context = rclpy.Context()
    rclpy.init(
        args=["--ros-args", "--disable-rosout-logs"], context=context, signal_handler_options=SignalHandlerOptions.NO
    )
    node = rclpy.create_node(f"shutdown_guard_{os.getpid()}", context=context, start_parameter_services=False)
    node.create_subscription(String, a.state_topic, lambda m: guard.on_state(m.data), latched_subscriber_qos())
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        while not stop.is_set() and child.poll() is None:
            executor.spin_once(timeout_sec=0.1)
            guard.on_publishers(node.count_publishers(a.state_topic))
        if child.poll() is not None:
            return child.returncode
        deadline = time.monotonic() + a.timeout
        ok, why = guard.may_stop()
        while not ok and time.monotonic() < deadline and child.poll() is None:
            executor.spin_once(timeout_sec=0.05)
            guard.on_publishers(node.count_publishers(a.state_topic))
            ok, why = guard.may_stop()
        if not ok:
            why = f"gave up after {a.timeout:.0f} s ({why})"
        print(f"[shutdown_guard] stopping {os.path.basename(command[0])}: {why}", file=sys.stderr, flush=True)
        return _stop_child(child)
    finally:
        if child.poll() is None:
            _stop_child(child)
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.shutdown(context=context)


if __name__ == "__main__":
    sys.exit(main())
