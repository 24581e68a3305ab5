"""InferenceNode over real DDS on sim time, with an exported (tiny) policy; then inference -> executor."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from clamp_core import rig
from clamp_core.msg_conversions import numpy_to_image
from clamp_core.ros import latched_publisher_qos
from clamp_policy.executor_node import ChunkExecutorNode
from clamp_policy.inference_node import InferenceNode, wait_ready
from clamp_policy.models import DiffusionPolicy, save_policy, tiny_config
from clamp_policy.models.checkpoint import CheckpointError
from diagnostic_msgs.msg import DiagnosticArray
from policy_helpers import DT, Collector, SimClock, stamp_s
from rclpy.parameter import Parameter
from ros_harness import wait_until
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

TASK = "transfer the cube"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    torch.manual_seed(0)
    policy = DiffusionPolicy(tiny_config(task_conditioning="vocab", task_vocab=[TASK]))
    return str(save_policy(policy, tmp_path_factory.mktemp("export") / "policy"))


class ViewsPublisher:
    """Publishes tiled 32FC4 views (224 x 1120) stamped with the sim clock every `period` s of sim time."""

    def __init__(self, ros, sim: SimClock, period: float = 0.2) -> None:
        self.sim, self.period = sim, period
        self.pub = ros.publisher(Image, rig.VIEWS_TOPIC)
        self.task_pub = ros.publisher(String, rig.TASK_TOPIC, latched_publisher_qos())  # as clamp_sim and the task node
        s, v = rig.VIEW_SIZE, len(rig.VIEW_NAMES)
        self.views = np.random.default_rng(0).normal(0.4, 0.1, (s, v * s, 4)).astype(np.float32)
        self.stamps: list[float] = []
        self.enabled = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ViewsPublisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        last = -1.0
        while not self._stop.is_set():
            t = self.sim.now()
            if self.enabled and t - last >= self.period - 1e-9:
                last = t
                self.stamps.append(t)
                self.pub.publish(numpy_to_image(self.views, "32FC4", stamp=int(round(t * 1e9)), frame_id="world"))
                self.task_pub.publish(String(data=TASK))
            time.sleep(0.005)


def sim_params(**params):
    return [Parameter("use_sim_time", Parameter.Type.BOOL, True)] + [Parameter(k, value=v) for k, v in params.items()]


def test_chunks_stamped_with_the_observation_every_k_steps(ros, policy_dir):
    chunks_rx = Collector(ros, rig.ACTION_CHUNK_TOPIC, JointTrajectory)
    diagnostics = Collector(ros, rig.DIAGNOSTICS_TOPIC, DiagnosticArray)
    sim = SimClock(ros).start()
    views = ViewsPublisher(ros, sim).start()
    node = ros.add(
        InferenceNode(
            context=ros.context,
            parameter_overrides=sim_params(
                checkpoint=policy_dir, replan_every=10, num_inference_steps=3, warmup_runs=1
            ),
        )
    )
    try:
        wait_ready(node, 60.0)
        chunks = chunks_rx.wait(count=3, timeout=30.0)
        for msg in chunks:
            assert list(msg.joint_names) == list(rig.ACTION_NAMES)
            assert len(msg.points) == rig.CHUNK_LENGTH
            tfs = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
            np.testing.assert_allclose(tfs, np.arange(rig.CHUNK_LENGTH) * DT, atol=1e-9)
            pos = np.array([p.positions for p in msg.points])
            assert pos.shape == (50, 14) and np.all(np.isfinite(pos))
            # stamped with the arm state the policy saw (chunk point 0 = the target for that time, as in
            # training), not with the older views' stamp nor the publish time
            t = stamp_s(msg.header.stamp)
            assert abs(t / sim.step - round(t / sim.step)) < 1e-6, f"{t} is not a joint-state time"
            assert any(0.0 <= t - s <= 0.5 for s in views.stamps), "views older than max_obs_age_s were used"
        stamps = [stamp_s(m.header.stamp) for m in chunks]
        # one chunk per observation: never two with the same stamp (the executor drops the second)
        assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
        s = node.stats()
        assert s["ready"] and s["published"] >= 3 and s["inference_ms_median"] > 0 and s["errors"] == 0
        diag = diagnostics.wait(lambda m: m.status and m.status[0].name == "clamp_policy: inference")[0]
        assert diag.status[0].message in ("warming up", "ready")
        diagnostics.wait(lambda m: m.status[0].name == "clamp_policy: inference" and m.status[0].message == "ready")
        # stale views: no chunk is computed from them
        views.enabled = False
        wait_until(lambda: node.stats()["skipped_stale_views"] > 0, 20.0, "inference to skip stale views")
        published = node.published
        sim.wait_sim(0.5)
        assert node.published == published
    finally:
        views.stop()
        sim.stop()


def test_missing_or_mismatched_checkpoint_is_refused(ros, policy_dir, tmp_path):
    import shutil

    with pytest.raises(ValueError, match="set the `checkpoint` parameter"):
        InferenceNode(context=ros.context)
    bad = tmp_path / "bad"
    shutil.copytree(policy_dir, bad)
    doc = json.loads((bad / "config.json").read_text())
    doc["policy_config"]["decoder_layers"] = 4
    (bad / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="does not match"):
        InferenceNode(context=ros.context, parameter_overrides=[Parameter("checkpoint", value=str(bad))])


def test_inference_feeds_the_executor_on_sim_time(ros, policy_dir):
    sim = SimClock(ros).start()
    views = ViewsPublisher(ros, sim, period=0.1).start()
    inf = ros.add(
        InferenceNode(
            context=ros.context,
            parameter_overrides=sim_params(checkpoint=policy_dir, replan_every=10, num_inference_steps=3),
        )
    )
    ex = ros.add(ChunkExecutorNode(context=ros.context, parameter_overrides=sim_params(max_obs_age_s=1.0)))
    try:
        wait_ready(inf, 60.0)
        t0 = sim.now()
        wait_until(lambda: len(sim.commands_since(t0)) >= 60, 60.0, "60 commands from the executor")
        cmds = sim.commands_since(t0)
        stamps = np.array([t for t, _ in cmds])
        np.testing.assert_allclose(np.diff(stamps), DT, atol=1e-6)  # an unbroken 50 Hz stream
        assert ex.core.chunks_accepted >= 3 and ex.core.rejections.get("nonfinite", 0) == 0
        steps = np.abs(np.diff(np.array([c for _, c in cmds]), axis=0))
        assert np.all(steps <= ex.core.limiter.limits.velocity * DT + 1e-6)  # untrained policy: still safe
    finally:
        views.stop()
        sim.stop()


def test_rgb_policy_infers_on_the_colour_cameras_it_names(ros, tmp_path):
    """A policy with rgb.cameras subscribes to those cameras' colour topics; without them (or with
    stale ones) it infers on nothing, with them it publishes chunks, stamped with the arm state."""
    from clamp_policy.models.config import ImageEncoderConfig, RgbConfig

    torch.manual_seed(0)
    cams = ["cam_high", "cam_right_wrist"]
    cfg = tiny_config(image_encoder=ImageEncoderConfig(type="none"), rgb=RgbConfig(cameras=cams, size=[24, 32]))
    policy_dir = str(save_policy(DiffusionPolicy(cfg), tmp_path / "rgb_policy"))
    chunks_rx = Collector(ros, rig.ACTION_CHUNK_TOPIC, JointTrajectory)
    sim = SimClock(ros).start()
    pubs = {c: ros.publisher(Image, rig.color_topic(c)) for c in cams}
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    node = ros.add(
        InferenceNode(
            context=ros.context,
            parameter_overrides=sim_params(
                checkpoint=policy_dir, replan_every=10, num_inference_steps=3, warmup_runs=1
            ),
        )
    )
    try:
        wait_ready(node, 60.0)
        wait_until(lambda: node.stats()["skipped_no_rgb"] > 0, 20.0, "inference to wait for colour images")
        assert node.published == 0
        stop = threading.Event()

        def publish_rgb():
            while not stop.is_set():
                for c in cams:
                    pubs[c].publish(numpy_to_image(img, "rgb8", stamp=int(round(sim.now() * 1e9)), frame_id=c))
                time.sleep(0.02)

        thread = threading.Thread(target=publish_rgb, daemon=True)
        thread.start()
        try:
            chunks = chunks_rx.wait(count=2, timeout=30.0)
        finally:
            stop.set()
            thread.join(2.0)
        pos = np.array([p.positions for p in chunks[-1].points])
        assert pos.shape == (rig.CHUNK_LENGTH, rig.ACTION_DIM) and np.all(np.isfinite(pos))
        wait_until(lambda: node.stats()["skipped_stale_rgb"] > 0, 20.0, "inference to skip stale colour images")
    finally:
        sim.stop()
