"""Benchmark: can the recorder keep up with ALOHA, and what does crash safety cost?

    python -m clamp_bringup.bench [--seconds S] [--profile aloha] [--dir DIR]

Writes S seconds of the profile's full data stream (4 cameras colour + aligned depth +
camera_info at their fps, joint states of four arms, /tf), as real rclpy-serialised messages:

- EpisodeWriter (the recorder's path: MCAP via rosbags, chunk flush + fsync every 0.5 s) vs the
  plain rosbags Writer (no mid-episode flush: a crash loses everything) on the same messages;
  `realtime_factor` = recorded seconds per wall second (>= 1 keeps up with the robot).
- EpisodeReader decoding the joint states + depth images vs mcap_ros2's decoder (the reference
  MCAP ROS 2 decoder) on the same bag.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from clamp_core import rig
from clamp_core.profile import load_profile
from tqdm import tqdm

from clamp_bringup.graph import expected_rates, recorded_topics


def make_stream(profile: dict, seconds: float) -> list[tuple[str, str, int, bytes]]:
    """(topic, msgtype, stamp ns, cdr) in time order, as the recorder would receive them."""
    import array

    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from tf2_msgs.msg import TFMessage

    rng = np.random.default_rng(0)
    rates = expected_rates(profile)
    types = recorded_topics(profile)
    payload: dict[str, bytes] = {}
    for topic, msgtype in types.items():
        if msgtype == "sensor_msgs/msg/Image":
            cam = topic.split("/")[1]
            w, h, _ = profile["cameras"][cam]["color_profile"]
            depth = "aligned_depth" in topic
            msg = Image(height=int(h), width=int(w), encoding="16UC1" if depth else "rgb8")
            msg.step = int(w) * (2 if depth else 3)
            msg.data = array.array("B", rng.integers(0, 255, msg.step * int(h), dtype=np.uint8).tobytes())
            payload[topic] = serialize_message(msg)
        elif msgtype == "sensor_msgs/msg/CameraInfo":
            payload[topic] = serialize_message(CameraInfo(height=480, width=640))
        elif msgtype == "sensor_msgs/msg/JointState":
            js = JointState(name=list(rig.XS_JOINT_NAMES), position=[0.1] * 9, velocity=[0.0] * 9, effort=[])
            payload[topic] = serialize_message(js)
        elif topic == "/tf":
            payload[topic] = serialize_message(TFMessage())
    period = {t: 1.0 / rates.get(t, rates.get(t.rsplit("/", 1)[0] + "/image_raw", 0) or 30.0) for t in payload}
    for t in payload:  # camera_info at its image's rate, /tf with the joint states
        if t.endswith("camera_info"):
            image = [i for i in rates if i.rsplit("/", 1)[0] == t.rsplit("/", 1)[0]]
            period[t] = 1.0 / rates[image[0]]
        if t == "/tf":
            period[t] = 1.0 / profile["joint_state_hz"]
    events = []
    for t, p in period.items():
        n = int(seconds / p)
        events += [(int(k * p * 1e9), t) for k in range(n)]
    events.sort()
    return [(t, types[t], ns, payload[t]) for ns, t in events]


def _write(stream, out: Path, episode: bool) -> float:
    t0 = time.perf_counter()
    if episode:
        from clamp_core.episode_bag import EpisodeWriter

        with EpisodeWriter(out, {"task": "bench"}, flush_interval_s=0.5, fsync=True) as w:
            for topic, msgtype, ns, data in tqdm(stream, desc="EpisodeWriter", leave=False):
                w.write_raw(topic, msgtype, ns, data)
    else:
        from clamp_core.episode_bag import make_typestore
        from rosbags.rosbag2 import StoragePlugin, Writer

        store = make_typestore()
        w = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
        w.open()
        conns = {}
        for topic, msgtype, ns, data in tqdm(stream, desc="rosbags Writer", leave=False):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=store)
            w.write(conns[topic], ns, data)
        w.close()
    return time.perf_counter() - t0


def _read(bag: Path, topics: list[str]) -> tuple[float, float, int]:
    from clamp_core.episode_bag import EpisodeReader
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    t0 = time.perf_counter()
    n = sum(1 for _ in EpisodeReader(bag).messages(topics))
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(next(bag.glob("*.mcap")), "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        m = sum(1 for _ in reader.iter_decoded_messages(topics=topics))
    ref = time.perf_counter() - t0
    assert m == n, f"readers disagree: {n} vs {m} messages"
    return ours, ref, n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_bringup.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds of robot data to write")
    ap.add_argument("--profile", default="aloha")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir, removed after)")
    a = ap.parse_args(argv)
    profile = load_profile(a.profile)
    stream = make_stream(profile, a.seconds)
    mbytes = sum(len(d) for *_, d in stream) / 1e6
    root = Path(tempfile.mkdtemp(prefix="clamp_bench_", dir=a.dir))
    try:
        t_plain = _write(stream, root / "plain", episode=False)
        t_ep = _write(stream, root / "episode", episode=True)
        topics = [rig.joint_states_topic(x) for x in rig.FOLLOWERS] + [rig.depth_topic(c) for c in rig.CAMERAS]
        t_read, t_ref, n_read = _read(root / "episode", topics)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "bench": "clamp_bringup.recorder",
        "profile": profile["name"],
        "seconds_of_data": a.seconds,
        "messages": len(stream),
        "megabytes": round(mbytes, 1),
        "data_rate_mb_s": round(mbytes / a.seconds, 1),
        "episode_writer_mb_s": round(mbytes / t_ep, 1),
        "episode_writer_realtime_factor": round(a.seconds / t_ep, 2),
        "baseline_rosbags_writer_mb_s": round(mbytes / t_plain, 1),
        "crash_safety_cost_ratio": round(t_ep / t_plain, 2),
        "reader_messages": n_read,
        "episode_reader_msgs_per_s": round(n_read / t_read, 1),
        "baseline_mcap_ros2_msgs_per_s": round(n_read / t_ref, 1),
        "reader_speedup_vs_mcap_ros2": round(t_ref / t_read, 2),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
