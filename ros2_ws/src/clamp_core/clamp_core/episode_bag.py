"""Episode bags: the one on-disk schema shared by the recorder, the sim generator and training.

ROS-free (``rosbags`` + ``mcap`` + ``yaml`` only; never imports rclpy), so training/ reads bags
without a ROS install.

Layout: one rosbag2 directory per episode::

    <bag_dir>/
      <bag_dir name>.mcap   rosbag2 MCAP (`mcap` writer, ros2 profile, CDR), zstd-compressed chunks by
                            default (lossless), a chunk flushed every ``flush_interval_s``
      metadata.yaml         rosbag2 metadata version 5 (what ROS 2 Humble reads), written on close
                            (absent after a crash)
      episode.yaml          episode metadata (below); written on open (status: recording), rewritten on close

Topics (names from ``clamp_core.rig``; rates are those of the real rig / clamp_sim):

============================================================  =========================  ============
topic                                                         type                       rate
============================================================  =========================  ============
/<follower>/joint_states  (follower_left, follower_right)     sensor_msgs/JointState     50 Hz
/<leader>/joint_states    (leader_left, leader_right)         sensor_msgs/JointState     50 Hz
/<cam>/camera/color/image_rect_raw        (4 cameras)         sensor_msgs/Image rgb8     camera fps
/<cam>/camera/color/camera_info                               sensor_msgs/CameraInfo     camera fps
/<cam>/camera/aligned_depth_to_color/image_raw                sensor_msgs/Image 16UC1mm  camera fps
/<cam>/camera/aligned_depth_to_color/camera_info              sensor_msgs/CameraInfo     camera fps
/tf                                                           tf2_msgs/TFMessage         any
/tf_static                                                    tf2_msgs/TFMessage         once+
/clamp/task                                                   std_msgs/String            once+
============================================================  =========================  ============

Joint states use the xs_sdk names incl. ``gripper`` (rig.XS_JOINT_NAMES). In teleop bags the leader
joint states are the leader arms as measured; in sim bags they carry the demonstrator's commanded
joint targets (the actions). Actions for training = leader joint positions via the rig, with the
gripper mapping named in ``episode.yaml: action_source``:

- ``leader_joint_states/leader_gripper``: gripper joint angle -> rig.LEADER_GRIPPER.normalise (teleop)
- ``leader_joint_states/follower_gripper``: gripper joint angle -> rig.FOLLOWER_GRIPPER.normalise
  (sim: the commanded targets are follower gripper angles)

Bag timestamps (log time) are nanoseconds: receive time for the recorder, sim time for clamp_sim.

``episode.yaml`` keys (also stored as rosbag2 ``custom_data['clamp_episode']`` on close):
  schema_version (int), status (recording|complete|incomplete|discarded;
  incomplete = stopped by a write error such as a full disk, extras.error says which), task (str), success (bool|null),
  source (sim|teleop|replay), action_source (str, above), seed (int|null),
  rates (topic -> measured Hz; the recorder measures header stamps where messages have them, else
  bag time), expected_rates (topic -> Hz), dropped_frames (topic -> int, gaps in image stamps),
  control_hz (measured rate of the 14-D joint commands, else of the follower joint states),
  flags (list of str: ``control_below_min_hz``, ``dropped_frames``, ``interrupted``, ``stopped_disk_low``),
  started_at / ended_at (ISO 8601 UTC), duration_s, message_counts (topic -> int), extras (dict).

Crash safety: the writer closes the pending MCAP chunk and flushes (and fsyncs) at most every
``flush_interval_s`` seconds of wall time, so a crash loses at most that tail; close() fsyncs the
files and the directory. ``EpisodeReader``
reads such a bag (no metadata.yaml, no MCAP summary) up to the last complete record and warns.

rclpy-serialised messages with an empty float64[] (JointState effort=[]) carry a few trailing
bytes that rosbags' strict decoder rejects ("CDR message size mismatch"); the reader decodes the
message and ignores the trailing bytes (counted in ``EpisodeReader.lenient_decodes``).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import struct
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SCHEMA_VERSION = 1
EPISODE_YAML = "episode.yaml"
CUSTOM_DATA_KEY = "clamp_episode"
SOURCES = ("sim", "teleop", "replay")
ACTION_SOURCES = ("leader_joint_states/leader_gripper", "leader_joint_states/follower_gripper")
STATUSES = ("recording", "complete", "incomplete", "discarded")

# Interface definitions the stock rosbags typestore lacks (from interbotix_xs_msgs); tf2_msgs is
# registered from this text too when a store has no TFMessage.
EXTRA_MSGDEFS: dict[str, str] = {
    "interbotix_xs_msgs/msg/JointGroupCommand": "string name\nfloat32[] cmd\n",
    "interbotix_xs_msgs/msg/JointSingleCommand": "string name\nfloat32 cmd\n",
    "tf2_msgs/msg/TFMessage": "geometry_msgs/TransformStamped[] transforms\n",
}

_DEFAULT_METADATA: dict[str, Any] = {
    "schema_version": SCHEMA_VERSION,
    "status": "recording",
    "task": "",
    "success": None,
    "source": "teleop",
    "action_source": "leader_joint_states/leader_gripper",
    "seed": None,
    "rates": {},
    "expected_rates": {},
    "dropped_frames": {},
    "control_hz": None,
    "flags": [],
    "started_at": None,
    "ended_at": None,
    "duration_s": None,
    "message_counts": {},
    "extras": {},
}


class EpisodeBagError(RuntimeError):
    """A bag or its metadata is unusable; the message names the problem and the fix."""


def normalise_msgtype(msgtype: str) -> str:
    """'sensor_msgs/JointState' or 'sensor_msgs/msg/JointState' -> 'sensor_msgs/msg/JointState'."""
    parts = msgtype.strip("/").split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 3 and parts[1] == "msg":
        return "/".join(parts)
    raise EpisodeBagError(f"message type {msgtype!r} is not 'pkg/msg/Name' (e.g. 'sensor_msgs/msg/JointState')")


def make_typestore():
    """The ROS 2 Humble rosbags typestore plus the interbotix/tf2 types it lacks."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    missing: dict = {}
    for name, text in EXTRA_MSGDEFS.items():
        if name not in store.types:
            missing.update(get_types_from_msg(text, name))
    if missing:
        store.register(missing)
    return store


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _atomic_write_yaml(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain YAML-safe Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def validate_metadata(meta: dict) -> dict:
    """Fill defaults and check the keys whose values other code relies on."""
    unknown = set(meta) - set(_DEFAULT_METADATA)
    if unknown:
        raise EpisodeBagError(
            f"unknown episode metadata keys {sorted(unknown)}; put free-form values under 'extras' "
            f"(known keys: {sorted(_DEFAULT_METADATA)})"
        )
    out = {**_DEFAULT_METADATA, **_plain(meta)}
    for key in ("rates", "expected_rates", "dropped_frames", "message_counts", "extras"):
        out[key] = dict(out[key] or {})
    out["flags"] = list(out["flags"] or [])
    if out["source"] not in SOURCES:
        raise EpisodeBagError(f"episode source {out['source']!r} must be one of {SOURCES}")
    if out["action_source"] not in ACTION_SOURCES:
        raise EpisodeBagError(f"action_source {out['action_source']!r} must be one of {ACTION_SOURCES}")
    if out["status"] not in STATUSES:
        raise EpisodeBagError(f"status {out['status']!r} must be one of {STATUSES}")
    if out["success"] is not None and not isinstance(out["success"], bool):
        raise EpisodeBagError(f"success must be true, false or null, got {out['success']!r}")
    return out


def disk_free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


# ------------------------------------------------------------------------------------------ writer
# rosbag2 metadata.yaml as ROS 2 Humble's rosbag2 decodes it (rosbag2_storage/yaml.hpp, 0.15.x): version 5,
# `offered_qos_profiles` a YAML *string* (version >= 4; a YAML list, as version 9 writes it, is a "bad
# conversion" there), no type_description_hash / ros_distro (versions 7, 8). Newer rosbag2 reads version 5.
ROSBAG2_METADATA_VERSION = 5
COMPRESSIONS = ("zstd", "lz4", "none")
# zstd level of the MCAP chunks. The mcap writer compresses each chunk with zstd's default level 3 and
# has no level option: 160 MB/s on a 2-core machine, below the full ALOHA stream's 185 MB/s, so the
# recorder's write backlog dropped 7 % of it. Level 1: 450 MB/s at 0.57 of the size (level 3: 0.53).
ZSTD_LEVEL = 1


class _ZstdAtLevel:
    """Stands in for the `zstandard` module inside `mcap.writer` (which calls `zstandard.compress`),
    compressing at ZSTD_LEVEL; one compressor per chunk, as several writers may run on threads."""

    def __init__(self, module) -> None:
        self.module = module

    def compress(self, data: bytes) -> bytes:
        return self.module.ZstdCompressor(level=ZSTD_LEVEL).compress(data)

    def __getattr__(self, name: str):
        return getattr(self.module, name)


def _use_zstd_level() -> None:
    import mcap.writer

    if mcap.writer.zstandard is not None and not isinstance(mcap.writer.zstandard, _ZstdAtLevel):
        mcap.writer.zstandard = _ZstdAtLevel(mcap.writer.zstandard)


# QoS the recorder offers on replay, in Humble's encoding (integer policy enums, durations as sec/nsec;
# 0/0 = unspecified): reliable, keep_last; latched topics transient_local so late subscribers get them.
_RELIABLE, _KEEP_LAST, _TRANSIENT_LOCAL, _VOLATILE, _LIVELINESS_AUTO = 1, 1, 1, 2, 1
LATCHED_TOPICS = ("/tf_static", "/clamp/task")


def offered_qos_yaml(topic: str) -> str:
    """The offered_qos_profiles string of one topic (a YAML list of one QoS, as rosbag2 Humble writes it)."""
    zero = {"sec": 0, "nsec": 0}
    qos = {
        "history": _KEEP_LAST,
        "depth": 1 if topic in LATCHED_TOPICS else 10,
        "reliability": _RELIABLE,
        "durability": _TRANSIENT_LOCAL if topic in LATCHED_TOPICS else _VOLATILE,
        "deadline": zero,
        "lifespan": zero,
        "liveliness": _LIVELINESS_AUTO,
        "liveliness_lease_duration": zero,
        "avoid_ros_namespace_conventions": False,
    }
    return yaml.safe_dump([qos], sort_keys=False)


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (new or renamed files) durable."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EpisodeWriter:
    """Writes one episode bag; thread-safe; flushes at most every `flush_interval_s`.

    MCAP through the `mcap` reference writer with chunk compression (`compression`: zstd at
    ZSTD_LEVEL, lz4 or none; lossless, so depth images come back bit-exact), and a rosbag2
    metadata.yaml that ROS 2 Humble's `ros2 bag info/play` read. Use as a context manager or call
    close(). `write_raw` takes CDR bytes (e.g. rclpy.serialization.serialize_message); `write` takes
    rosbags-typestore objects.
    Write errors (disk full) propagate as OSError; `close_incomplete` then keeps what was flushed.
    """

    def __init__(
        self,
        bag_dir: str | Path,
        metadata: dict | None = None,
        *,
        flush_interval_s: float = 0.5,
        fsync: bool = True,
        msgdefs: dict[str, str] | None = None,
        min_free_bytes: int = 0,
        compression: str = "zstd",
        chunk_size: int = 4 * 1024 * 1024,
    ) -> None:
        from mcap.writer import CompressionType, Writer

        self.bag_dir = Path(bag_dir)
        if self.bag_dir.exists():
            raise EpisodeBagError(f"{self.bag_dir} exists already; bags are never overwritten (pick a new name)")
        if compression not in COMPRESSIONS:
            raise EpisodeBagError(f"compression {compression!r} must be one of {COMPRESSIONS}")
        if min_free_bytes and disk_free_bytes(self.bag_dir.parent) < min_free_bytes:
            free = disk_free_bytes(self.bag_dir.parent) / 1e9
            raise EpisodeBagError(
                f"only {free:.2f} GB free under {self.bag_dir.parent}, need {min_free_bytes / 1e9:.2f} GB; "
                "free space or record elsewhere"
            )
        self.metadata = validate_metadata(dict(metadata or {}))
        self.metadata["started_at"] = self.metadata["started_at"] or _utc_now()
        self.typestore = make_typestore()
        if msgdefs:
            from rosbags.typesys import get_types_from_msg

            extra: dict = {}
            for name, text in msgdefs.items():
                extra.update(get_types_from_msg(text, normalise_msgtype(name)))
            self.typestore.register(extra)
        self.flush_interval_s = flush_interval_s
        self.fsync = fsync
        self.compression = compression
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[int, str]] = {}  # topic -> (channel id, msgtype)
        self._schemas: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._first_ns: dict[str, int] = {}
        self._last_ns: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self._closed = False
        self.bag_dir.mkdir(parents=True)
        self.mcap_path = self.bag_dir / f"{self.bag_dir.name}.mcap"
        self._file = open(self.mcap_path, "wb")
        ctype = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
        _use_zstd_level()
        self._mcap = Writer(self._file, chunk_size=chunk_size, compression=ctype[compression])
        self._mcap.start(profile="ros2", library="clamp_core.episode_bag")
        _atomic_write_yaml(self.bag_dir / EPISODE_YAML, self.metadata)
        if self.fsync:
            fsync_dir(self.bag_dir)
            fsync_dir(self.bag_dir.parent)

    # -- writing
    def _channel(self, topic: str, msgtype: str) -> int:
        entry = self._channels.get(topic)
        msgtype = normalise_msgtype(msgtype)
        if entry is None:
            if msgtype not in self.typestore.types:
                raise EpisodeBagError(
                    f"type {msgtype} of {topic} is unknown to the typestore; pass its .msg text via "
                    "EpisodeWriter(..., msgdefs={type: text})"
                )
            schema_id = self._schemas.get(msgtype)
            if schema_id is None:
                text, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
                schema_id = self._mcap.register_schema(msgtype, "ros2msg", text.encode())
                self._schemas[msgtype] = schema_id
            cid = self._mcap.register_channel(
                topic, "cdr", schema_id, {"offered_qos_profiles": offered_qos_yaml(topic)}
            )
            entry = self._channels[topic] = (cid, msgtype)
            self._counts[topic] = 0
        elif msgtype != entry[1]:
            raise EpisodeBagError(f"topic {topic} was written as {entry[1]}, now as {msgtype}; one type per topic")
        return entry[0]

    def write_raw(self, topic: str, msgtype: str, stamp_ns: int, cdr: bytes | memoryview) -> None:
        """Write CDR-serialised bytes (what rclpy.serialization.serialize_message returns)."""
        with self._lock:
            if self._closed:
                raise EpisodeBagError(f"{self.bag_dir} is closed; start a new EpisodeWriter")
            cid = self._channel(topic, msgtype)
            stamp_ns = int(stamp_ns)
            n = self._counts[topic]
            self._mcap.add_message(cid, log_time=stamp_ns, data=bytes(cdr), publish_time=stamp_ns, sequence=n)
            self._counts[topic] = n + 1
            self._first_ns.setdefault(topic, stamp_ns)
            self._last_ns[topic] = stamp_ns
            if time.monotonic() - self._last_flush >= self.flush_interval_s:
                self._flush_locked()

    def write(self, topic: str, msg: Any, stamp_ns: int | None = None) -> None:
        """Write a rosbags-typestore message (stamp defaults to its header stamp)."""
        msgtype = msg.__msgtype__
        if stamp_ns is None:
            header = getattr(msg, "header", None)
            if header is None:
                raise EpisodeBagError(f"{msgtype} on {topic} has no header; pass stamp_ns explicitly")
            stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        self.write_raw(topic, msgtype, stamp_ns, self.typestore.serialize_cdr(msg, msgtype))

    def flush(self) -> None:
        """Close the pending MCAP chunk and push it to disk (a crash after this loses nothing written)."""
        with self._lock:
            if not self._closed:
                self._flush_locked()

    def _flush_locked(self) -> None:
        self._mcap.flush()  # finishes the chunk (compressed) + its message indexes, flushes the stream
        if self.fsync:
            os.fsync(self._file.fileno())
        self._last_flush = time.monotonic()

    # -- bookkeeping
    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def measured_rates(self) -> dict[str, float]:
        """Topic -> Hz from bag timestamps ((n-1) / (last - first)); topics with < 2 messages are left out."""
        with self._lock:
            return {
                t: (n - 1) * 1e9 / (self._last_ns[t] - self._first_ns[t])
                for t, n in self._counts.items()
                if n > 1 and self._last_ns[t] > self._first_ns[t]
            }

    def update_metadata(self, **fields: Any) -> None:
        """Merge fields into the metadata (validated); written to episode.yaml now and on close."""
        with self._lock:
            self.metadata = validate_metadata({**self.metadata, **fields})
            _atomic_write_yaml(self.bag_dir / EPISODE_YAML, self.metadata)

    def rosbag2_metadata(self) -> dict:
        """metadata.yaml content (rosbag2 version ROSBAG2_METADATA_VERSION, see above)."""
        start = min(self._first_ns.values()) if self._first_ns else 0
        end = max(self._last_ns.values()) if self._last_ns else 0
        total = sum(self._counts.values())
        name = self.mcap_path.name
        topics = [
            {
                "topic_metadata": {
                    "name": topic,
                    "type": msgtype,
                    "serialization_format": "cdr",
                    "offered_qos_profiles": offered_qos_yaml(topic),
                },
                "message_count": self._counts[topic],
            }
            for topic, (_, msgtype) in self._channels.items()
        ]
        return {
            "rosbag2_bagfile_information": {
                "version": ROSBAG2_METADATA_VERSION,
                "storage_identifier": "mcap",
                "duration": {"nanoseconds": end - start},
                "starting_time": {"nanoseconds_since_epoch": start},
                "message_count": total,
                "topics_with_message_count": topics,
                # rosbag2 file/message compression: none (MCAP compresses its chunks itself)
                "compression_format": "",
                "compression_mode": "",
                "relative_file_paths": [name],
                "files": [
                    {
                        "path": name,
                        "starting_time": {"nanoseconds_since_epoch": start},
                        "duration": {"nanoseconds": end - start},
                        "message_count": total,
                    }
                ],
                # not decoded by Humble (version 5); read by EpisodeReader.custom_data
                "custom_data": {CUSTOM_DATA_KEY: yaml.safe_dump(self.metadata, sort_keys=False)},
            }
        }

    def _final_metadata(self, fields: dict, status: str) -> dict:
        rates = {
            t: (n - 1) * 1e9 / (self._last_ns[t] - self._first_ns[t])
            for t, n in self._counts.items()
            if n > 1 and self._last_ns[t] > self._first_ns[t]
        }
        meta = {**self.metadata, **fields}
        meta["rates"] = {**rates, **(fields.get("rates") or {})}
        meta["message_counts"] = dict(self._counts)
        meta["status"] = status
        meta["ended_at"] = _utc_now()
        if self._first_ns:
            meta["duration_s"] = (max(self._last_ns.values()) - min(self._first_ns.values())) / 1e9
        return validate_metadata(meta)

    def close(self, **fields: Any) -> dict:
        """Finalise MCAP + metadata.yaml + episode.yaml, fsync them and the directory; returns the metadata."""
        with self._lock:
            if self._closed:
                return self.metadata
            self.metadata = self._final_metadata(fields, fields.get("status", "complete"))
            self._mcap.finish()
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._closed = True
            _atomic_write_yaml(self.bag_dir / "metadata.yaml", self.rosbag2_metadata())
            _atomic_write_yaml(self.bag_dir / EPISODE_YAML, self.metadata)
            if self.fsync:
                fsync_dir(self.bag_dir)
            return self.metadata

    def close_incomplete(self, error: str, **fields: Any) -> dict:
        """After a write error (disk full): stop writing, keep what was flushed, mark the episode incomplete.

        The MCAP is finished if the disk still takes its summary, else left as a crash would leave it
        (EpisodeReader reads it up to the last complete chunk). Never raises.
        """
        with self._lock:
            if self._closed:
                return self.metadata
            self._closed = True
            extras = {**self.metadata.get("extras", {}), **(fields.pop("extras", None) or {}), "error": error}
            self.metadata = self._final_metadata({**fields, "extras": extras}, "incomplete")
            finished = False
            try:
                self._mcap.finish()
                self._file.flush()
                os.fsync(self._file.fileno())
                finished = True
            except (OSError, ValueError):
                pass
            try:
                self._file.close()
            except OSError:
                pass
            try:
                if finished:
                    _atomic_write_yaml(self.bag_dir / "metadata.yaml", self.rosbag2_metadata())
                _atomic_write_yaml(self.bag_dir / EPISODE_YAML, self.metadata)
                fsync_dir(self.bag_dir)
            except OSError:
                pass  # episode.yaml still says "recording": readers treat it as a crashed episode
            return self.metadata

    def discard(self) -> None:
        """Abort and delete the bag directory."""
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._file.close()
                except OSError:
                    pass
        shutil.rmtree(self.bag_dir, ignore_errors=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._closed:
            self.close()


# ------------------------------------------------------------------------------------------ reader
@dataclass(frozen=True)
class TopicInfo:
    msgtype: str
    count: int
    rate_hz: float | None  # (n-1) / (last - first) over bag timestamps; None with < 2 messages
    first_ns: int | None
    last_ns: int | None


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    stamp_ns: int  # bag (log) time
    msg: Any  # rosbags-typestore object (numpy arrays for numeric arrays)


class _Raw:
    __slots__ = ("data", "msgtype", "stamp_ns", "topic")

    def __init__(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        self.topic, self.msgtype, self.stamp_ns, self.data = topic, msgtype, stamp_ns, data


def _types_from_schema(text: str, name: str) -> dict:
    """rosbags types from an MCAP 'ros2msg' schema (main definition + '=====' / 'MSG: pkg/Name' deps)."""
    from rosbags.typesys import get_types_from_msg

    types: dict = {}
    sections = [s for s in text.split("=" * 80)]
    types.update(get_types_from_msg(sections[0], name))
    for sec in sections[1:]:
        lines = sec.strip("\n").split("\n")
        if lines and lines[0].startswith("MSG: "):
            types.update(get_types_from_msg("\n".join(lines[1:]), normalise_msgtype(lines[0][5:].strip())))
    return types


class EpisodeReader:
    """Reads an episode bag: metadata, per-topic counts/rates, decoded messages in time order.

    A complete bag is read through its MCAP summary and chunk index (only the chunks that hold the
    requested topics; the same file opens with rosbags' rosbag2 Reader). A bag left by a crash (no
    metadata.yaml or no MCAP summary) is scanned record by record up to the last complete one, with
    a warning.
    """

    def __init__(self, bag_dir: str | Path) -> None:
        self.bag_dir = Path(bag_dir)
        if not self.bag_dir.is_dir():
            raise EpisodeBagError(f"{self.bag_dir} is not an episode bag directory (expected a dir with *.mcap)")
        mcaps = sorted(self.bag_dir.glob("*.mcap"))
        if not mcaps:
            raise EpisodeBagError(f"no .mcap file in {self.bag_dir}; is this a rosbag2 MCAP episode bag?")
        self.mcap_path = mcaps[0]
        self.typestore = make_typestore()
        self.lenient_decodes = 0
        self.truncated = False
        ep = self.bag_dir / EPISODE_YAML
        if ep.exists():
            with open(ep, encoding="utf-8") as f:
                self.metadata: dict = yaml.safe_load(f) or {}
        else:
            self.metadata = {}
            warnings.warn(f"{ep} missing: episode metadata unknown", stacklevel=2)
        self._index: dict[str, TopicInfo] | None = None
        self._complete = (self.bag_dir / "metadata.yaml").exists() and self._has_summary()
        if not self._complete:
            self.truncated = True
            n, last = self._scan_truncated_stats()
            warnings.warn(
                f"episode bag {self.bag_dir} was not closed (crash or kill): reading the {n} messages up to the "
                f"last complete record (t={last / 1e9 if last else 0:.3f}s); metadata status is "
                f"{self.metadata.get('status', '?')!r}",
                stacklevel=2,
            )

    def _has_summary(self) -> bool:
        # A closed MCAP ends with the footer record + magic.
        size = self.mcap_path.stat().st_size
        if size < 8 + 37:
            return False
        with open(self.mcap_path, "rb") as f:
            f.seek(size - 8)
            return f.read(8) == b"\x89MCAP0\r\n"

    # -- raw iteration
    def _iter_raw_complete(self, topics: set[str] | None) -> Iterator[_Raw]:
        """Through the MCAP summary/index (the `mcap` reference reader): only chunks holding `topics`."""
        from mcap.reader import make_reader

        with open(self.mcap_path, "rb") as f:
            reader = make_reader(f)
            for schema, channel, message in reader.iter_messages(
                topics=None if topics is None else sorted(topics), log_time_order=True
            ):
                if schema.name not in self.typestore.types and schema.encoding == "ros2msg":
                    self.typestore.register(_types_from_schema(schema.data.decode(), schema.name))
                yield _Raw(channel.topic, schema.name, message.log_time, message.data)

    def _iter_raw_truncated(self, topics: set[str] | None) -> Iterator[_Raw]:
        """Records in file order; each flushed chunk sorted by time (chunks are flushed in time order)."""
        from mcap.records import Channel, Chunk, Message, Schema
        from mcap.stream_reader import StreamReader

        schemas: dict[int, Schema] = {}
        channels: dict[int, Channel] = {}
        pending: list[_Raw] = []
        with open(self.mcap_path, "rb") as f:
            reader = StreamReader(f, emit_chunks=False)
            it = reader.records
            while True:
                try:
                    rec = next(it)
                except StopIteration:
                    break
                except Exception:
                    break
                if isinstance(rec, Schema):
                    schemas[rec.id] = rec
                    if rec.name not in self.typestore.types and rec.encoding == "ros2msg":
                        self.typestore.register(_types_from_schema(rec.data.decode(), rec.name))
                elif isinstance(rec, Channel):
                    channels[rec.id] = rec
                elif isinstance(rec, Message):
                    ch = channels.get(rec.channel_id)
                    if ch is None or (topics is not None and ch.topic not in topics):
                        continue
                    pending.append(_Raw(ch.topic, schemas[ch.schema_id].name, rec.log_time, rec.data))
                elif isinstance(rec, Chunk):  # not emitted with emit_chunks=False; kept for clarity
                    continue
                else:  # message index etc. follow each chunk: the chunk's messages are complete
                    if pending:
                        pending.sort(key=lambda r: r.stamp_ns)
                        yield from pending
                        pending = []
        pending.sort(key=lambda r: r.stamp_ns)
        yield from pending

    def _scan_truncated_stats(self) -> tuple[int, int | None]:
        n, last = 0, None
        for raw in self._iter_raw_truncated(None):
            n += 1
            last = raw.stamp_ns if last is None else max(last, raw.stamp_ns)
        return n, last

    def raw_messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, stamp_ns, cdr bytes) in time order; what replay publishes unchanged."""
        sel = set(topics) if topics is not None else None
        source = self._iter_raw_complete(sel) if self._complete else self._iter_raw_truncated(sel)
        for r in source:
            yield r.topic, r.msgtype, r.stamp_ns, r.data

    # -- decoding
    def decode(self, data: bytes, msgtype: str) -> Any:
        """CDR -> rosbags object; tolerates the trailing bytes rclpy leaves after empty float64[].

        rosbags' deserialize_cdr parses the fields and then rejects any message with more than 3
        bytes left over; here the same parser runs and the leftover is only counted.
        """
        if len(data) < 4 or bytes(data[:2]) not in (b"\x00\x00", b"\x00\x01"):
            raise EpisodeBagError(f"a {msgtype} in {self.bag_dir} is not CDR (bad encapsulation header)")
        msgdef = self.typestore.get_msgdef(msgtype)
        func = msgdef.deserialize_cdr_le if data[1] else msgdef.deserialize_cdr_be
        try:
            msg, pos = func(memoryview(data)[4:], 0, msgdef.cls, self.typestore)
        except (struct.error, UnicodeDecodeError, ValueError, IndexError) as exc:
            raise EpisodeBagError(f"could not decode a {msgtype} in {self.bag_dir}: {exc}") from exc
        if pos + 4 + 3 < len(data):
            self.lenient_decodes += 1
        return msg

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Decoded messages of `topics` (all when None) in time order."""
        for topic, msgtype, stamp, data in self.raw_messages(topics):
            yield BagMessage(topic, msgtype, stamp, self.decode(data, msgtype))

    # -- summary
    def topics(self) -> dict[str, TopicInfo]:
        """Topic -> TopicInfo(msgtype, count, rate_hz, first_ns, last_ns) over the readable data."""
        if self._index is None and self._complete:
            self._index = self._topics_from_index()
        if self._index is None:
            stats: dict[str, list] = {}
            for topic, msgtype, stamp, _ in self.raw_messages():
                s = stats.setdefault(topic, [msgtype, 0, stamp, stamp])
                s[1] += 1
                s[2] = min(s[2], stamp)
                s[3] = max(s[3], stamp)
            self._index = {
                t: TopicInfo(mt, n, (n - 1) * 1e9 / (b - a) if n > 1 and b > a else None, a, b)
                for t, (mt, n, a, b) in stats.items()
            }
        return dict(self._index)

    def _topics_from_index(self) -> dict[str, TopicInfo] | None:
        """Counts from the MCAP statistics, first/last times from the message indexes: no data read."""
        from mcap.reader import make_reader

        with open(self.mcap_path, "rb") as f:
            summary = make_reader(f).get_summary()
            if summary is None or summary.statistics is None:
                return None
            first: dict[int, int] = {}
            last: dict[int, int] = {}
            for chunk in summary.chunk_indexes:
                for cid, offset in chunk.message_index_offsets.items():
                    f.seek(offset)
                    head = f.read(9)  # opcode, record length
                    if len(head) < 9 or head[0] != 0x07:
                        return None
                    body = f.read(struct.unpack_from("<Q", head, 1)[0])
                    n = struct.unpack_from("<I", body, 2)[0] // 16
                    if n == 0:
                        continue
                    times = np.frombuffer(body, dtype="<u8", count=2 * n, offset=6)[::2]
                    first[cid] = min(first.get(cid, 2**63), int(times.min()))
                    last[cid] = max(last.get(cid, 0), int(times.max()))
        out: dict[str, TopicInfo] = {}
        for cid, channel in summary.channels.items():
            n = summary.statistics.channel_message_counts.get(cid, 0)
            if n == 0:
                continue
            a, b = first.get(cid), last.get(cid)
            rate = (n - 1) * 1e9 / (b - a) if n > 1 and a is not None and b > a else None
            out[channel.topic] = TopicInfo(summary.schemas[channel.schema_id].name, n, rate, a, b)
        return out

    def custom_data(self) -> dict[str, str]:
        """rosbag2 custom_data from metadata.yaml ({} for a crashed bag)."""
        path = self.bag_dir / "metadata.yaml"
        if not path.exists():
            return {}
        with open(path, encoding="utf-8") as f:
            info = (yaml.safe_load(f) or {}).get("rosbag2_bagfile_information", {})
        return dict(info.get("custom_data") or {})

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc) -> None:
        return None
