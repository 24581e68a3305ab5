"""Against clamp_sim over real DDS, through the same graph the launch files start (issue #5 "Show").

- teleop with a synthetic leader keeps the simulated followers within a set tolerance;
- a recorded episode reads back with rosbags with every topic at its expected rate;
- replaying it makes the perception node publish views.
All nodes run on sim time (/clock from clamp_sim, or from the replayer).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from clamp_bringup.graph import build_graph, expected_rates
from clamp_bringup.runner import start_graph
from clamp_core import rig
from clamp_core.profile import load_profile
from rclpy.parameter import Parameter
from ros_harness import wait_until
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

pytest.importorskip("clamp_sim.sim_node")
PROFILE = load_profile("sim")
START = np.array(PROFILE["driver"]["start_pose"])
SIZE = {"image_width": 160, "image_height": 120}  # small renders keep sim time near real time on 2 cores


class SyntheticLeader:
    """Publishes both leaders' joint states at 50 Hz wall time: a slow swing around the start pose."""

    def __init__(self, ros, amplitude=0.25):
        self.pubs = {a: ros.publisher(JointState, rig.joint_states_topic(a)) for a in rig.LEADERS}
        self.amplitude = amplitude
        self.t0 = time.monotonic()
        self.history: list[tuple[float, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def pose(self, t):
        q = START.copy()
        q[[0, 7]] += self.amplitude * np.sin(2 * np.pi * 0.2 * t)
        q[[1, 8]] += 0.5 * self.amplitude * np.sin(2 * np.pi * 0.15 * t)
        q[[6, 13]] = 0.6 + 0.3 * np.sin(2 * np.pi * 0.25 * t)
        return q

    def _run(self):
        k = 0
        while not self._stop.is_set():
            t = time.monotonic() - self.t0
            q = self.pose(t)
            for i, arm in enumerate(rig.LEADERS):
                js = JointState(name=list(rig.XS_JOINT_NAMES))
                js.position = [
                    *map(float, q[7 * i : 7 * i + 6]),
                    float(rig.LEADER_GRIPPER.joint(q[7 * i + 6])),
                    0.0,
                    0.0,
                ]
                self.pubs[arm].publish(js)
            self.history.append((time.monotonic(), q))
            k += 1
            self._stop.wait(max(0.0, self.t0 + k * 0.02 - time.monotonic()))

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2.0)


def _call(node, name, timeout=20.0):
    client = node.create_client(Trigger, name)
    assert client.wait_for_service(timeout_sec=timeout), f"service {name} not up"
    future = client.call_async(Trigger.Request())
    wait_until(future.done, timeout, f"answer from {name}")
    return future.result()


def _stop(ros, running):
    for node in running.nodes.values():
        ros.executor.remove_node(node)
        node.destroy_node()


def test_teleop_against_clamp_sim_keeps_followers_on_the_leaders(ros):
    running = start_graph(
        build_graph("sim", "teleop"),
        context=ros.context,
        executor=ros.executor,
        overrides={"sim": {"camera_hz": 0.0}, "arm_driver": {"move_time_s": 0.5}},
    )
    leader = None
    try:
        driver, teleop = running.nodes["arm_driver"], running.nodes["teleop"]
        wait_until(lambda: driver.core.state == "ready", 40.0, "the driver to move the sim arms to the start pose")
        from helpers.leader_path import follow_waypoints, leader_messages, waypoints_around

        pubs = {a: ros.publisher(JointState, rig.joint_states_topic(a)) for a in rig.LEADERS}
        follower = {}
        probe = ros.node("follower_probe")
        for arm in rig.FOLLOWERS:
            probe.create_subscription(
                JointState, rig.joint_states_topic(arm), lambda m, a=arm: follower.__setitem__(a, m), 10
            )

        def publish(q):
            for arm, msg in leader_messages(q).items():
                pubs[arm].publish(msg)

        def measure():
            if len(follower) < 2:
                return None
            return rig.state_from_joint_states(
                {a: dict(zip(m.name, m.position, strict=False)) for a, m in follower.items()}
            )

        for _ in range(10):
            publish(START)
            time.sleep(0.02)
        # the teleop learns the driver is ready from its latched state topic: an event, wait for it
        wait_until(lambda: teleop.core.driver_state == "ready", 20.0, "teleop to see the driver ready")
        res = _call(ros.node("client"), "/teleop/start")
        assert res.success, res.message
        # By events (helpers.leader_path), not wall-clock margins; the leaders' legs are paced in sim
        # time, so the simulated servos see the same motion however loaded the machine is. They hold a
        # pose against gravity to ~0.02 rad and overshoot a leg's end by their dynamics (measured
        # <= 0.014 rad at load average 13): 0.05 rad (2.9 deg) bounds it with room for DDS jitter.
        sim = running.nodes["sim"].sim
        legs = follow_waypoints(
            publish,
            measure,
            START,
            waypoints_around(START),
            tol=0.025,
            gripper_tol=0.06,
            overshoot=0.05,
            clock=lambda: sim.time,  # legs paced in sim time
        )
        print("teleop vs sim legs", legs)
        assert teleop.published > 100
        assert driver.core.limiter.total("nonfinite") == 0
    finally:
        if leader is not None:
            leader.stop()
        _stop(ros, running)


def test_record_against_sim_then_replay_into_perception(ros, tmp_path):
    from clamp_core.episode_bag import EpisodeReader
    from rosbags.rosbag2 import Reader

    running = start_graph(
        build_graph("sim", "record"),
        context=ros.context,
        executor=ros.executor,
        overrides={
            "sim": SIZE,
            "recorder": {"out_dir": str(tmp_path), "gesture": False, "flush_interval_s": 0.25},
            "teleop": {"start_gesture": False},
        },
    )
    leader = SyntheticLeader(ros, amplitude=0.1).start()
    try:
        driver = running.nodes["arm_driver"]
        wait_until(lambda: driver.core.state == "ready", 40.0, "the driver to be ready")
        client = ros.node("client")
        teleop = running.nodes["teleop"]
        wait_until(lambda: teleop.core.driver_state == "ready", 20.0, "teleop to see the driver ready")
        assert _call(client, "/teleop/start").success
        recorder = running.nodes["recorder"]  # it refuses to start before its clock runs (it says so)
        wait_until(lambda: recorder.get_clock().now().nanoseconds > 0, 20.0, "the recorder to hear /clock")
        res = _call(client, "/recorder/start")
        assert res.success, res.message
        sim = running.nodes["sim"]
        f0 = sim.frames_published
        wait_until(lambda: sim.frames_published - f0 >= 20, 60.0, "20 sim camera frames")
        res = _call(client, "/recorder/stop_success")
        assert res.success, res.message
    finally:
        leader.stop()
        _stop(ros, running)
    bag = res.message

    with Reader(bag) as rb:  # a plain rosbags reader opens it
        assert rb.message_count > 0
    r = EpisodeReader(bag)
    info = r.topics()
    expected = expected_rates(PROFILE)

    def stamp_rate(topic):  # frames per second of sim time, from the messages' own stamps
        stamps = [m.msg.header.stamp.sec + m.msg.header.stamp.nanosec * 1e-9 for m in r.messages([topic])]
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    for cam in rig.CAMERAS:
        for topic in (rig.color_topic(cam), rig.depth_topic(cam)):
            assert stamp_rate(topic) == pytest.approx(expected[topic], rel=0.02), topic
            # bag (receive) time on sim time: the same rate up to arrival jitter at the two ends
            assert info[topic].rate_hz == pytest.approx(expected[topic], rel=0.3), topic
            assert info[rig.camera_info_topic(topic)].count >= info[topic].count - 2
    for arm in rig.FOLLOWERS:
        topic = rig.joint_states_topic(arm)
        assert stamp_rate(topic) == pytest.approx(expected[topic], rel=0.02), topic
    for topic in expected:  # the recorder's own measurement (header stamps) agrees
        if topic in r.metadata["rates"] and "leader" not in topic:
            assert r.metadata["rates"][topic] == pytest.approx(expected[topic], rel=0.05), topic
    for arm in rig.LEADERS:  # the synthetic leader publishes at 50 Hz wall time
        assert info[rig.joint_states_topic(arm)].count > 20
    assert info["/tf_static"].count >= 1 and info["/tf"].count > 10 and info[rig.TASK_TOPIC].count >= 1
    meta = r.metadata
    assert meta["success"] is True and meta["task"] and meta["dropped_frames"]
    assert sum(meta["dropped_frames"].values()) == 0
    # teleop's 50 Hz of sim time as the recorder saw it; flagged exactly when under the 45 Hz floor
    assert 20.0 < meta["control_hz"] < 55.0, meta["control_hz"]
    assert ("control_below_min_hz" in meta["flags"]) == (meta["control_hz"] < 45.0)
    print("sim episode control_hz", meta["control_hz"], "rates", meta["rates"])
    img = next(r.messages([rig.depth_topic("cam_high")])).msg
    assert (img.encoding, img.height, img.width) == ("16UC1", 120, 160)

    # Replay the bag (with /clock) into the perception node: it publishes views. Paced by events, not
    # wall time: each depth frame goes out once the node has taken in the /tf sent before it, and the
    # next one once the node has received it. (At bag speed on a loaded 2-core machine the node,
    # rendering in its callback, lets its 100-deep /tf queue overflow and never sees the wrist poses
    # of later frames: a perception-node limit reported in issue 17, not what this test is about.)
    from clamp_bringup.recorder import header_stamp_ns
    from clamp_core.ros import latched_publisher_qos, msg_class
    from clamp_perception.perception_node import PerceptionNode
    from rosgraph_msgs.msg import Clock

    perception = ros.add(
        PerceptionNode(context=ros.context, parameter_overrides=[Parameter("use_sim_time", value=True)])
    )
    views = []
    ros.node("views_probe").create_subscription(Image, rig.VIEWS_TOPIC, views.append, 10)
    node = ros.node("replay")
    pubs = {
        t: node.create_publisher(msg_class(i.msgtype), t, latched_publisher_qos() if t == "/tf_static" else 100)
        for t, i in info.items()
    }
    clock = node.create_publisher(Clock, "/clock", 10)
    depth_topics = {rig.depth_topic(c) for c in rig.CAMERAS}
    for t in [*depth_topics, "/tf", "/tf_static", "/clock"]:
        ros.wait_for_subscribers(pubs.get(t, clock))

    sent_tf: dict[str, int] = {}  # child frame -> newest stamp sent on /tf

    def tf_caught_up():  # the node has taken in every /tf message sent so far
        try:
            return all((perception.tf.latest_stamp(c) or -1) >= t for c, t in sent_tf.items())
        except RuntimeError:  # the buffer changed under the lookup (its callback thread): ask again
            return False

    last_clock, sent = -1, 0
    for topic, _, t, data in r.raw_messages():
        if t > last_clock:
            clock.publish(Clock(clock=Time(sec=t // 10**9, nanosec=t % 10**9)))
            last_clock = t
        if topic == "/tf":
            for tr in r.decode(data, "tf2_msgs/msg/TFMessage").transforms:
                sent_tf[tr.child_frame_id] = tr.header.stamp.sec * 10**9 + tr.header.stamp.nanosec
        if topic in depth_topics:
            wait_until(tf_caught_up, 20.0, f"the perception node to take in the /tf sent up to {t / 1e9:.2f}s")
        pubs[topic].publish(bytes(data))
        sent += 1
        if topic in depth_topics:  # the node has this frame before the next goes out (no queue overflows)
            cam, stamp = topic.split("/")[1], header_stamp_ns(data)
            wait_until(lambda c=cam, s=stamp: perception.sync.last_stamp.get(c) == s, 20.0, f"{cam} frame received")
    try:
        wait_until(lambda: len(views) >= 3, 10.0, "views from the perception node on replayed data")
    except AssertionError as exc:  # say why: the node's own skip counters and last problem
        raise AssertionError(
            f"{exc}; published {sent} msgs, perception skipped {dict(perception.skipped)}, "
            f"unmatched {perception.sync.dropped_unmatched}, last problem: {perception.last_problem}"
        ) from None
    v = views[-1]
    assert (v.height, v.width, v.encoding) == (rig.VIEW_SIZE, rig.VIEW_SIZE * len(rig.VIEW_NAMES), "32FC4")
    arr = np.frombuffer(bytes(v.data), np.float32).reshape(v.height, v.width, 4)
    assert np.count_nonzero(arr[..., 0]) > 0.05 * v.height * v.width  # the scene is really in the views
    stamps = {
        rec.msg.header.stamp.sec * 10**9 + rec.msg.header.stamp.nanosec
        for rec in r.messages([rig.depth_topic("cam_high")])
    }
    assert v.header.stamp.sec * 10**9 + v.header.stamp.nanosec in stamps  # observation time = recorded frame time
    assert perception is not None
