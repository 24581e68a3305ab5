"""Real-ROS test harness: an isolated rclpy context spun by a background executor.

Nodes under test talk over real DDS (Fast DDS on loopback). Each pytest session gets its own
ROS_DOMAIN_ID (see conftest.py) so parallel runs on one machine never see each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy


class RosHarness:
    """Owns one rclpy context; nodes added here are spun in a background thread."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self._nodes: list[Node] = []
        self.errors: list[str] = []  # tracebacks raised by callbacks in the spin thread
        self._waiters = 0
        self._thread = threading.Thread(target=self._spin, name="ros-harness-spin", daemon=True)
        self._thread.start()
        self._probe = self.node("harness_probe")

    def _spin(self) -> None:
        # A callback that raises must not stop every other node of the test (their clocks would
        # freeze and the failure would show up as an unrelated timeout): keep spinning, report at
        # shutdown.
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if not self.context.ok():
                    return
                self.errors.append(traceback.format_exc())

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
        rclpy.shutdown(context=self.context)
        self.executor.shutdown(timeout_sec=1.0)
        self._thread.join(timeout=2.0)
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
