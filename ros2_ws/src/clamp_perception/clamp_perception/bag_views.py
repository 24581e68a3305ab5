"""Episode bag -> synchronised depth frames with their poses, for the pipeline. ROS-free.

The same steps as the node: /tf and /tf_static into a TransformBuffer, depth images grouped by
FrameSynchronizer, poses looked up per image stamp (cameras) and at the observation time (wrist
views). TF is read in a first pass so that a transform logged just after an image is still
available for it (the node sees the live stream, where TF normally leads the images).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from clamp_core import rig
from clamp_core.msg_conversions import camera_info_intrinsics, image_to_numpy, stamp_to_ns

from clamp_perception.pipeline import CameraImage, PerceptionPipeline
from clamp_perception.sync import FrameSynchronizer
from clamp_perception.transforms import TransformBuffer, TransformError


def frames_from_bag(
    bag_dir: str | Path,
    pipeline: PerceptionPipeline,
    cameras: list[str] | None = None,
    tolerance_ms: float | None = None,
    skipped: dict | None = None,
) -> Iterator[tuple[int, dict, dict]]:
    """Yield (observation stamp ns, {camera: DepthFrame}, {frame: T_world_frame}) per complete frame set.

    cameras: default = the rig cameras whose aligned depth topic is in the bag. Frame sets whose
    TF is missing are skipped and counted in `skipped` (reason -> count) when a dict is given.
    """
    from clamp_core.episode_bag import EpisodeReader

    reader = EpisodeReader(bag_dir)
    topics = reader.topics()
    if cameras is None:
        cameras = [c for c in rig.CAMERAS if rig.depth_topic(c) in topics]
    if not cameras:
        raise ValueError(
            f"{bag_dir}: no aligned depth topics (e.g. {rig.depth_topic(rig.CAMERAS[0])}); topics: {sorted(topics)}"
        )
    tol = tolerance_ms if tolerance_ms is not None else float(pipeline.config.get("sync", {}).get("tolerance_ms", 20))
    tf = TransformBuffer(cache_time_s=1e6)  # the whole episode
    for m in reader.messages(["/tf", "/tf_static"]):
        tf.add_message(m.msg, static=m.topic == "/tf_static")

    sync = FrameSynchronizer(cameras, tolerance_ns=int(tol * 1e6), queue_size=10)
    by_topic = {rig.depth_topic(c): c for c in cameras}
    info_topics = {rig.camera_info_topic(rig.depth_topic(c)): c for c in cameras}
    infos: dict = {}
    skipped = skipped if skipped is not None else {}
    for m in reader.messages(list(by_topic) + list(info_topics)):
        if m.topic in info_topics:
            infos[info_topics[m.topic]] = m.msg
            continue
        cam = by_topic[m.topic]
        sync.add(cam, stamp_to_ns(m.msg.header.stamp), m.msg)
        group = sync.pop()
        if group is None:
            continue
        if any(c not in infos for c in group.frames):
            skipped["no_camera_info"] = skipped.get("no_camera_info", 0) + 1
            continue
        images = {}
        for c, msg in group.frames.items():
            intr = camera_info_intrinsics(infos[c])
            images[c] = CameraImage(
                image_to_numpy(msg), intr.K, (intr.height, intr.width), msg.header.frame_id, intr.D, group.stamps[c]
            )
        try:
            frames, wrist = pipeline.frames_from_buffer(images, tf, group.stamp_ns)
        except TransformError:
            skipped["missing_tf"] = skipped.get("missing_tf", 0) + 1
            continue
        yield group.stamp_ns, frames, wrist
