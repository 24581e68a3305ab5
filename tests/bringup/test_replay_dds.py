"""Replay: a bag published over real DDS at bag time / rate with /clock, unchanged bytes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from clamp_bringup.replay import BagPlayer, episode_actions
from clamp_core import rig
from clamp_core.episode_bag import EpisodeReader, EpisodeWriter
from rclpy.serialization import serialize_message
from ros_harness import wait_until
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import String

T0 = 1_000_000_000_000


def _write_bag(path, seconds=1.0, hz=50):
    with EpisodeWriter(path, {"task": "replay me", "source": "teleop"}) as w:
        w.write_raw(rig.TASK_TOPIC, "std_msgs/msg/String", T0, serialize_message(String(data="replay me")))
        for i in range(int(seconds * hz)):
            t = T0 + i * int(1e9 / hz)
            for k, arm in enumerate(rig.FOLLOWERS + rig.LEADERS):
                js = JointState(name=list(rig.XS_JOINT_NAMES), position=[float(i), float(k)] + [0.0] * 7)
                js.header.stamp.sec, js.header.stamp.nanosec = divmod(t, 1_000_000_000)
                w.write_raw(rig.joint_states_topic(arm), "sensor_msgs/msg/JointState", t, serialize_message(js))
    return path


def test_player_publishes_bag_time_clock_and_messages(ros, tmp_path):
    bag = _write_bag(tmp_path / "ep")
    reader = EpisodeReader(bag)
    node = ros.node("replay_under_test")
    player = BagPlayer(node, reader, rate=2.0)
    got, clocks = [], []
    sub_node = ros.node("listener")
    sub_node.create_subscription(JointState, rig.joint_states_topic("leader_right"), got.append, 100)
    sub_node.create_subscription(Clock, "/clock", clocks.append, 100)
    ros.wait_for_subscribers(player._pubs[rig.joint_states_topic("leader_right")])
    ros.wait_for_subscribers(player._clock_pub)
    t = time.monotonic()
    n = player.play()
    elapsed = time.monotonic() - t
    assert n == 1 + 4 * 50
    assert 0.45 <= elapsed < 2.0  # 1 s of bag at rate 2 (paced, not dumped; slack for a loaded machine)
    wait_until(lambda: len(got) >= 50 and len(clocks) >= 50, 5.0, "all replayed messages")
    assert [int(m.position[0]) for m in got] == list(range(50))  # in order, unchanged
    assert all(m.position[1] == 3.0 for m in got)
    stamps = [c.clock.sec * 1_000_000_000 + c.clock.nanosec for c in clocks]
    assert stamps[0] == T0 and stamps == sorted(stamps) and stamps[-1] == T0 + 49 * 20_000_000

    with pytest.raises(ValueError, match="not in"):
        BagPlayer(node, reader, topics=["/nope"])
    with pytest.raises(ValueError, match="rate"):
        BagPlayer(node, reader, rate=0.0)


def test_player_waits_for_the_consumers_topics_to_match(ros, tmp_path):
    """wait_for_consumers: only the played topics the given nodes subscribe to (and /clock) count; once
    discovery has matched them, nothing published is lost."""
    player = BagPlayer(ros.node("replay_waiting"), EpisodeReader(_write_bag(tmp_path / "ep", seconds=0.1)))
    consumer = ros.node("consumer")
    consumer.create_subscription(JointState, rig.joint_states_topic("leader_left"), lambda m: None, 10)
    consumer.create_subscription(Clock, "/clock", lambda m: None, 10)
    consumer.create_subscription(String, "/not_in_the_bag", lambda m: None, 10)  # not played: not waited for
    assert player.wait_for_consumers([consumer], 30.0) == []
    assert player._pubs[rig.joint_states_topic("leader_left")].get_subscription_count() >= 1
    assert player._clock_pub.get_subscription_count() >= 1


def test_recorded_actions_from_leaders(tmp_path):
    bag = _write_bag(tmp_path / "ep", seconds=0.2)
    t, a = episode_actions(EpisodeReader(bag))
    assert a.shape[1] == 14 and len(t) == len(a) >= 10
    np.testing.assert_allclose(a[-1, [0, 7]], [9.0, 9.0])
    assert a[0, 6] == pytest.approx(rig.LEADER_GRIPPER.normalise(0.0))


def test_replay_cli(ros, tmp_path):
    bag = _write_bag(tmp_path / "ep", seconds=0.5)
    got = []
    topic = rig.joint_states_topic("follower_left")
    ros.node("cli_listener").create_subscription(JointState, topic, got.append, 100)
    done = {}

    def run():
        done["out"] = subprocess.run(
            [sys.executable, "-m", "clamp_bringup.replay", str(bag), "--wait-subscribers", "30", "--topics", topic],
            capture_output=True,
            text=True,
            timeout=120,
        )

    th = threading.Thread(target=run)
    th.start()
    th.join()
    out = done["out"]
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["replayed"] == 25 and "nobody subscribes" not in out.stderr
    wait_until(lambda: len(got) >= 25, 5.0, "the CLI's messages")
    assert [int(m.position[0]) for m in got] == list(range(25))


def test_replay_reports_open_loop_error_of_a_policy(tmp_path):
    """`replay BAG --checkpoint DIR`: perception + inference run on the replayed bag; chunks are scored."""
    torch = pytest.importorskip("torch")
    from clamp_policy.models import DiffusionPolicy, save_policy, tiny_config
    from clamp_training.synthetic import write_synthetic_episode

    bag = write_synthetic_episode(tmp_path / "ep", duration_s=3.0, image_size=(120, 160))
    torch.manual_seed(0)
    ckpt = save_policy(
        DiffusionPolicy(tiny_config(task_conditioning="vocab", task_vocab=["transfer the cube"])), tmp_path / "policy"
    )
    report, plot = tmp_path / "open_loop.json", tmp_path / "open_loop.png"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "clamp_bringup.replay",
            str(bag),
            "--checkpoint",
            str(ckpt),
            "--rate",
            "0.25",  # 3 s of bag in 12 s: perception's first views cost wall time, not bag time
            "--report",
            str(report),
            "--plot",
            str(plot),
            "--settle",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    rep = json.loads(report.read_text())
    assert rep["chunks"] >= 2, rep
    assert np.isfinite(rep["mae"]) and rep["mae"] > 0  # an untrained policy is wrong, measurably
    assert set(rep["mae_per_joint"]) == set(rig.ACTION_NAMES) and len(rep["mae_per_step"]) == rig.CHUNK_LENGTH
    assert plot.stat().st_size > 1000
    assert json.loads(out.stdout.strip().splitlines()[-1])["open_loop"]["chunks"] == rep["chunks"]
