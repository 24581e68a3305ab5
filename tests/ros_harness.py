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
        for node in self._nodes:
            self.executor.remove_node(node)
            node.destroy_node()
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


class RosProcess:
    """A ROS program in its own OS process (same domain), stopped and reaped on exit."""

    def __init__(self, args: Sequence[str], name: str = "") -> None:
        self.name = name or " ".join(args)
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ.copy(),
        )

    def output(self) -> str:
        return self.proc.stdout.read() if self.proc.stdout else ""

    def stop(self, timeout: float = 5.0) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.output()
