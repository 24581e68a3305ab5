"""Benchmark: can the recorder keep up with ALOHA, and what does crash safety cost?

    python -m clamp_bringup.bench [--seconds S] [--profile aloha] [--dir DIR]
    python -m clamp_bringup.bench --full-stream --seconds 60 [--compression zstd none]
    python -m clamp_bringup.bench --executors
    python -m clamp_bringup.bench --recompress BAG... [--compression zstd lz4 none]

`--full-stream`: the recorder node over real DDS. Another process publishes the profile's full
stream with real message sizes (4 cameras colour 640x480 rgb8 + aligned depth 16UC1 + their
camera_infos at 30 Hz, four arms' joint states at joint_state_hz, /tf), sensor-like content (smooth
scene + noise, so compression is not flattered by constant images); the recorder records one
episode per compression setting. Reports offered vs received (dropped) per topic, CPU seconds of
the recorder process per recorded MB, and bag MB per minute; ends with one JSON line.

`--executors`: messages/s and CPU per message of rclpy's SingleThreadedExecutor vs
MultiThreadedExecutor, subscriber in its own process (why clamp_core.ros.make_executor exists).

Without either flag:
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
import threading
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


# ----------------------------------------------------------------------------------- full stream
# Fast DDS's shared-memory transport carries a message only if it fits one segment (512 KB by
# default): bigger ones (every 640x480 image) fall back to UDP loopback in 64 KB fragments, whose
# socket buffers overflow under load; reliable KEEP_LAST then loses what the writer's 10-deep
# history no longer holds. A larger segment keeps images on shared memory (measured: 8.4% dropped
# -> 0 on 5 s of the full stream, no compression). Both ends must use it (the camera drivers too):
# the robot's graph sets the same file (clamp_bringup/config/fastdds_large_messages.xml).


def dds_env(mode: str) -> dict:
    """Environment for both processes: Fast DDS defaults, or the large shared-memory segment."""
    import os

    env = os.environ.copy()
    if mode == "shm":
        from clamp_bringup.graph import FASTDDS_PROFILE_VARIABLES, fastdds_profile_path

        env.update(dict.fromkeys(FASTDDS_PROFILE_VARIABLES, str(fastdds_profile_path())))  # the robot's own
    elif mode != "default":
        raise ValueError(f"--dds must be 'shm' or 'default', got {mode!r}")
    return env


def sensor_frames(w: int, h: int, n: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """n colour (rgb8) and depth (16UC1, mm) frames of a table scene with sensor noise.

    Smooth shading + a few objects that move between frames + per-pixel noise (colour +-3 levels,
    depth ~1.5 mm at 0.6 m growing with z^2, 3% invalid (0) pixels): compresses like camera data,
    not like a constant test pattern.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colours, depths = [], []
    for k in range(n):
        rgb = np.stack([90 + 60 * yy / h, 80 + 40 * xx / w, 70 + 30 * (xx + yy) / (w + h)], axis=-1)
        depth = 550.0 + 350.0 * yy / h
        for j in range(3):
            cx, cy = int(w * (0.25 + 0.25 * j) + 4 * k), int(h * 0.5 + 3 * k * (j - 1))
            sl = (slice(max(cy - 40, 0), cy + 40), slice(max(cx - 30, 0), cx + 30))
            rgb[sl] = (200 - 60 * j, 60 + 70 * j, 50 + 40 * j)
            depth[sl] -= 60 + 20 * j
        rgb += rng.normal(0, 1.5, rgb.shape)
        z = depth / 1000.0
        depth += rng.normal(0, 1.0, depth.shape) * (1.5 * (z / 0.6) ** 2)
        depth[rng.random(depth.shape) < 0.03] = 0
        colours.append(np.clip(rgb, 0, 255).astype(np.uint8).tobytes())
        depths.append(np.clip(depth, 0, 65535).astype(np.uint16).tobytes())
    return colours, depths


def run_publisher(profile_name: str, seconds: float, ready_file: str, n_cameras: int = 4) -> int:
    """The other process: publish the full stream for `seconds` once the recorder is subscribed."""
    import array
    import os

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from tf2_msgs.msg import TFMessage

    profile = load_profile(profile_name)
    rates = expected_rates(profile)
    rclpy.init()
    node = rclpy.create_node("bench_full_stream")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # as realsense2_camera / xs_sdk
    cams = {}
    for cam, spec in list(profile["cameras"].items())[:n_cameras]:
        w, h, fps = (int(v) for v in spec["color_profile"])
        colours, depths = sensor_frames(w, h, 8, seed=len(cams))
        msgs = []
        for topic, frames, enc, bpp in (
            (rig.color_topic(cam), colours, "rgb8", 3),
            (rig.depth_topic(cam), depths, "16UC1", 2),
        ):
            pub = node.create_publisher(Image, topic, qos)
            info_pub = node.create_publisher(CameraInfo, rig.camera_info_topic(topic), qos)
            imgs = []
            for f in frames:
                m = Image(height=h, width=w, encoding=enc, step=w * bpp)
                m.header.frame_id = f"{cam}_color_optical_frame"
                m.data = array.array("B", f)
                imgs.append(m)
            info = CameraInfo(height=h, width=w, distortion_model="plumb_bob")
            info.header.frame_id = f"{cam}_color_optical_frame"
            msgs.append((pub, imgs, info_pub, info))
        cams[cam] = (1.0 / fps, msgs)
    js_pubs = {t: node.create_publisher(JointState, t, qos) for t in rates if t.endswith("/joint_states")}
    tf_pub = node.create_publisher(TFMessage, "/tf", qos)
    js_period = 1.0 / float(profile["joint_state_hz"])
    counts: dict[str, int] = {}
    nbytes = 0  # payload bytes published (image data; joint states ~0.2 KB each)
    # start when every stream has its subscriber (the recorder's)
    pubs = [p for _, msgs in cams.values() for p, _, ip, _ in msgs for p in (p, ip)] + list(js_pubs.values())
    deadline = time.monotonic() + 60.0
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    Path(ready_file).write_text("ready")
    time.sleep(0.5)

    def stamp(t: float):
        from builtin_interfaces.msg import Time

        ns = int(t * 1e9)
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    t0 = time.monotonic()
    wall0 = time.time()
    n_js = 0
    n_cam = dict.fromkeys(cams, 0)
    late = 0
    while True:
        # next due event (absolute deadlines: late events are published late, never skipped)
        due_js = t0 + n_js * js_period
        due_cam = {c: t0 + n_cam[c] * cams[c][0] for c in cams}
        cam_next = min(due_cam, key=due_cam.get)
        due = min(due_js, due_cam[cam_next])
        if due - t0 >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.1:
            late += 1
        st = stamp(wall0 + (due - t0))
        if due == due_js:
            n_js += 1
            for topic, pub in js_pubs.items():
                m = JointState(name=list(rig.XS_JOINT_NAMES), position=[0.01 * n_js] * 9, velocity=[0.0] * 9)
                m.header.stamp = st
                pub.publish(m)
                counts[topic] = counts.get(topic, 0) + 1
                nbytes += 200
            tf_pub.publish(TFMessage())
            counts["/tf"] = counts.get("/tf", 0) + 1
        else:
            k = n_cam[cam_next]
            n_cam[cam_next] += 1
            for pub, imgs, info_pub, info in cams[cam_next][1]:
                img = imgs[k % len(imgs)]
                img.header.stamp = st
                info.header.stamp = st
                pub.publish(img)
                info_pub.publish(info)
                nbytes += len(img.data) + 400
                counts[pub.topic_name] = counts.get(pub.topic_name, 0) + 1
                counts[info_pub.topic_name] = counts.get(info_pub.topic_name, 0) + 1
    elapsed = time.monotonic() - t0
    cpu = os.times()
    print(
        json.dumps(
            {
                "published": counts,
                "published_mb": nbytes / 1e6,
                "seconds": elapsed,
                "late_events": late,
                "cpu_s": cpu.user + cpu.system,
            }
        ),
        flush=True,
    )
    time.sleep(1.0)  # let reliable retransmissions finish before the writers go away
    node.destroy_node()
    rclpy.shutdown()
    return 0


def record_once(profile_name: str, seconds: float, compression: str, root: Path, n_cameras: int = 4) -> dict:
    """One episode of the full stream, recorder in this process (its own DDS participant)."""
    import os
    import subprocess
    import sys

    import rclpy
    from clamp_core.ros import make_executor
    from rclpy.parameter import Parameter

    from clamp_bringup.recorder_node import RecorderNode

    context = rclpy.Context()
    rclpy.init(context=context)
    params = {"profile": profile_name, "out_dir": str(root), "gesture": False, "compression": compression}
    params.update({"task": "bench", "min_free_gb": 0.5})
    node = RecorderNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    executor = make_executor(node, context=context)
    executor.add_node(node)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    ready = root / f"ready_{compression}"
    pub = subprocess.Popen(
        [sys.executable, "-m", "clamp_bringup.bench", "--publisher", "--profile", profile_name]
        + ["--seconds", str(seconds), "--ready-file", str(ready), "--cameras", str(n_cameras)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),  # the same DDS settings as this process
    )
    try:
        while not ready.exists():
            if pub.poll() is not None:
                raise RuntimeError("the publisher process exited before its streams were matched")
            time.sleep(0.05)
        ok, path = node.start_episode()
        if not ok:
            raise RuntimeError(f"the recorder did not start: {path}")
        r0, w0 = os.times(), time.monotonic()
        with tqdm(total=seconds, desc=f"recording ({compression})", unit="s", leave=False) as bar:
            while pub.poll() is None:
                time.sleep(0.5)
                bar.n = min(seconds, time.monotonic() - w0)
                bar.refresh()
        out = pub.communicate()[0]
        w_pub = time.monotonic()
        time.sleep(1.0)  # the last messages in flight
        ok, msg = node.stop_episode(success=True)  # waits until the writer thread has written everything
        r1, w1 = os.times(), time.monotonic()
    finally:
        if pub.poll() is None:
            pub.kill()
        stop.set()
        spinner.join(timeout=5.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.shutdown(context=context)
    pub_report = json.loads(out.strip().splitlines()[-1])
    meta = node.last_episode["metadata"]
    bag = Path(node.last_episode["path"])
    published = pub_report["published"]
    counts = meta["message_counts"]
    # camera_infos seen before the start are written at the start too: count only streamed copies
    received = {t: min(counts.get(t, 0), n) for t, n in published.items()}
    mcap_bytes = sum(f.stat().st_size for f in bag.glob("*.mcap"))
    shutil.rmtree(bag, ignore_errors=True)  # 60 s of the full stream is ~11 GB uncompressed
    written = meta["extras"]["recorder_bytes_written"]
    cpu = (r1.user + r1.system) - (r0.user + r0.system)
    return {
        "compression": compression,
        "cameras": n_cameras,
        "offered_mb_s": round(pub_report["published_mb"] / pub_report["seconds"], 1),
        "received_mb_s": round(meta["extras"]["recorder_bytes_in"] / 1e6 / pub_report["seconds"], 1),
        "offered": sum(published.values()),
        "received": sum(received.values()),
        "dropped": sum(published.values()) - sum(received.values()),
        "dropped_per_topic": {t: published[t] - received[t] for t in published if published[t] != received[t]},
        "seconds": round(pub_report["seconds"], 2),
        "publisher_late_events": pub_report["late_events"],
        "publisher_cpu_s": round(pub_report["cpu_s"], 1),
        "recorder_cpu_s": round(cpu, 1),
        "recorder_wall_s": round(w1 - w0, 1),
        "writer_lag_after_stream_s": round(w1 - w_pub - 1.0, 1),  # time to write out the backlog
        "bag_mb": round(mcap_bytes / 1e6, 1),
        "bag_mb_per_min": round(mcap_bytes / 1e6 / pub_report["seconds"] * 60, 1),
        "recorded_mb_raw": round(written / 1e6, 1),
        "compression_ratio": round(mcap_bytes / written, 3) if written else None,  # bag bytes / message bytes
        "cpu_s_per_recorded_mb": round(cpu / (written / 1e6), 4) if written else None,
        "backlog_dropped": meta["extras"].get("recorder_backlog_dropped"),
        "max_backlog_mb": meta["extras"].get("recorder_max_backlog_mb"),
        "flags": meta["flags"],
    }


def full_stream(
    profile_name: str, seconds: float, compressions: list[str], dds: str, out_dir: str | None, cameras: list[int]
) -> dict:
    """Each (cameras, compression) recorded by a fresh process (recorder + its publisher process)."""
    import subprocess
    import sys

    root = Path(tempfile.mkdtemp(prefix="clamp_bench_stream_", dir=out_dir))
    env = dds_env(dds)
    runs = []
    try:
        for n in cameras:
            for comp in compressions:
                cmd = [sys.executable, "-m", "clamp_bringup.bench", "--record-once", comp, "--profile", profile_name]
                cmd += ["--seconds", str(seconds), "--dir", str(root), "--cameras", str(n)]
                out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)
                lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
                if out.returncode != 0 or not lines:
                    raise RuntimeError(f"recording with {comp} failed (exit {out.returncode}): {out.stdout[-2000:]}")
                runs.append(json.loads(lines[-1]))
                print(json.dumps(runs[-1]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    full = [r for r in runs if r["cameras"] == max(cameras)]
    main_run = full[0]
    result = {
        "bench": "clamp_bringup.recorder --full-stream",
        "profile": profile_name,
        "dds": dds,
        **{k: main_run[k] for k in ("offered", "received", "dropped", "seconds", "bag_mb", "compression", "cameras")},
        "offered_mb_s": main_run["offered_mb_s"],
        "bag_mb_per_min": {r["compression"]: r["bag_mb_per_min"] for r in full},
        "compression_ratio": {r["compression"]: r["compression_ratio"] for r in full},
        "cpu_s_per_recorded_mb": {r["compression"]: r["cpu_s_per_recorded_mb"] for r in full},
        "dropped_vs_offered": [
            {k: r[k] for k in ("cameras", "compression", "offered_mb_s", "offered", "dropped", "backlog_dropped")}
            for r in runs
        ],
    }
    return result


# ----------------------------------------------------------------------------------- recompress
def recompress(bags: list[str], compressions: list[str], out_dir: str | None) -> dict:
    """Existing episode bags rewritten by EpisodeWriter per compression: sizes, and a lossless check.

    Every message is read back by the reference `mcap` reader and compared byte for byte (depth too).
    """
    from clamp_core.episode_bag import EpisodeReader, EpisodeWriter
    from mcap.reader import make_reader

    root = Path(tempfile.mkdtemp(prefix="clamp_bench_recompress_", dir=out_dir))
    sizes: dict[str, int] = {"original": 0, **dict.fromkeys(compressions, 0)}
    lossless = True
    try:
        for bag in tqdm(bags, desc="recompressing", unit="bag"):
            reader = EpisodeReader(bag)
            sizes["original"] += sum(f.stat().st_size for f in Path(bag).glob("*.mcap"))
            msgs = list(reader.raw_messages())
            for comp in compressions:
                out = root / f"{Path(bag).name}_{comp}"
                with EpisodeWriter(out, {"task": "recompress"}, compression=comp, fsync=False) as w:
                    for topic, msgtype, t, data in msgs:
                        w.write_raw(topic, msgtype, t, data)
                mcap = next(out.glob("*.mcap"))
                sizes[comp] += mcap.stat().st_size
                with open(mcap, "rb") as f:
                    back = [bytes(m.data) for _, _, m in make_reader(f).iter_messages(log_time_order=True)]
                lossless &= sorted(back) == sorted(bytes(d) for *_, d in msgs)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "bench": "clamp_bringup.recorder --recompress",
        "bags": len(bags),
        "mb": {k: round(v / 1e6, 2) for k, v in sizes.items()},
        "ratio_vs_original": {c: round(sizes[c] / sizes["original"], 3) for c in compressions},
        "lossless": lossless,
    }


# ------------------------------------------------------------------------------------ executors
def _executor_sub(kind: str, topics: int, seconds: float) -> None:
    import os

    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    rclpy.init()
    node = rclpy.create_node("bench_sub")
    got = [0]

    def cb(_msg) -> None:
        got[0] += 1

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for i in range(topics):
        node.create_subscription(JointState, f"/bench/js{i}", cb, qos)
    ex = MultiThreadedExecutor(num_threads=4) if kind == "multi" else SingleThreadedExecutor()
    ex.add_node(node)
    c0, end = os.times(), time.monotonic() + seconds
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)
    c1 = os.times()
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    print(json.dumps({"received": got[0], "cpu_s": cpu}), flush=True)


def _executor_pub(rate: float, topics: int, seconds: float) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    rclpy.init()
    node = rclpy.create_node("bench_pub")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [node.create_publisher(JointState, f"/bench/js{i}", qos) for i in range(topics)]
    while any(p.get_subscription_count() == 0 for p in pubs):
        time.sleep(0.05)
    time.sleep(0.5)
    msg = JointState(name=list(rig.XS_JOINT_NAMES), position=[0.0] * 9)
    t0, k = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        k += 1
        for p in pubs:
            p.publish(msg)
        delay = t0 + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"published": k * topics}), flush=True)
    time.sleep(1.0)


def executors(rate: float = 250.0, topics: int = 4, seconds: float = 6.0) -> dict:
    import os
    import subprocess
    import sys

    out = {}
    for kind in ("single", "multi"):
        me = [sys.executable, "-m", "clamp_bringup.bench"]
        sub = subprocess.Popen(
            me + ["--executor-sub", kind, "--seconds", str(seconds + 15)],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        pub = subprocess.Popen(
            me + ["--executor-pub", str(rate), "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        p = json.loads(pub.communicate()[0].strip().splitlines()[-1])
        s = json.loads(sub.communicate()[0].strip().splitlines()[-1])
        out[kind] = {
            "offered": p["published"],
            "received": s["received"],
            "received_fraction": round(s["received"] / p["published"], 3),
            "cpu_us_per_msg": round(s["cpu_s"] / max(s["received"], 1) * 1e6, 1),
        }
        print(kind, json.dumps(out[kind]), flush=True)
    return {"bench": "rclpy executors", "offered_msgs_per_s": rate * topics, **out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_bringup.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=None, help="seconds of robot data (default 2; full stream 60)")
    ap.add_argument("--profile", default="aloha")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir, removed after)")
    ap.add_argument("--full-stream", action="store_true", help="record the full stream over DDS (see above)")
    ap.add_argument("--compression", nargs="+", default=["zstd", "none"], help="full stream: one episode per setting")
    ap.add_argument(
        "--dds", default="shm", help="full stream: 'shm' (large Fast DDS shared-memory segment, see above) or 'default'"
    )
    ap.add_argument(
        "--cameras", type=int, nargs="+", default=[4], help="full stream: cameras published (a list sweeps the load)"
    )
    ap.add_argument("--executors", action="store_true", help="rclpy executor overhead")
    ap.add_argument(
        "--recompress", nargs="+", default=None, metavar="BAG", help="rewrite episode bags: size per compression"
    )
    ap.add_argument("--record-once", default="", help=argparse.SUPPRESS)
    ap.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ready-file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--executor-sub", default="", help=argparse.SUPPRESS)
    ap.add_argument("--executor-pub", type=float, default=0.0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.publisher:
        return run_publisher(a.profile, a.seconds, a.ready_file, a.cameras[0])
    if a.executor_sub:
        _executor_sub(a.executor_sub, 4, a.seconds)
        return 0
    if a.executor_pub:
        _executor_pub(a.executor_pub, 4, a.seconds)
        return 0
    if a.executors:
        print(json.dumps(executors(seconds=a.seconds or 6.0)), flush=True)
        return 0
    if a.recompress:
        print(json.dumps(recompress(a.recompress, a.compression, a.dir)), flush=True)
        return 0
    if a.record_once:
        run = record_once(
            a.profile, a.seconds or 60.0, a.record_once, Path(a.dir or tempfile.gettempdir()), a.cameras[0]
        )
        print(json.dumps(run), flush=True)
        return 0
    if a.full_stream:
        result = full_stream(a.profile, a.seconds or 60.0, a.compression, a.dds, a.dir, a.cameras)
        print(json.dumps(result), flush=True)
        return 0
    a.seconds = a.seconds or 2.0
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
