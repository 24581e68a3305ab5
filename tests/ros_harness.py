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
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy


class RosHarness:
    """Owns one rclpy context; nodes added here are spun in a background thread."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self._nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, name="ros-harness-spin", daemon=True)
        self._thread.start()
        self._probe = self.node("harness_probe")

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down mid-spin
                if self.context.ok():
                    raise

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

        sub = self._probe.create_subscription(msg_type, topic, on_msg, qos)
        try:
            if not done.wait(timeout):
                publishers = self._probe.count_publishers(topic)
                seen = sorted(name for name, _ in self._probe.get_topic_names_and_types())
                raise AssertionError(
                    f"waited {timeout:.1f}s for {count} message(s) on {topic} "
                    f"({msg_type.__name__}); got {len(got)}. Publishers on it: {publishers}. "
                    f"Topics seen: {seen}. ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')}"
                )
            return got[:count]
        finally:
            self._probe.destroy_subscription(sub)

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
