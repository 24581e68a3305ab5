"""Real-ROS test harness: an isolated rclpy context; every node spun by its own executor thread.

Nodes under test talk over real DDS (Fast DDS on loopback). Each pytest session gets its own
ROS_DOMAIN_ID (see conftest.py) so parallel runs on one machine never see each other.

Why one executor per node (issue 17): all nodes of a test in one rclpy MultiThreadedExecutor cost
~3x the CPU per message of a SingleThreadedExecutor (`python -m clamp_bringup.bench --executors`);
on a loaded 2-core machine the executor fell behind and KEEP_LAST queues silently overflowed, so
nodes received 20-40% of their messages. Here each node gets `clamp_core.ros.make_executor(node)`
(what `spin_node` runs it with on the robot) in its own thread, as if it were its own process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence

import rclpy
from clamp_core.ros import NodeExecutors
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy


class RosHarness:
    """Owns one rclpy context; nodes added here are spun, each by its own executor thread."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.errors: list[str] = []
        self.executor = NodeExecutors(self.context, on_error=self.errors.append)
        self._nodes: list[Node] = []
        self._waiters = 0
        self._probe = self.node("harness_probe")

    def node(self, name: str, **kwargs) -> Node:
        """Create a node in this context and spin it."""
        return self.add(Node(name, context=self.context, **kwargs))

    def add(self, node: Node) -> Node:
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def wait_for_messages(
        self,
        topic: str,
        msg_type,
        count: int = 1,
        timeout: float = 10.0,
        predicate: Callable[[object], bool] | None = None,
        qos: QoSProfile | int = 10,
    ) -> list:
        """Subscribe and block until `count` messages (matching `predicate`) arrive or fail clearly."""
        got: list = []
        done = threading.Event()

        def on_msg(msg) -> None:
            if predicate is None or predicate(msg):
                got.append(msg)
                if len(got) >= count:
                    done.set()

        # A private node spun here, not by the background executor: destroying a subscription
        # that another thread's executor is waiting on invalidates its handle mid-wait.
        self._waiters += 1
        node = Node(f"harness_wait_{self._waiters}", context=self.context)
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        node.create_subscription(msg_type, topic, on_msg, qos)
        deadline = time.monotonic() + timeout
        try:
            while not done.is_set() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.02)
            if not done.is_set():
                publishers = node.count_publishers(topic)
                seen = sorted(name for name, _ in node.get_topic_names_and_types())
                raise AssertionError(
                    f"waited {timeout:.1f}s for {count} message(s) on {topic} "
                    f"({msg_type.__name__}); got {len(got)}. Publishers on it: {publishers}. "
                    f"Topics seen: {seen}. ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')}"
                )
            return got[:count]
        finally:
            executor.remove_node(node)
            node.destroy_node()
            executor.shutdown(timeout_sec=0.5)

    def wait_for_message(self, topic: str, msg_type, timeout: float = 10.0, **kwargs):
        return self.wait_for_messages(topic, msg_type, 1, timeout, **kwargs)[0]

    def publisher(self, msg_type, topic: str, qos: QoSProfile | int = 10):
        return self._probe.create_publisher(msg_type, topic, qos)

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 10.0) -> None:
        wait_until(
            lambda: publisher.get_subscription_count() >= count,
            timeout,
            f"{count} subscriber(s) on {publisher.topic_name}",
        )

    def shutdown(self) -> None:
        # every node spun here, also those a test added straight to the executor (start_graph) and
        # left running when it failed: destroyed, so nothing of a failed test (threads, DDS
        # endpoints in this session's domain) outlives it
        nodes = list({id(n): n for n in [*self._nodes, *self.executor.get_nodes()]}.values())
        for node in nodes:
            self.executor.remove_node(node)
            try:
                node.destroy_node()
            except Exception as exc:  # one node failing to go must not keep the others alive
                self.errors.append(f"destroying {node.get_name()}: {exc!r}")
        self.executor.shutdown()
        rclpy.shutdown(context=self.context)
        if self.errors:
            warnings.warn(
                f"{len(self.errors)} exception(s) in ROS callbacks during the test; first:\n{self.errors[0]}",
                stacklevel=2,
            )


def wait_until(condition: Callable[[], bool], timeout: float, what: str, period: float = 0.02) -> None:
    """Poll `condition` until true; fail naming `what` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")


RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


# Run before the program (then exec'd in place): SIGKILL when the parent dies, even when the parent
# is killed outright (Linux prctl PR_SET_PDEATHSIG; kept across exec). Not a preexec_fn: that is not
# safe in a parent with threads (rclpy's), this is a separate interpreter.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)  # the parent died before prctl\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def popen_group(args: Sequence[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen of `args` (args[0] a path) in a process group of its own that dies with this
    process: `kill_group` ends it and everything it started, and a test run killed outright (CI's
    SIGKILL, an OOM kill) leaves no orphan behind. (Linux ties the child to the *thread* that starts
    it: start long-lived processes from the test's own thread.)"""
    guard = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid())]
    return subprocess.Popen([*guard, *args], start_new_session=True, **kwargs)


def kill_group(proc: subprocess.Popen, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """`sig` to the process group of `proc`, then SIGKILL to whatever is left of the group after
    `timeout` (the leader, or children it left behind); the leader is reaped."""
    for s, wait in ((sig, timeout), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:  # nothing left in the group
            pass
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass


class RosProcess:
    """A ROS program in its own OS process (same domain) and process group, stopped and reaped on exit.

    Output goes to a file, not a pipe: nobody reads a pipe while the test runs, and a child that
    logs more than the pipe holds (64 KiB) would block in its logging call and stall.
    """

    def __init__(self, args: Sequence[str], name: str = "") -> None:
        import tempfile

        self.name = name or " ".join(args)
        self._log = tempfile.TemporaryFile(mode="w+", prefix="ros_process_")
        self.proc = popen_group([sys.executable, *args], stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def stop(self, timeout: float = 5.0) -> str:
        """SIGTERM to the whole process group, SIGKILL after `timeout`; returns the output."""
        kill_group(self.proc, timeout)
        return self.output()
