"""ROS 2 Humble's rosbag2 metadata.yaml decoder rules, in Python, to test the bags we write against them.

Transcribed from the rules of rosbag2_storage/include/rosbag2_storage/yaml.hpp and qos.cpp on the humble
branch (rosbag2 0.15.x): yaml-cpp's `as<T>()` conversions, which throw "bad conversion" when a node is
not of the type asked for. Humble writes metadata version 5 and decodes by version:
  - v>=3 compression_format / compression_mode (strings), v>=4 offered_qos_profiles (a YAML *string*),
    v>=5 files (path, starting_time, duration, message_count);
  - custom_data (v6), type_description_hash (v7), ros_distro (v8) do not exist on Humble; version 9
    writes offered_qos_profiles as a YAML list, which Humble's `as<std::string>()` rejects (the
    "bad conversion" users see when playing a Jazzy bag on Humble).
QoS inside offered_qos_profiles: integer policy enums, durations as {sec, nsec}.
"""

from __future__ import annotations

import yaml

HUMBLE_VERSION = 5


class BadConversion(ValueError):
    """What yaml-cpp throws: `yaml-cpp: error at line ... bad conversion`."""


def _node(parent: dict, key: str, where: str):
    if not isinstance(parent, dict) or key not in parent:
        raise BadConversion(f"{where}.{key}: missing")
    return parent[key]


def _as_string(v, where: str) -> str:
    if isinstance(v, (dict, list)) or v is None:  # yaml-cpp converts any scalar, never a map/sequence/null
        raise BadConversion(f"{where}: expected a scalar string, got {type(v).__name__}")
    return str(v)


def _as_uint(v, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise BadConversion(f"{where}: expected an unsigned integer, got {v!r}")
    return v


def _as_int(v, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadConversion(f"{where}: expected an integer, got {v!r}")
    return v


def _as_bool(v, where: str) -> bool:
    if not isinstance(v, bool):
        raise BadConversion(f"{where}: expected a bool, got {v!r}")
    return v


def _duration(node, where: str) -> None:
    _as_int(_node(node, "sec", where), f"{where}.sec")
    _as_uint(_node(node, "nsec", where), f"{where}.nsec")


def decode_qos_profiles(text: str, where: str) -> list[dict]:
    """offered_qos_profiles string -> list of QoS (Humble's rosbag2_transport/qos.cpp rules)."""
    if text == "":
        return []
    profiles = yaml.safe_load(text)
    if not isinstance(profiles, list):
        raise BadConversion(f"{where}: offered_qos_profiles must be a YAML sequence in a string")
    for i, q in enumerate(profiles):
        w = f"{where}[{i}]"
        for key in ("history", "depth", "reliability", "durability", "liveliness"):
            _as_int(_node(q, key, w), f"{w}.{key}")
        for key in ("deadline", "lifespan", "liveliness_lease_duration"):
            _duration(_node(q, key, w), f"{w}.{key}")
        _as_bool(_node(q, "avoid_ros_namespace_conventions", w), f"{w}.avoid_ros_namespace_conventions")
    return profiles


def decode_metadata(text: str) -> dict:
    """Decode metadata.yaml as rosbag2 on Humble does; raise BadConversion where it would fail."""
    root = _node(yaml.safe_load(text), "rosbag2_bagfile_information", "metadata.yaml")
    w = "rosbag2_bagfile_information"
    version = _as_int(_node(root, "version", w), f"{w}.version")
    if version > HUMBLE_VERSION:
        raise BadConversion(f"{w}.version {version}: newer than Humble's {HUMBLE_VERSION}")
    out = {"version": version, "storage_identifier": _as_string(_node(root, "storage_identifier", w), "storage")}
    out["duration"] = _as_uint(_node(_node(root, "duration", w), "nanoseconds", w), f"{w}.duration")
    start = _node(root, "starting_time", w)
    out["starting_time"] = _as_uint(_node(start, "nanoseconds_since_epoch", w), f"{w}.starting_time")
    out["message_count"] = _as_uint(_node(root, "message_count", w), f"{w}.message_count")
    topics = _node(root, "topics_with_message_count", w)
    if not isinstance(topics, list):
        raise BadConversion(f"{w}.topics_with_message_count: expected a sequence")
    out["topics"] = {}
    for i, t in enumerate(topics):
        tw = f"{w}.topics_with_message_count[{i}]"
        meta = _node(t, "topic_metadata", tw)
        name = _as_string(_node(meta, "name", tw), f"{tw}.name")
        entry = {
            "type": _as_string(_node(meta, "type", tw), f"{tw}.type"),
            "serialization_format": _as_string(_node(meta, "serialization_format", tw), f"{tw}.format"),
            "message_count": _as_uint(_node(t, "message_count", tw), f"{tw}.message_count"),
            "offered_qos_profiles": [],
        }
        if version >= 4:
            qos = _as_string(_node(meta, "offered_qos_profiles", tw), f"{tw}.offered_qos_profiles")
            entry["offered_qos_profiles"] = decode_qos_profiles(qos, f"{tw}.offered_qos_profiles")
        out["topics"][name] = entry
    paths = _node(root, "relative_file_paths", w)
    if not isinstance(paths, list):
        raise BadConversion(f"{w}.relative_file_paths: expected a sequence")
    out["relative_file_paths"] = [_as_string(p, f"{w}.relative_file_paths") for p in paths]
    if version >= 3:
        out["compression_format"] = _as_string(_node(root, "compression_format", w), "compression_format")
        out["compression_mode"] = _as_string(_node(root, "compression_mode", w), "compression_mode")
    if version >= 5:
        files = _node(root, "files", w)
        if not isinstance(files, list):
            raise BadConversion(f"{w}.files: expected a sequence")
        out["files"] = []
        for i, f in enumerate(files):
            fw = f"{w}.files[{i}]"
            out["files"].append(
                {
                    "path": _as_string(_node(f, "path", fw), f"{fw}.path"),
                    "starting_time": _as_uint(
                        _node(_node(f, "starting_time", fw), "nanoseconds_since_epoch", fw), f"{fw}.starting_time"
                    ),
                    "duration": _as_uint(_node(_node(f, "duration", fw), "nanoseconds", fw), f"{fw}.duration"),
                    "message_count": _as_uint(_node(f, "message_count", fw), f"{fw}.message_count"),
                }
            )
    return out
