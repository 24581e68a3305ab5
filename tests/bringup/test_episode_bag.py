"""Episode bag schema: write with rosbags, read back (rosbags, mcap_ros2, EpisodeReader), crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from clamp_core import rig
from clamp_core.episode_bag import ZSTD_LEVEL, EpisodeBagError, EpisodeReader, EpisodeWriter
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState


def _joint_state(i: int) -> JointState:
    m = JointState()
    m.header.stamp.sec = 100 + i // 50
    m.header.stamp.nanosec = (i % 50) * 20_000_000
    m.name = list(rig.XS_JOINT_NAMES)
    m.position = [0.01 * i + k for k in range(9)]
    m.velocity = [0.0] * 9
    m.effort = []  # what xs_sdk/rclpy publishers often send; rosbags alone rejects these
    return m


def _image(i: int) -> Image:
    m = Image()
    m.height, m.width, m.encoding, m.step = 4, 6, "16UC1", 12
    m.data = (np.arange(24, dtype=np.uint16) + i).tobytes()
    return m


def test_round_trip_real_rclpy_messages(tmp_path):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    bag = tmp_path / "ep"
    t0 = 1_700_000_000_000_000_000
    with EpisodeWriter(bag, {"task": "transfer cube", "source": "teleop", "seed": 7, "extras": {"op": "x"}}) as w:
        for i in range(100):
            w.write_raw(
                rig.joint_states_topic("follower_left"),
                "sensor_msgs/msg/JointState",
                t0 + i * 20_000_000,
                serialize_message(_joint_state(i)),
            )
            if i % 5 == 0:
                w.write_raw(
                    rig.depth_topic("cam_high"),
                    "sensor_msgs/Image",
                    t0 + i * 20_000_000 + 1,
                    serialize_message(_image(i)),
                )
        tf = TFMessage(transforms=[TransformStamped()])
        tf.transforms[0].child_frame_id = rig.color_optical_frame("cam_high")
        w.write_raw("/tf_static", "tf2_msgs/msg/TFMessage", t0, serialize_message(tf))
        w.write("/clamp/task", w.typestore.types["std_msgs/msg/String"](data="transfer cube"), stamp_ns=t0)
        w.close(success=True)

    r = EpisodeReader(bag)
    assert not r.truncated
    assert r.metadata["status"] == "complete" and r.metadata["success"] is True
    assert r.metadata["seed"] == 7 and r.metadata["extras"] == {"op": "x"}
    info = r.topics()
    js = info[rig.joint_states_topic("follower_left")]
    assert js.count == 100 and js.rate_hz == pytest.approx(50.0)
    assert info[rig.depth_topic("cam_high")].rate_hz == pytest.approx(10.0)
    assert r.metadata["rates"][rig.joint_states_topic("follower_left")] == pytest.approx(50.0)
    assert "clamp_episode" in r.custom_data()
    scanned = r._index = None  # the summary path must agree with a full scan of the data
    r._complete = False
    scanned = r.topics()
    r._complete, r._index = True, None
    assert r.topics() == scanned

    msgs = list(r.messages([rig.joint_states_topic("follower_left")]))
    assert [m.stamp_ns for m in msgs] == sorted(m.stamp_ns for m in msgs)
    np.testing.assert_allclose(msgs[42].msg.position, _joint_state(42).position)
    assert list(msgs[42].msg.name) == list(rig.XS_JOINT_NAMES) and len(msgs[42].msg.effort) == 0
    assert r.lenient_decodes == 100  # every one of them needed the tolerant path
    img = next(r.messages([rig.depth_topic("cam_high")])).msg
    np.testing.assert_array_equal(np.frombuffer(img.data.tobytes(), np.uint16), np.arange(24))
    tf_msg = next(r.messages(["/tf_static"])).msg
    assert tf_msg.transforms[0].child_frame_id == "cam_high_color_optical_frame"

    # The stock readers agree: rosbags opens it as a rosbag2 bag, mcap_ros2 decodes the same values.
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.rosbag2 import Reader

    with Reader(bag) as rb:
        assert rb.message_count == 100 + 20 + 2
    with open(next(bag.glob("*.mcap")), "rb") as f:
        decoded = [
            m
            for _, _, _, m in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(
                topics=[rig.joint_states_topic("follower_left")]
            )
        ]
    np.testing.assert_allclose(decoded[42].position, msgs[42].msg.position)


def test_bad_input_is_named(tmp_path):
    with pytest.raises(EpisodeBagError, match="extras"):
        EpisodeWriter(tmp_path / "a", {"operator": "me"})
    with pytest.raises(EpisodeBagError, match="source"):
        EpisodeWriter(tmp_path / "b", {"source": "robot"})
    with pytest.raises(EpisodeBagError, match="GB free"):
        EpisodeWriter(tmp_path / "c", min_free_bytes=10**18)
    w = EpisodeWriter(tmp_path / "d")
    with pytest.raises(EpisodeBagError, match="msgdefs"):
        w.write_raw("/x", "my_msgs/msg/Thing", 1, b"\x00\x01\x00\x00")
    w.close()
    with pytest.raises(EpisodeBagError, match="exists already"):
        EpisodeWriter(tmp_path / "d")
    with pytest.raises(EpisodeBagError, match="not an episode bag"):
        EpisodeReader(tmp_path / "nope")


def test_discard_removes_the_bag(tmp_path):
    w = EpisodeWriter(tmp_path / "e")
    w.write_raw("/a", "sensor_msgs/msg/JointState", 1, serialize_message(_joint_state(0)))
    w.discard()
    assert not (tmp_path / "e").exists()


def test_killed_writer_leaves_everything_flushed_readable(tmp_path):
    bag = tmp_path / "crash"
    script = textwrap.dedent(f"""
        import sys, time
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import JointState
        from clamp_core.episode_bag import EpisodeWriter
        w = EpisodeWriter({str(bag)!r}, {{"task": "crash"}}, flush_interval_s=1e9)
        def js(i):
            m = JointState(); m.name = ["waist"]; m.position = [float(i)]; m.effort = []
            return serialize_message(m)
        for i in range(300):
            w.write_raw("/follower_left/joint_states", "sensor_msgs/msg/JointState", 10**9 + i * 20_000_000, js(i))
            if i == 199:
                w.flush()
        print("FLUSHED 200", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert proc.stdout.readline().strip() == "FLUSHED 200"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (bag / "metadata.yaml").exists()
    with pytest.warns(UserWarning, match="not closed"):
        r = EpisodeReader(bag)
    assert r.truncated and r.metadata["status"] == "recording" and r.metadata["task"] == "crash"
    positions = [m.msg.position[0] for m in r.messages()]
    assert positions == [float(i) for i in range(200)]  # all flushed data, in order, nothing invented

    # A record cut in the middle (crash during a write) is ignored, not fatal.
    mcap = next(bag.glob("*.mcap"))
    with open(mcap, "ab") as f:
        f.write(b"\x06" + (5000).to_bytes(8, "little") + b"\x00" * 100)
    with pytest.warns(UserWarning, match="not closed"):
        assert EpisodeReader(bag).topics()["/follower_left/joint_states"].count == 200


def _depth_frame(i: int, h: int = 120, w: int = 160) -> Image:
    """A depth image like a real one: a table plane plus an object, millimetres, sensor noise."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:h, 0:w]
    depth = 600 + yy * 2 + rng.integers(-2, 3, (h, w))
    depth[40:80, 60:100] -= 80
    m = Image(height=h, width=w, encoding="16UC1", step=w * 2)
    m.data = depth.astype(np.uint16).tobytes()
    return m


def test_metadata_is_what_humble_rosbag2_decodes(tmp_path):
    """metadata.yaml passes Humble's decoder rules; the rosbags v9 format those episodes had does not."""
    import yaml
    from helpers.rosbag2_humble import BadConversion, decode_metadata

    bag = tmp_path / "ep"
    with EpisodeWriter(bag, {"task": "t"}) as w:
        for i in range(10):
            w.write_raw(
                "/follower_left/joint_states",
                "sensor_msgs/msg/JointState",
                10**9 + i,
                serialize_message(_joint_state(i)),
            )
        w.write("/tf_static", w.typestore.types["tf2_msgs/msg/TFMessage"](transforms=[]), stamp_ns=10**9)
    meta = decode_metadata((bag / "metadata.yaml").read_text())
    assert meta["version"] == 5 and meta["storage_identifier"] == "mcap" and meta["message_count"] == 11
    assert meta["relative_file_paths"] == [f"{bag.name}.mcap"] and (bag / meta["files"][0]["path"]).exists()
    assert meta["files"][0]["message_count"] == 11 and meta["duration"] == 9
    js = meta["topics"]["/follower_left/joint_states"]
    assert js["type"] == "sensor_msgs/msg/JointState" and js["message_count"] == 10
    assert js["offered_qos_profiles"][0]["durability"] == 2  # volatile
    assert meta["topics"]["/tf_static"]["offered_qos_profiles"][0]["durability"] == 1  # transient_local: latched
    # the MCAP channels carry the same QoS string (what rosbag2_storage_mcap reads on play)
    from mcap.reader import make_reader

    with open(bag / f"{bag.name}.mcap", "rb") as f:
        channels = make_reader(f).get_summary().channels.values()
    assert {c.topic: c.metadata["offered_qos_profiles"] for c in channels}["/tf_static"] == yaml.safe_load(
        (bag / "metadata.yaml").read_text()
    )["rosbag2_bagfile_information"]["topics_with_message_count"][1]["topic_metadata"]["offered_qos_profiles"]

    # The checker is not a rubber stamp: the rosbags v9 metadata (list-valued QoS) fails it as Humble does.
    from rosbags.rosbag2 import StoragePlugin, Writer

    old = tmp_path / "v9"
    with Writer(old, version=9, storage_plugin=StoragePlugin.MCAP) as ow:
        conn = ow.add_connection("/x", "std_msgs/msg/String", typestore=w.typestore)
        ow.write(conn, 1, w.typestore.serialize_cdr(w.typestore.types["std_msgs/msg/String"](data="a"), conn.msgtype))
    with pytest.raises(BadConversion):
        decode_metadata((old / "metadata.yaml").read_text())
    text = (bag / "metadata.yaml").read_text().replace("version: 5", "version: 4")
    decode_metadata(text)  # an older version's rules read it too


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_compressed_chunks_are_lossless_and_smaller(tmp_path, compression):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    frames = [serialize_message(_depth_frame(i)) for i in range(30)]
    sizes = {}
    for comp in ("none", compression):
        bag = tmp_path / comp
        with EpisodeWriter(bag, compression=comp, flush_interval_s=0.2) as w:
            for i, data in enumerate(frames):
                w.write_raw(rig.depth_topic("cam_high"), "sensor_msgs/msg/Image", 10**9 + i * 33_000_000, data)
        sizes[comp] = (bag / f"{comp}.mcap").stat().st_size
        # read back by the independent reference reader (mcap + mcap_ros2): bit-exact depth
        with open(bag / f"{comp}.mcap", "rb") as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            got = [bytes(m.data) for _, _, _, m in reader.iter_decoded_messages()]
            chunks = reader.get_summary().chunk_indexes
        assert got == [bytes(_depth_frame(i).data) for i in range(30)]
        assert {c.compression for c in chunks} == {"" if comp == "none" else comp}
        if comp == "zstd":  # at ZSTD_LEVEL (mcap's own call would use level 3, too slow for the full stream)
            import zstandard
            from mcap.records import Chunk
            from mcap.stream_reader import StreamReader

            with open(bag / f"{comp}.mcap", "rb") as f:
                chunk = next(r for r in StreamReader(f, emit_chunks=True).records if isinstance(r, Chunk))
            raw = zstandard.ZstdDecompressor().decompress(chunk.data)
            assert chunk.data == zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
            assert chunk.data != zstandard.ZstdCompressor(level=3).compress(raw)
        r = EpisodeReader(bag)  # and by ours
        assert r.topics()[rig.depth_topic("cam_high")].count == 30
    assert sizes[compression] < 0.6 * sizes["none"], sizes  # noisy 12-bit-ish depth: well under the raw size
    with pytest.raises(EpisodeBagError, match="compression"):
        EpisodeWriter(tmp_path / "bad", compression="gzip")


def test_write_error_closes_the_episode_incomplete_and_keeps_the_flushed_data(tmp_path):
    """A real OS write error (file size limit: EFBIG, as ENOSPC would be) mid-episode."""
    bag = tmp_path / "full"
    script = textwrap.dedent(f"""
        import resource, signal, json
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import JointState
        from clamp_core.episode_bag import EpisodeWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG as an OSError, like a full disk
        w = EpisodeWriter({str(bag)!r}, {{"task": "full"}}, flush_interval_s=1e9, compression="none")
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        flushed = 0
        try:
            for i in range(100_000):
                m = JointState(); m.name = ["waist"]; m.position = [float(i)] * 200
                topic, mt = "/follower_left/joint_states", "sensor_msgs/msg/JointState"
                w.write_raw(topic, mt, 10**9 + i, serialize_message(m))
                if i % 10 == 9:
                    w.flush(); flushed = i + 1
        except OSError as exc:
            meta = w.close_incomplete(str(exc))
            print(json.dumps({{"flushed": flushed, "status": meta["status"], "error": meta["extras"]["error"]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["status"] == "incomplete" and "File too large" in res["error"] and res["flushed"] > 10
    with pytest.warns(UserWarning, match="not closed"):
        r = EpisodeReader(bag)
    assert r.metadata["status"] == "incomplete" and r.metadata["extras"]["error"] == res["error"]
    positions = [m.msg.position[0] for m in r.messages()]
    assert positions[: res["flushed"]] == [float(i) for i in range(res["flushed"])]  # all that was flushed


def test_recorder_episode_on_a_full_disk_logs_one_error_and_closes_incomplete(tmp_path):
    """clamp_bringup.recorder.Episode (the recorder's writer thread) hitting a real write error."""
    bag = tmp_path / "full"
    script = textwrap.dedent(f"""
        import json, resource, signal, time
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import JointState
        from clamp_bringup.recorder import Episode
        from clamp_core.episode_bag import EpisodeWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        errors = []
        w = EpisodeWriter({str(bag)!r}, {{"task": "full"}}, flush_interval_s=0.05, compression="none")
        ep = Episode(w, {{}}, on_error=errors.append, joint_state_topics=["/follower_left/joint_states"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        for i in range(3000):
            m = JointState(); m.name = ["waist"]; m.position = [float(i)] * 100
            m.header.stamp.sec = 1 + i // 50; m.header.stamp.nanosec = (i % 50) * 20_000_000
            topic, mt = "/follower_left/joint_states", "sensor_msgs/msg/JointState"
            ep.add(topic, mt, serialize_message(m), 10**9 + i * 20_000_000)
            time.sleep(0.0005)
        meta = ep.close(success=True)
        print(json.dumps({{"errors": errors, "status": meta["status"], "flags": meta["flags"]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(res["errors"]) == 1 and "File too large" in res["errors"][0]  # one error, not thousands
    assert res["status"] == "incomplete" and "write_error" in res["flags"]
    with pytest.warns(UserWarning, match="not closed"):
        r = EpisodeReader(bag)
    assert r.metadata["status"] == "incomplete"
    positions = [m.msg.position[0] for m in r.messages()]
    assert len(positions) > 20 and positions == [float(i) for i in range(len(positions))]  # flushed prefix, in order
