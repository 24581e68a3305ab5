"""Helpers for the clamp_policy node tests: a sim-time clock source and chunk messages."""

from __future__ import annotations

import threading
import time

import numpy as np
from builtin_interfaces.msg import Duration
from clamp_core import rig
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

DT = 1.0 / rig.CONTROL_HZ
HOME = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.5] * 2)


def to_stamp(t: float):
    from builtin_interfaces.msg import Time

    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def follower_joint_state(arm_state7: np.ndarray, t: float) -> JointState:
    """xs_sdk-style joint_states of one follower (fingers included) from 6 joints + normalised gripper."""
    msg = JointState()
    msg.header.stamp = to_stamp(t)
    msg.name = list(rig.XS_JOINT_NAMES)
    grip = float(rig.FOLLOWER_GRIPPER.joint(arm_state7[6]))
    msg.position = [float(v) for v in arm_state7[:6]] + [grip, 0.02, -0.02]
    msg.velocity = [0.0] * 9
    msg.effort = [0.0] * 9
    return msg


def chunk_msg(stamp: float, positions: np.ndarray, names=rig.ACTION_NAMES, dt: float = DT) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp = to_stamp(stamp)
    msg.joint_names = list(names)
    for i, p in enumerate(np.asarray(positions, dtype=float)):
        ns = int(round(i * dt * 1e9))
        msg.points.append(
            JointTrajectoryPoint(
                positions=[float(v) for v in p],
                time_from_start=Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000),
            )
        )
    return msg


class SimClock:
    """Publishes /clock in 10 ms sim steps and follower joint states at 100 Hz of sim time.

    The 'arms' follow the last 14-D command on rig.JOINT_COMMAND_TOPIC exactly (an ideal position
    controller), which is what the executor's tests need to see; clamp_sim is exercised in the
    closed-loop test. `states_enabled = False` stops the joint states (a dead driver).
    """

    def __init__(self, ros, start: float = 100.0, step: float = 0.01, wall_period: float = 0.01) -> None:
        self.node = ros.node("test_sim_clock")
        self.t = start
        self.step, self.wall_period = step, wall_period
        self.position = HOME.copy()
        self.states_enabled = True
        self.commands: list[tuple[float, np.ndarray]] = []
        self._lock = threading.Lock()
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", qos)
        self.state_pubs = {
            a: self.node.create_publisher(JointState, rig.joint_states_topic(a), qos) for a in rig.FOLLOWERS
        }
        self.node.create_subscription(JointState, rig.JOINT_COMMAND_TOPIC, self._on_command, 100)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_command(self, msg: JointState) -> None:
        assert list(msg.name) == list(rig.ACTION_NAMES)
        cmd = np.array(msg.position)
        with self._lock:
            self.commands.append((stamp_s(msg.header.stamp), cmd))
            self.position = cmd

    def now(self) -> float:
        with self._lock:
            return self.t

    def start(self) -> SimClock:
        self._publish()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _publish(self) -> None:
        with self._lock:
            t, pos = self.t, self.position.copy()
        self.clock_pub.publish(Clock(clock=to_stamp(t)))
        if self.states_enabled:
            for i, arm in enumerate(rig.FOLLOWERS):
                self.state_pubs[arm].publish(follower_joint_state(pos[7 * i : 7 * i + 7], t))

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            nxt += self.wall_period
            time.sleep(max(0.0, nxt - time.monotonic()))
            with self._lock:
                self.t = round(self.t + self.step, 9)
            self._publish()

    def commands_since(self, t0: float) -> list[tuple[float, np.ndarray]]:
        with self._lock:
            return [(t, c) for t, c in self.commands if t >= t0 - 1e-9]

    def wait_sim(self, duration: float, timeout: float = 30.0) -> None:
        end = self.now() + duration
        deadline = time.monotonic() + timeout
        while self.now() < end:
            if time.monotonic() > deadline:
                raise AssertionError(f"sim clock did not advance {duration} s within {timeout} s")
            time.sleep(0.005)


class Collector:
    """Keeps every message on a topic (one subscription for the whole test).

    Used instead of RosHarness.wait_for_messages, which destroys its subscription while the
    harness executor may be waiting on it: rclpy then raises InvalidHandle in the spin thread,
    which stops every node of the test (their sim clocks freeze).
    """

    def __init__(self, ros, topic: str, msg_type, qos=10) -> None:
        self.topic = topic
        self.messages: list = []
        self._lock = threading.Lock()
        self.node = ros.node(f"collector_{abs(hash((topic, id(self))))}")
        self.node.create_subscription(msg_type, topic, self._on_msg, qos)

    def _on_msg(self, msg) -> None:
        with self._lock:
            self.messages.append(msg)

    def wait(self, predicate=lambda m: True, count: int = 1, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = [m for m in self.messages if predicate(m)]
            if len(got) >= count:
                return got[:count]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"waited {timeout:.0f} s for {count} matching message(s) on {self.topic}; got {len(got)}"
                )
            time.sleep(0.02)
