"""`python -m clamp_training import-bags BAG... --task TEXT --out DATASET`: plain rosbag2 bags -> dataset.

For demonstrations recorded without the clamp recorder, with plain `ros2 bag record` of the robot's
topics (MCAP or sqlite3, any rosbag2 metadata version rosbags reads). Each bag is one
demonstration, or one long bag is cut into several with `--split START:END` (seconds from the bag's
first message, repeatable). The task text and the outcome come from the command line. Every
demonstration is first written as an episode bag (clamp_core.episode_bag; the CDR bytes are copied
unchanged, the /tf_static and camera_info seen before a segment are repeated at its start so each
episode stands alone, /clamp/task is the command line's), then `clamp_training convert` turns
those into the dataset, so the views are rendered by the same code as for recorder bags.

A bag that lacks a topic the dataset needs is refused before anything is written, naming the topic
and what publishes it on the robot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .convert import ConvertOptions, convert


class ImportBagError(RuntimeError):
    """A bag that cannot be imported; the message names the bag, the problem and the fix."""


def publisher_of(topic: str) -> str:
    """Who publishes `topic` on the ALOHA (what to start before `ros2 bag record`)."""
    from clamp_core import rig

    for arm in (*rig.FOLLOWERS, *rig.LEADERS):
        if topic == rig.joint_states_topic(arm):
            role = "follower" if arm in rig.FOLLOWERS else "leader"
            return f"xs_sdk of the {role} arm {arm} (`ros2 launch clamp_bringup record.launch.py` starts all four)"
    if topic == "/tf_static":
        return "the static transforms of the camera mounts (clamp_bringup's launch files publish them from the profile)"
    if topic == "/tf":
        return "robot_state_publisher of the follower arms (clamp_bringup's launch files)"
    for cam in rig.CAMERAS:
        if topic.startswith(f"/{cam}/"):
            extra = " with align_depth.enable:=true" if "aligned_depth" in topic else ""
            return f"realsense2_camera for {cam}{extra} (clamp_bringup's launch files, camera_name={cam})"
    return "the robot's bring-up (clamp_bringup)"


def required_topics(views: bool, rgb: bool) -> list[str]:
    """Topics a demonstration needs: four arms' joint states; cameras + static TF for views / colour."""
    from clamp_core import rig

    topics = [rig.joint_states_topic(a) for a in (*rig.FOLLOWERS, *rig.LEADERS)]
    if views or rgb:
        for cam in rig.CAMERAS:
            topics.append(rig.depth_topic(cam) if views else rig.color_topic(cam))
            if views:
                topics += [rig.camera_info_topic(rig.depth_topic(cam)), rig.color_topic(cam)]
    if views:
        topics.append("/tf_static")
    return topics


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float | None  # None: to the end of the bag


def parse_split(text: str) -> Segment:
    """'START:END' seconds from the bag's first message ('START:' = to the end)."""
    try:
        a, b = text.split(":")
        seg = Segment(float(a), float(b) if b.strip() else None)
    except ValueError:
        raise ImportBagError(f"--split {text!r} is not START:END in seconds (e.g. 12.5:40)") from None
    if seg.start_s < 0 or (seg.end_s is not None and seg.end_s <= seg.start_s):
        raise ImportBagError(f"--split {text!r}: need 0 <= START < END")
    return seg


def parse_success(text: str) -> bool | None:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "success"):
        return True
    if value in ("false", "no", "0", "failure"):
        return False
    if value in ("unknown", "none", "null", ""):
        return None
    raise ImportBagError(f"--success {text!r} must be true, false or unknown")


def _open(bag: Path):
    from rosbags.rosbag2 import Reader

    if not (bag / "metadata.yaml").exists():
        raise ImportBagError(
            f"{bag} has no metadata.yaml (not a rosbag2 bag, or `ros2 bag record` did not exit cleanly); "
            f"recreate it with `ros2 bag reindex {bag}`"
        )
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as exc:
        raise ImportBagError(f"{bag}: rosbags cannot open it ({exc})") from exc
    return reader


def check_bag(bag: Path, views: bool, rgb: bool) -> None:
    """Refuse a bag that lacks a needed topic, naming the topic and its publisher."""
    reader = _open(bag)
    try:
        present = {c.topic for c in reader.connections if c.msgcount > 0}
    finally:
        reader.close()
    missing = [t for t in required_topics(views, rgb) if t not in present]
    if missing:
        lines = "\n  ".join(f"{t}: published by {publisher_of(t)}" for t in missing)
        hint = "" if not (views or rgb) else " (or import without cameras: --no-views --rgb-scale 0)"
        raise ImportBagError(
            f"bag {bag} lacks {len(missing)} needed topic(s); record them{hint}:\n  {lines}\n"
            f"Topics in the bag: {sorted(present)}"
        )


def bag_to_episodes(
    bag: Path,
    out_dir: Path,
    task: str,
    success: list[bool | None],
    segments: list[Segment],
) -> list[Path]:
    """Write one episode bag per segment of `bag` into out_dir; returns their directories."""
    from clamp_core.episode_bag import EpisodeWriter, normalise_msgtype

    reader = _open(bag)
    try:
        conns = [c for c in reader.connections if c.msgcount > 0]
        t_first = reader.start_time
        storage = "mcap" if any(bag.glob("*.mcap")) else "sqlite3"
        bounds = [
            (t_first + int(s.start_s * 1e9), None if s.end_s is None else t_first + int(s.end_s * 1e9))
            for s in segments
        ]
        writers: list[EpisodeWriter | None] = [None] * len(segments)
        paths = []
        for i in range(len(segments)):
            name = bag.name if len(segments) == 1 else f"{bag.name}_{i:02d}"
            paths.append(out_dir / name)
            if paths[-1].exists():
                raise ImportBagError(f"{paths[-1]} exists already; remove it or pick another --episodes-dir")
        latest: dict[str, tuple[str, int, bytes]] = {}  # latched / camera_info: repeated at a segment's start
        statics: list[tuple[str, str, int, bytes]] = []
        try:
            # a task published while recording is replaced by the command line's (one task per episode)
            for conn, t, data in reader.messages(connections=[c for c in conns if c.topic != "/clamp/task"]):
                msgtype = normalise_msgtype(conn.msgtype)
                for i, (a, b) in enumerate(bounds):
                    if t < a or (b is not None and t > b):
                        continue
                    w = writers[i]
                    if w is None:
                        meta = {
                            "task": task,
                            "success": success[i],
                            "source": "teleop",
                            "action_source": "leader_joint_states/leader_gripper",
                            "extras": {
                                "imported_from": str(bag),
                                "segment_s": [segments[i].start_s, segments[i].end_s],
                                "storage": storage,
                            },
                        }
                        w = writers[i] = EpisodeWriter(paths[i], meta, fsync=False, flush_interval_s=5.0)
                        String = w.typestore.types["std_msgs/msg/String"]  # the command line's task, latched
                        w.write("/clamp/task", String(data=task), stamp_ns=t)
                        for topic, mt, _, raw in statics:
                            w.write_raw(topic, mt, t, raw)
                        for topic, (mt, _, raw) in latest.items():
                            w.write_raw(topic, mt, t, raw)
                    w.write_raw(conn.topic, msgtype, t, data)
                if conn.topic == "/tf_static":
                    statics.append((conn.topic, msgtype, t, bytes(data)))
                elif conn.topic.endswith("camera_info"):
                    latest[conn.topic] = (msgtype, t, bytes(data))
        except BaseException:
            for w in writers:
                if w is not None:
                    w.discard()
            raise
        for i, w in enumerate(writers):
            if w is None:
                raise ImportBagError(f"--split {segments[i].start_s}:{segments[i].end_s} holds no message of {bag}")
            w.close(success=success[i])
        return paths
    finally:
        reader.close()


def import_bags(
    bags: list[str | Path],
    out: str | Path,
    task: str,
    success: list[bool | None],
    splits: list[Segment] | None = None,
    episodes_dir: str | Path | None = None,
    opts: ConvertOptions | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Plain bags -> episode bags (in episodes_dir) -> dataset at `out`; returns dataset.json's document."""
    from tqdm import tqdm

    opts = opts or ConvertOptions()
    bags = [Path(b) for b in bags]
    if not task.strip():
        raise ImportBagError("--task is empty; give the task text the policy is conditioned on")
    if splits and len(bags) != 1:
        raise ImportBagError(f"--split cuts one long bag; got {len(bags)} bags (import them without --split)")
    segments = list(splits or [Segment(0.0, None)])
    n_eps = len(segments) if splits else len(bags)
    if len(success) == 1:
        success = success * n_eps
    if len(success) != n_eps:
        raise ImportBagError(f"--success has {len(success)} values for {n_eps} demonstration(s); give 1 or {n_eps}")
    for bag in bags:  # refuse before writing anything
        check_bag(bag, opts.views, opts.rgb_scale > 0)
    ep_dir = Path(episodes_dir) if episodes_dir else Path(str(out).rstrip("/") + "_episodes")
    ep_dir.mkdir(parents=True, exist_ok=True)
    episode_bags: list[Path] = []
    for k, bag in enumerate(tqdm(bags, desc="splitting bags into episodes", unit="bag", disable=not progress)):
        ok = success if splits else [success[k]]
        episode_bags += bag_to_episodes(bag, ep_dir, task, ok, segments)
    return convert([str(p) for p in episode_bags], out, opts, workers=workers, progress=progress)
