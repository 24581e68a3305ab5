"""PerceptionNode over real DDS: synthetic depth + camera_info + TF in, /clamp/views (and cloud, diagnostics) out."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from clamp_core import rig
from clamp_core.msg_conversions import (
    cloud_to_points,
    image_to_numpy,
    make_camera_info,
    matrix_to_transform,
    ns_to_stamp,
    numpy_to_image,
    stamp_to_ns,
)
from clamp_perception.perception_node import PerceptionNode
from clamp_perception.pipeline import CameraImage
from clamp_perception.render import untile
from clamp_perception.synthetic import SyntheticScene
from clamp_perception.transforms import TransformBuffer
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from tf2_msgs.msg import TFMessage

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
STATIC = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
H, W = 120, 160  # small camera images keep the test quick; the pipeline is size-agnostic


@pytest.fixture(scope="module")
def scene():
    sc = SyntheticScene.aloha_table(height=H, width=W)
    return sc, {cam: sc.depth_image(cam) for cam in rig.CAMERAS}


class FakeRig:
    """Publishes what realsense2_camera x4 + robot_state_publisher would: depth, camera_info, TF."""

    def __init__(self, ros, scene, depths, cameras=rig.CAMERAS, tf_for=None, clock=False, colours=None):
        self.scene, self.depths, self.cameras, self.colours = scene, depths, cameras, colours or {}
        self.colour_pubs = {c: ros.publisher(Image, rig.color_topic(c), RELIABLE) for c in self.colours}
        self.clock_pub = ros.publisher(Clock, "/clock", RELIABLE) if clock else None
        self.depth_pubs = {c: ros.publisher(Image, rig.depth_topic(c), RELIABLE) for c in cameras}
        self.info_pubs = {
            c: ros.publisher(CameraInfo, rig.camera_info_topic(rig.depth_topic(c)), RELIABLE) for c in cameras
        }
        self.tf_pub = ros.publisher(TFMessage, "/tf", RELIABLE)
        self.static_pub = ros.publisher(TFMessage, "/tf_static", STATIC)
        statics = [(p, c, T) for p, c, T in scene.tf_static() if tf_for is None or c in tf_for]
        self.static_pub.publish(TFMessage(transforms=[matrix_to_transform(T, p, c, 0) for p, c, T in statics]))
        self.stamps: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        t = 1_000_000_000
        while not self._stop.is_set():
            t += 50_000_000
            if self.clock_pub is not None:  # sim time: the clock runs with the sensor stamps
                self.clock_pub.publish(Clock(clock=ns_to_stamp(t)))
            self.tf_pub.publish(
                TFMessage(transforms=[matrix_to_transform(T, p, c, t) for p, c, T in self.scene.tf_dynamic()])
            )
            for cam in self.cameras:
                K, h, w, _ = self.scene.cameras[cam]
                self.info_pubs[cam].publish(make_camera_info(K, h, w, rig.color_optical_frame(cam), t))
                frame = rig.color_optical_frame(cam)
                if cam in self.colours:
                    self.colour_pubs[cam].publish(numpy_to_image(self.colours[cam], "rgb8", t, frame))
                self.depth_pubs[cam].publish(numpy_to_image(self.depths[cam], "16UC1", t, frame))
            self.stamps.append(t)
            self._stop.wait(0.05)


def make_node(ros, **params):
    overrides = [Parameter("image_qos", value="reliable"), Parameter("diagnostics_period_s", value=0.3)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return ros.add(PerceptionNode(context=ros.context, parameter_overrides=overrides))


def test_node_publishes_views_matching_the_offline_pipeline(ros, scene):
    sc, depths = scene
    node = make_node(ros)
    colours = {"cam_high": np.full((H, W, 3), (200, 10, 20), np.uint8)}  # only cam_high has colour
    with FakeRig(ros, sc, depths, colours=colours) as fake:
        msg = ros.wait_for_message(rig.VIEWS_TOPIC, Image, timeout=20.0, qos=RELIABLE)
        cloud = ros.wait_for_message(
            rig.CLOUD_TOPIC,
            PointCloud2,
            timeout=15.0,
            qos=RELIABLE,
            predicate=lambda m: any(f.name == "rgb" for f in m.fields),  # a frame whose colour had arrived
        )
        diag = ros.wait_for_message(
            rig.DIAGNOSTICS_TOPIC,
            DiagnosticArray,
            timeout=10.0,
            predicate=lambda m: any(s.name == "clamp_perception: views" for s in m.status),
        )
    assert (msg.height, msg.width, msg.encoding) == (rig.VIEW_SIZE, rig.VIEW_SIZE * len(rig.VIEW_NAMES), "32FC4")
    assert msg.header.frame_id == rig.WORLD_FRAME
    stamp = stamp_to_ns(msg.header.stamp)
    assert stamp in fake.stamps, "the views carry the observation (depth) stamp"
    views = untile(image_to_numpy(msg), len(rig.VIEW_NAMES))

    # parity: the same inputs through the ROS-free pipeline give the same views
    buf = TransformBuffer()
    for p, c, T in sc.tf_static():
        buf.set_transform(p, c, T, static=True)
    for p, c, T in sc.tf_dynamic():
        buf.set_transform(p, c, T, stamp)
    images = {
        cam: CameraImage(depths[cam], sc.cameras[cam][0], (H, W), rig.color_optical_frame(cam), None, stamp)
        for cam in rig.CAMERAS
    }
    expected, _ = node.pipeline.process(*node.pipeline.frames_from_buffer(images, buf, stamp))
    np.testing.assert_allclose(views, expected, atol=1e-5)
    assert (views[..., 0] > 0).mean() > 0.2

    pts, rgb = cloud_to_points(cloud)
    assert rgb is not None and {tuple(c) for c in np.unique(rgb, axis=0)} >= {(200, 10, 20), (128, 128, 128)}
    assert cloud.header.frame_id == rig.WORLD_FRAME and 1000 < len(pts) <= node.pipeline.cloud_max_points
    assert sc.surface_distance(pts.astype(np.float64)).max() < 0.01  # voxel centroids stay near the surfaces

    status = next(s for s in diag.status if s.name == "clamp_perception: views")
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["views_published"]) >= 1 and float(values["cam_high rate_hz"]) > 0
    assert "latency_ms_median" in values


def test_node_names_missing_tf_and_stale_cameras(ros, scene):
    sc, depths = scene
    node = make_node(ros)
    # no TF for the wrist cameras' mounts and cam_low never publishes
    cams = ("cam_high", "cam_left_wrist", "cam_right_wrist")
    tf_for = {rig.color_optical_frame("cam_high")}
    with FakeRig(ros, sc, depths, cameras=cams, tf_for=tf_for):
        diag = ros.wait_for_message(
            rig.DIAGNOSTICS_TOPIC,
            DiagnosticArray,
            timeout=15.0,
            predicate=lambda m: any("cam_low (required): no frame yet" in s.message for s in m.status),
        )
    status = diag.status[0]
    assert status.level == bytes([2])
    assert node.published == 0  # without cam_low there is never a complete observation
    # now make cam_low optional: frames flow, but the wrist cameras have no TF -> skipped, named
    node2 = make_node(ros)
    node2.sync.required, node2.sync.optional = list(cams), ["cam_low"]
    with FakeRig(ros, sc, depths, cameras=cams, tf_for=tf_for):
        diag = ros.wait_for_message(
            rig.DIAGNOSTICS_TOPIC,
            DiagnosticArray,
            timeout=15.0,
            predicate=lambda m: any(
                kv.key == "skipped missing_tf" and int(kv.value) > 0 for s in m.status for kv in s.values
            ),
        )
    values = {kv.key: kv.value for s in diag.status for kv in s.values}
    assert "cam_left_wrist_color_optical_frame" in values["last_problem"] or "cam_right_wrist" in values["last_problem"]
    assert node2.published == 0


def test_node_honours_use_sim_time(ros, scene):
    """On sim time the camera ages are measured against /clock: fresh cameras, status OK."""
    sc, depths = scene
    make_node(ros, use_sim_time=True)

    def all_fresh(m):
        for s in m.status:
            values = {kv.key: kv.value for kv in s.values}
            ages = [values.get(f"{c} age_ms", "never") for c in rig.CAMERAS]
            if s.level == bytes([0]) and "never" not in ages and max(float(a) for a in ages) < 500:
                return True
        return False

    with FakeRig(ros, sc, depths, clock=True):
        ros.wait_for_message(rig.VIEWS_TOPIC, Image, timeout=20.0, qos=RELIABLE)
        ros.wait_for_message(rig.DIAGNOSTICS_TOPIC, DiagnosticArray, timeout=10.0, predicate=all_fresh)


def _config_file(tmp_path, **sync):
    import copy

    import yaml
    from clamp_perception.pipeline import load_config

    cfg = copy.deepcopy(load_config())
    cfg["sync"].update(sync)
    path = tmp_path / "perception.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_node_keeps_going_without_an_optional_camera(ros, scene, tmp_path):
    sc, depths = scene
    cams = ("cam_high", "cam_left_wrist", "cam_right_wrist")
    cfg = _config_file(tmp_path, required_cameras=list(cams), optional_cameras=["cam_low"])
    node = make_node(ros, config_file=cfg, use_sim_time=True)  # camera ages against /clock
    with FakeRig(ros, sc, depths, cameras=cams, clock=True):  # cam_low is silent
        msg = ros.wait_for_message(rig.VIEWS_TOPIC, Image, timeout=20.0, qos=RELIABLE)
        diag = ros.wait_for_message(
            rig.DIAGNOSTICS_TOPIC,
            DiagnosticArray,
            timeout=10.0,
            predicate=lambda m: any("cam_low (optional): no frame yet" in s.message for s in m.status),
        )
    assert msg.width == rig.VIEW_SIZE * len(rig.VIEW_NAMES) and node.published >= 1
    assert diag.status[0].level == bytes([1])  # WARN, not ERROR: views still flow


def test_node_skips_mismatched_depth_and_camera_info_with_a_clear_reason(ros, scene, tmp_path):
    sc, depths = scene
    cfg = _config_file(tmp_path, required_cameras=["cam_high"], optional_cameras=[])
    node = make_node(ros, config_file=cfg)
    bad = {"cam_high": depths["cam_high"][: H // 2]}  # half-height depth, camera_info still says H x W
    with FakeRig(ros, sc, bad, cameras=("cam_high",)):
        diag = ros.wait_for_message(
            rig.DIAGNOSTICS_TOPIC,
            DiagnosticArray,
            timeout=15.0,
            predicate=lambda m: any(kv.key == "skipped bad_input" for s in m.status for kv in s.values),
        )
    values = {kv.key: kv.value for s in diag.status for kv in s.values}
    assert f"cam_high: depth image is {W}x{H // 2} but its camera_info says {W}x{H}" in values["last_problem"]
    assert node.published == 0
