"""PerceptionNode: four aligned depth streams + camera_info + TF -> /clamp/views, /clamp/cloud, /diagnostics.

A thin adapter: the work is PerceptionPipeline (ROS-free), frames are grouped by FrameSynchronizer
and extrinsics come from a TransformBuffer fed by /tf and /tf_static, exactly as training does
from a bag.

Threads: the subscription callbacks only store what arrives (so /tf is taken in as it comes, never
behind a render) and hand the newest complete frame set to a render thread (worker.NewestWorker),
which waits up to `tf_wait_s` for TF / camera_info that has not arrived yet. High-rate topics stay
on the node's one single-threaded executor (clamp_core.ros.make_executor).

Published:
  rig.VIEWS_TOPIC  sensor_msgs/Image 32FC4, 224 x (224*5), views tiled in rig.VIEW_NAMES order,
                   channels depth, x, y, z (metres; empty pixel = 0), stamp = observation time
                   (newest depth stamp of the group), frame_id = world.
  rig.CLOUD_TOPIC  sensor_msgs/PointCloud2 (x, y, z float32, world), voxel-downsampled and
                   decimated, every `cloud.every_n_frames` processed frames.
  /diagnostics     per-camera rate and age, processing latency, frames published / skipped and why.
Never crashes on bad input: the frame is skipped, counted, and a throttled message says why.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
from clamp_core import rig
from clamp_core.msg_conversions import (
    camera_info_intrinsics,
    image_to_numpy,
    ns_to_stamp,
    numpy_to_image,
    points_to_cloud,
    stamp_to_ns,
)
from clamp_core.ros import latched_subscriber_qos, publish_status, reliable_qos, spin_node
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from tf2_msgs.msg import TFMessage

from clamp_perception.pipeline import CameraImage, PerceptionPipeline, default_config_path
from clamp_perception.sync import FrameSynchronizer
from clamp_perception.transforms import (
    ConnectivityError,
    ExtrapolationError,
    TransformBuffer,
    TransformError,
    UnknownFrameError,
)
from clamp_perception.worker import NewestWorker, Wait


def _image_qos(name: str) -> QoSProfile:
    if name == "sensor_data":  # best effort matches reliable and best-effort camera drivers alike
        return QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
    if name == "reliable":
        return QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    raise ValueError(f"image_qos must be 'sensor_data' or 'reliable', got {name!r}")


class _Rate:
    """Messages per second over a sliding window of arrival times (monotonic clock)."""

    def __init__(self, window: int = 30) -> None:
        self.times: collections.deque = collections.deque(maxlen=window)

    def tick(self) -> None:
        self.times.append(time.monotonic())

    def hz(self) -> float:
        if len(self.times) < 2 or time.monotonic() - self.times[-1] > 2.0:
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)


class PerceptionNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("clamp_perception", **kwargs)
        self.declare_parameter("config_file", "")  # empty: the package's config/perception.yaml
        self.declare_parameter("image_qos", "sensor_data")  # or "reliable"
        self.declare_parameter("publish_cloud", True)
        self.declare_parameter("colour_cloud", True)  # colour /clamp/cloud from the cameras' colour streams
        self.declare_parameter("diagnostics_period_s", 1.0)
        self.declare_parameter("tf_wait_s", 0.25)  # wall time a frame may wait for late TF / camera_info
        self.declare_parameter("threads", 2)  # worker threads of the pipeline (cameras / views in parallel)
        config_file = self.get_parameter("config_file").value or str(default_config_path())
        self.pipeline = PerceptionPipeline.from_config(config_file)
        self.pipeline.set_threads(int(self.get_parameter("threads").value))
        cfg = self.pipeline.config
        sync_cfg, tf_cfg, cloud_cfg = cfg.get("sync", {}) or {}, cfg.get("tf", {}) or {}, cfg.get("cloud", {}) or {}
        required = list(sync_cfg.get("required_cameras", rig.CAMERAS))
        optional = list(sync_cfg.get("optional_cameras", []))
        unknown = [c for c in required + optional if c not in rig.CAMERAS]
        if unknown:
            raise ValueError(f"{config_file}: cameras {unknown} are not rig cameras {rig.CAMERAS}")
        self.sync = FrameSynchronizer(required, optional, int(float(sync_cfg.get("tolerance_ms", 20.0)) * 1e6))
        self.max_age_ns = int(float(sync_cfg.get("max_age_ms", 200.0)) * 1e6)
        self.tf = TransformBuffer(
            float(tf_cfg.get("cache_s", 10.0)), float(tf_cfg.get("extrapolation_tolerance_ms", 50.0)) / 1e3
        )
        self.cloud_every = max(1, int(cloud_cfg.get("every_n_frames", 5)))
        self.publish_cloud = bool(self.get_parameter("publish_cloud").value)
        self.colour_cloud = self.publish_cloud and bool(self.get_parameter("colour_cloud").value)
        self.colours: dict[str, collections.deque] = {c: collections.deque(maxlen=5) for c in self.sync.cameras}

        self.infos: dict[str, CameraInfo] = {}
        self.rates = {c: _Rate() for c in self.sync.cameras}
        self.latency_ms: collections.deque = collections.deque(maxlen=100)
        self.published = 0
        self.skipped: collections.Counter = collections.Counter()
        self.last_problem = ""
        self._skipped_reported = 0
        self.tf_wait_s = float(self.get_parameter("tf_wait_s").value)
        self._lock = threading.Lock()  # TF buffer, camera_infos and colour queues: callbacks write, the worker reads

        image_qos = _image_qos(self.get_parameter("image_qos").value)
        for cam in self.sync.cameras:
            topic = rig.depth_topic(cam)
            self.create_subscription(Image, topic, lambda m, c=cam: self._on_depth(c, m), image_qos)
            self.create_subscription(
                CameraInfo, rig.camera_info_topic(topic), lambda m, c=cam: self._on_info(c, m), image_qos
            )
            if self.colour_cloud:
                self.create_subscription(Image, rig.color_topic(cam), lambda m, c=cam: self._on_colour(c, m), image_qos)
        self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), reliable_qos(depth=100))
        self.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), latched_subscriber_qos())
        self.views_pub = self.create_publisher(Image, rig.VIEWS_TOPIC, reliable_qos(depth=2))
        self.cloud_pub = self.create_publisher(PointCloud2, rig.CLOUD_TOPIC, reliable_qos(depth=2))
        self.diag_pub = self.create_publisher(DiagnosticArray, rig.DIAGNOSTICS_TOPIC, 10)
        self.create_timer(float(self.get_parameter("diagnostics_period_s").value), self._publish_diagnostics)
        # the render thread; the callbacks above only store and hand it the newest complete frame set
        self.worker = NewestWorker(self._process, self.tf_wait_s, self._give_up, self._failed, "perception render")
        self.get_logger().info(
            f"perception: {len(required)} required + {len(optional)} optional cameras, "
            f"views {self.pipeline.view_names}, config {config_file}"
        )

    # ---------------------------------------------------------------------------------- inputs
    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        try:
            with self._lock:
                self.tf.add_message(msg, static=static)
        except ValueError as exc:  # NaN transform, empty frame name: drop it, say so
            self._skip("bad_tf", f"ignored a {'/tf_static' if static else '/tf'} message: {exc}")
        self.worker.inputs_changed()

    def _on_info(self, cam: str, msg: CameraInfo) -> None:
        with self._lock:
            self.infos[cam] = msg
        self.worker.inputs_changed()

    def _on_colour(self, cam: str, msg: Image) -> None:
        with self._lock:
            self.colours[cam].append(msg)

    def _on_depth(self, cam: str, msg: Image) -> None:
        self.rates[cam].tick()
        self.sync.add(cam, stamp_to_ns(msg.header.stamp), msg)
        group = self.sync.pop()
        if group is not None:
            self.worker.offer(group)  # the render thread takes the newest; it may still wait for TF

    def _give_up(self, group, wait: Wait) -> None:
        self._skip(wait.reason, f"{wait.text} (waited {self.tf_wait_s:.2f}s)")

    def _failed(self, group, exc: BaseException) -> None:  # never let one bad frame kill the node
        if not self.context.ok():  # shutting down: publishers are gone, nothing to report
            return
        self._skip("internal_error", f"frame at {group.stamp_ns / 1e9:.3f}s failed: {type(exc).__name__}: {exc}")

    def destroy_node(self):
        worker = getattr(self, "worker", None)  # absent when __init__ failed before starting it
        if worker is not None:
            worker.stop()  # no render thread publishing through a destroyed node
        return super().destroy_node()

    def _skip(self, reason: str, text: str) -> None:  # from the callbacks and the render thread
        with self._lock:
            self.skipped[reason] += 1
            self.last_problem = text
        self.get_logger().warning(text, throttle_duration_sec=2.0)

    # ------------------------------------------------------------------------------------ work
    def _process(self, group) -> None:
        """Runs on the render thread; raises Wait while TF / camera_info for the group is missing."""
        t0 = time.perf_counter()
        images = {}
        for cam, msg in group.frames.items():
            with self._lock:
                info = self.infos.get(cam)
            if info is None:
                raise Wait("no_camera_info", f"no camera_info received yet for {cam}; skipping the frame")
            try:
                depth = image_to_numpy(msg)
                intr = camera_info_intrinsics(info)
            except ValueError as exc:
                self._skip("bad_input", f"{cam}: {exc}")
                return
            images[cam] = CameraImage(
                depth,
                intr.K,
                (intr.height, intr.width),
                msg.header.frame_id or rig.color_optical_frame(cam),
                intr.D if intr.distortion_model else None,
                group.stamps[cam],
            )
        if group.missing_optional:
            self.get_logger().warning(
                f"optional camera(s) {group.missing_optional} have no frame near {group.stamp_ns / 1e9:.3f}s; "
                "rendering without them",
                throttle_duration_sec=5.0,
            )
        try:
            with self._lock:  # the lookups only; rendering runs without holding up /tf
                frames, wrist = self.pipeline.frames_from_buffer(images, self.tf, group.stamp_ns)
            views, cloud = self.pipeline.process(frames, wrist)
        except (UnknownFrameError, ConnectivityError, ExtrapolationError) as exc:
            if isinstance(exc, ExtrapolationError) and not exc.future:
                self._skip("missing_tf", f"skipping frame at {group.stamp_ns / 1e9:.3f}s: {exc}")
                return
            # TF not there yet (or still catching up): the frame waits a little for it
            raise Wait("missing_tf", f"skipping frame at {group.stamp_ns / 1e9:.3f}s: {exc}") from exc
        except TransformError as exc:
            self._skip("missing_tf", f"skipping frame at {group.stamp_ns / 1e9:.3f}s: {exc}")
            return
        except ValueError as exc:
            self._skip("bad_input", f"skipping frame at {group.stamp_ns / 1e9:.3f}s: {exc}")
            return
        stamp = ns_to_stamp(group.stamp_ns)
        msg = numpy_to_image(self.pipeline.tile(views), "32FC4", stamp, rig.WORLD_FRAME)
        # counted before it leaves, as the inference node does: a subscriber can then never have seen more
        # views than `published` says (counted after, a test's subscription held the 2nd while this read 1)
        self.published += 1
        self.views_pub.publish(msg)
        if self.publish_cloud and self.published % self.cloud_every == 1 % self.cloud_every:
            rgb = None
            if self.colour_cloud and self._attach_colours(frames, group):
                cloud, rgb = self.pipeline.fuse_coloured(frames)
                pts, rgb = self.pipeline.cloud_for_publishing(cloud, self.published, rgb)
            else:
                pts = self.pipeline.cloud_for_publishing(cloud, seed=self.published)
            self.cloud_pub.publish(points_to_cloud(pts, rig.WORLD_FRAME, stamp, rgb=rgb))
        self.latency_ms.append((time.perf_counter() - t0) * 1e3)

    def _attach_colours(self, frames: dict, group) -> bool:
        """Set DepthFrame.colour from the colour image with the depth's stamp; False if none matched."""
        any_colour = False
        for cam, frame in frames.items():
            t = group.stamps[cam]
            with self._lock:
                candidates = list(self.colours[cam])
            match = min(candidates, key=lambda m: abs(stamp_to_ns(m.header.stamp) - t), default=None)
            if match is None or abs(stamp_to_ns(match.header.stamp) - t) > self.sync.tolerance_ns:
                continue
            try:
                img = image_to_numpy(match)
            except ValueError as exc:
                self._skip("bad_colour", f"{cam}: colour image unusable for the cloud: {exc}")
                continue
            if match.encoding in ("bgr8", "bgra8"):
                img = img[..., 2::-1]
            if img.ndim != 3 or img.shape[:2] != frame.depth.shape:
                self._skip(
                    "bad_colour",
                    f"{cam}: colour {match.width}x{match.height} ({match.encoding}) is not aligned with depth "
                    f"{frame.depth.shape[1]}x{frame.depth.shape[0]}; cloud published without its colour",
                )
                continue
            frame.colour = img
            any_colour = True
        return any_colour

    # ----------------------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        OK, WARN, ERROR = 0, 1, 2  # DiagnosticStatus levels (bytes in the message)
        level, problems, values, stale_required = OK, [], {}, []
        for cam in self.sync.cameras:
            last = self.sync.last_stamp.get(cam)
            age_ms = float("inf") if last is None else (now_ns - last) / 1e6
            values[f"{cam} rate_hz"] = f"{self.rates[cam].hz():.1f}"
            values[f"{cam} age_ms"] = "never" if last is None else f"{age_ms:.0f}"
            required = cam in self.sync.required
            if last is None or age_ms > self.max_age_ns / 1e6:
                what = "no frame yet" if last is None else f"last frame {age_ms:.0f} ms ago"
                problems.append(f"{cam} {'(required)' if required else '(optional)'}: {what}")
                level = max(level, ERROR if required else WARN)
                if required:
                    stale_required.append(f"{cam} ({what}, {rig.depth_topic(cam)})")
        if stale_required:  # one throttled line naming every stale camera
            self.get_logger().warning(
                f"required camera(s) stale: {'; '.join(stale_required)}; no views until they are back",
                throttle_duration_sec=5.0,
            )
        with self._lock:
            skipped, last_problem = dict(self.skipped), self.last_problem
        skipped_now = sum(skipped.values())
        if level == OK and skipped_now > self._skipped_reported:  # frames were skipped since the last report
            level = WARN
        self._skipped_reported = skipped_now
        lat = np.array(self.latency_ms) if self.latency_ms else np.zeros(1)
        values["latency_ms_median"] = f"{np.median(lat):.1f}"
        values["latency_ms_max"] = f"{lat.max():.1f}"
        values["views_published"] = self.published
        values["frames_superseded"] = self.worker.superseded  # newer frame sets came while rendering (not an error)
        values["frames_unmatched"] = self.sync.dropped_unmatched
        values.update({f"skipped {k}": v for k, v in sorted(skipped.items())})
        if last_problem:
            values["last_problem"] = last_problem
        message = "; ".join(problems) if problems else ("ok" if level == OK else last_problem)
        name = "clamp_perception: views"
        publish_status(self, self.diag_pub, name, bytes([level]), message[:500], values, hardware_id="clamp_perception")


def main(args=None) -> None:
    spin_node(PerceptionNode, args)


if __name__ == "__main__":
    main()
