"""Bag -> views (the path training takes), the preview CLI, and the benchmark's JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from clamp_core import rig
from clamp_core.episode_bag import EpisodeWriter
from clamp_core.msg_conversions import make_camera_info, matrix_to_transform, numpy_to_image
from clamp_perception.bag_views import frames_from_bag
from clamp_perception.pipeline import PerceptionPipeline
from clamp_perception.synthetic import SyntheticScene, gripper_pose
from rclpy.serialization import serialize_message
from tf2_msgs.msg import TFMessage

H, W = 96, 128
S = 1_000_000_000


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """A 3-frame episode bag: four depth cameras, camera_info, /tf_static, /tf with a moving left gripper."""
    scene = SyntheticScene.aloha_table(height=H, width=W)
    path = tmp_path_factory.mktemp("bags") / "episode_0"
    poses = [gripper_pose([-0.30 + 0.05 * k, 0.50, 0.22], [1.0, 0.1, 0.0]) for k in range(3)]
    with EpisodeWriter(path, {"source": "sim", "action_source": "leader_joint_states/follower_gripper"}) as w:
        static = TFMessage(transforms=[matrix_to_transform(T, p, c, 0) for p, c, T in scene.tf_static()])
        w.write_raw("/tf_static", "tf2_msgs/msg/TFMessage", 0, serialize_message(static))
        for k, T in enumerate(poses):
            t = 2 * S + k * 100_000_000
            scene.wrist_poses["follower_left"] = T
            tf = TFMessage(transforms=[matrix_to_transform(Tp, p, c, t) for p, c, Tp in scene.tf_dynamic()])
            w.write_raw("/tf", "tf2_msgs/msg/TFMessage", t, serialize_message(tf))
            for cam in rig.CAMERAS:
                K = scene.cameras[cam][0]
                topic = rig.depth_topic(cam)
                info = make_camera_info(K, H, W, rig.color_optical_frame(cam), t)
                w.write_raw(rig.camera_info_topic(topic), "sensor_msgs/msg/CameraInfo", t, serialize_message(info))
                img = numpy_to_image(scene.depth_image(cam), "16UC1", t, rig.color_optical_frame(cam))
                w.write_raw(topic, "sensor_msgs/msg/Image", t, serialize_message(img))
    return path, scene, poses


def test_bag_frames_give_the_same_views_as_the_live_inputs(bag):
    path, scene, poses = bag
    pipe = PerceptionPipeline.from_config()
    skipped: dict = {}
    got = list(frames_from_bag(path, pipe, skipped=skipped))
    assert len(got) == 3 and not skipped
    stamp, frames, wrist = got[-1]
    assert stamp == 2 * S + 200_000_000
    # the scene's own frames (known poses, no bag, no TF) render identically
    scene.wrist_poses["follower_left"] = poses[-1]
    direct, wrists = scene.frames()
    views_bag, _ = pipe.process(frames, wrist)
    views_direct, _ = pipe.process(direct, wrists)
    np.testing.assert_allclose(views_bag, views_direct, atol=1e-5)
    # the left wrist view moved with the gripper between the first and last frame
    i = pipe.view_names.index("left_wrist")
    first = pipe.process(got[0][1], got[0][2])[0]
    assert not np.allclose(first[i], views_bag[i])
    # ... while the fixed overhead view of the static scene stays (sampled by other points, same surfaces)
    both = (first[0, ..., 0] > 0) & (views_bag[0, ..., 0] > 0)
    assert np.mean(np.abs(first[0, ..., 0] - views_bag[0, ..., 0])[both] < 2e-3) > 0.95


def test_render_cli_writes_pngs_from_a_bag_and_from_the_synthetic_scene(bag, tmp_path):
    path, _, _ = bag
    for extra, out in ((["--bag", str(path), "--frame", "1"], tmp_path / "bag"), ([], tmp_path / "synthetic")):
        res = subprocess.run(
            [sys.executable, "-m", "clamp_perception.preview", "--out", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        names = {p.name for p in out.glob("*.png")}
        assert "tiled.png" in names and all(
            f"{v}_depth.png" in names and f"{v}_xyz.png" in names for v in rig.VIEW_NAMES
        )
        assert "% of pixels filled" in res.stdout
    res = subprocess.run(
        [sys.executable, "-m", "clamp_perception.preview", "--bag", str(tmp_path), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0 and "no .mcap file" in res.stderr


def test_bench_prints_one_json_line():
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "clamp_perception.bench",
            "--cameras",
            "2",
            "--height",
            "120",
            "--width",
            "160",
            "--frames",
            "3",
            "--reference-frames",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("ms_per_frame", "p95_ms", "reference_ms", "speedup"):
        assert doc[key] > 0
    assert doc["cameras"] == 2 and doc["views"] == 5


def test_bag_replayed_through_the_node_matches_the_offline_path(ros, bag):
    """DESIGN parity: replay (clamp_bringup's BagPlayer, /clock) -> PerceptionNode == frames_from_bag -> pipeline."""
    import threading
    import time

    from clamp_core.episode_bag import EpisodeReader
    from clamp_core.msg_conversions import image_to_numpy, stamp_to_ns
    from clamp_perception.perception_node import PerceptionNode
    from clamp_perception.render import untile
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    replay = pytest.importorskip("clamp_bringup.replay", reason="clamp_bringup not importable")
    path, _, _ = bag
    node = ros.add(
        PerceptionNode(
            context=ros.context,
            parameter_overrides=[Parameter("use_sim_time", value=True), Parameter("image_qos", value="reliable")],
        )
    )
    got: dict[int, np.ndarray] = {}
    done = threading.Event()

    def on_views(msg):
        got[stamp_to_ns(msg.header.stamp)] = untile(image_to_numpy(msg), len(rig.VIEW_NAMES))

    probe = ros.node("views_probe")
    probe.create_subscription(
        Image, rig.VIEWS_TOPIC, on_views, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    player = replay.BagPlayer(ros.node("player"), EpisodeReader(path), rate=0.5)
    player.wait_for_subscribers(10.0)
    thread = threading.Thread(target=lambda: (player.play(), done.set()), daemon=True)
    thread.start()
    assert done.wait(30.0), "replay did not finish"
    deadline = time.monotonic() + 5.0
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got, f"no views from the replay; node skipped {dict(node.skipped)}: {node.last_problem}"
    pipe = node.pipeline
    offline = {stamp: pipe.process(frames, wrist)[0] for stamp, frames, wrist in frames_from_bag(path, pipe)}
    assert len(got) == 3, f"rendered {len(got)} of 3 frames; skipped {dict(node.skipped)}: {node.last_problem}"
    for stamp, views in got.items():
        np.testing.assert_allclose(views, offline[stamp], atol=1e-5)
