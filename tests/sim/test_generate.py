"""A generated episode bag reads back with rosbags and has every expected topic at its rate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from clamp_core import rig
from clamp_core.episode_bag import EpisodeReader
from clamp_perception.transforms import TransformBuffer
from clamp_sim.demonstrations import OBJECTS_TOPIC, PROGRESS_TOPIC, generate
from clamp_sim.scripted import make_scripted_policy


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    res = generate("place_cube", 1, 7, out, image_size=(48, 64), camera_hz=10.0, progress=False)
    return res[0]


def test_bag_has_every_topic_at_its_rate(bag):
    assert bag["success"] is True
    with EpisodeReader(bag["bag"]) as reader:
        meta = reader.metadata
        topics = reader.topics()
        assert meta["source"] == "sim" and meta["task"] == "place_cube" and meta["seed"] == 7
        assert meta["action_source"] == "leader_joint_states/follower_gripper"
        assert set(meta["extras"]["objects_start"]) == {"red cube", "green plate"}
        expected = dict(meta["expected_rates"])
        assert {"/tf", rig.joint_states_topic("leader_left"), rig.depth_topic("cam_left_wrist")} <= set(expected)
        for topic, hz in expected.items():
            assert topic in topics, f"{topic} missing from the bag"
            assert abs(meta["rates"][topic] - hz) < 0.05 * hz, f"{topic}: {meta['rates'][topic]} Hz, want {hz}"
        for topic in ("/tf_static", rig.TASK_TOPIC):
            assert topics[topic].count == 1
        counts = {t: 0 for t in (rig.joint_states_topic("follower_right"), rig.depth_topic("cam_high"))}
        progress, objects = [], []
        buf = TransformBuffer(cache_time_s=60.0)
        for m in reader.messages():
            if m.topic in counts:
                counts[m.topic] += 1
            if m.topic == "/tf_static":
                buf.add_message(m.msg, static=True)
            elif m.topic == "/tf":
                buf.add_message(m.msg)
            elif m.topic == rig.depth_topic("cam_high") and counts[m.topic] == 1:
                depth = np.frombuffer(bytes(m.msg.data), np.uint16).reshape(m.msg.height, m.msg.width)
                assert m.msg.encoding == "16UC1" and (depth > 0).mean() > 0.5 and depth.max() < 2000
            elif m.topic == PROGRESS_TOPIC:
                progress.append(json.loads(m.msg.data))
            elif m.topic == OBJECTS_TOPIC:
                objects.append(json.loads(m.msg.data))
            elif m.topic == rig.joint_states_topic("leader_right") and m.stamp_ns == 0:
                assert list(m.msg.name) == list(rig.XS_JOINT_NAMES)
        # the episode ends once the demonstrator is done and the cube has settled on the plate
        steps = bag["steps"]
        assert 300 < steps < make_scripted_policy("place_cube").horizon and meta["extras"]["success_step"] <= steps
        assert counts[rig.joint_states_topic("follower_right")] == steps
        assert counts[rig.depth_topic("cam_high")] == -(-steps // 5)  # 10 Hz of 50 Hz steps
        # per frame, for the text prompts: object positions and a progress that rises to 1
        assert len(progress) == len(objects) == counts[rig.depth_topic("cam_high")]
        assert objects[0] == meta["extras"]["objects_start"] and set(objects[-1]) == {"red cube", "green plate"}
        best = [p["progress"] for p in progress]
        # (the last frame can precede the step at which the settled goal became a success)
        assert best[0] == 0.0 and best[-1] >= 0.9 and np.all(np.diff(best) >= 0)
        assert 0 < sum(0 < p["current"] < 1 for p in progress) < len(progress)
        # the TF tree in the bag links the wrist camera to the world through the gripper
        T = buf.lookup(rig.WORLD_FRAME, rig.color_optical_frame("cam_right_wrist"), int(1e9))
        assert T.shape == (4, 4) and 0.0 < T[2, 3] < 0.6


def test_parallel_workers_write_the_same_episodes(bag, tmp_path):
    """workers=2 records in two processes; the bags are those of a serial run (seeded), in seed order.
    The serial run is the module's `bag` (place_cube seed 7, same image size and camera rate)."""
    res = generate("place_cube", 2, 6, tmp_path / "par", image_size=(48, 64), camera_hz=10.0, progress=False, workers=2)
    ser = [bag]
    assert [r["seed"] for r in res] == [6, 7] and all(r["success"] for r in res)
    assert res[1]["steps"] == ser[0]["steps"]
    with EpisodeReader(res[1]["bag"]) as a, EpisodeReader(ser[0]["bag"]) as b:
        assert a.metadata["extras"]["objects_end"] == b.metadata["extras"]["objects_end"]
        assert a.metadata["message_counts"] == b.metadata["message_counts"]


def test_cli_rejects_bad_task(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "clamp_sim.generate", "--task", "juggle", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "invalid choice" in r.stderr


def test_evaluate_cli_writes_table_and_png(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "clamp_sim.evaluate",
            "--task",
            "transfer_cube",
            "--episodes",
            "1",
            "--seed",
            "4",
            "--out",
            str(tmp_path),
            "--image-size",
            "48",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["transfer_cube"]["success_rate"] == 1.0
    assert "| transfer_cube | 1 | 100% |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert (tmp_path / "strips" / "transfer_cube_seed4.png").exists()
