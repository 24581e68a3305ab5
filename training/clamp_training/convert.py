"""`python -m clamp_training convert BAG_DIR... --out DATASET`: episode bags -> zarr dataset.

Each episode bag (clamp_core.episode_bag schema, from the recorder or clamp_sim) becomes
`DATASET/episodes/<bag>.zarr` (layout in clamp_training.dataset):

- steps on a rig.CONTROL_HZ grid from the first time every needed stream has data to the last
  joint state; state = latest follower joint states at each step, action = latest leader (commanded)
  joint states, both through rig.state_from_joint_states (gripper per episode.yaml action_source);
- camera frame sets (the four cameras' colour + aligned depth + camera_info within
  --sync-tolerance of each other) rendered into the CLAMP views by clamp_perception's pipeline, the
  code the robot runs, with TF replayed from the bag into the same TransformBuffer the node uses;
  each step indexes the latest frame set not after it;
- optionally the colour images (downscaled by --rgb-scale), task text, object positions.

Episodes convert in parallel (--workers) and each is written to a temporary name and renamed when
complete, so an interrupted conversion resumes where it stopped (--overwrite redoes everything).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .dataset import DATASET_JSON, EPISODES_DIR, FORMAT, FORMAT_VERSION, open_episode, write_stats


class ConvertError(RuntimeError):
    """A bag that cannot be converted; the message names the bag, the problem and the fix."""


@dataclass
class ConvertOptions:
    control_hz: float = 50.0
    views: bool = True
    rgb_scale: float = 0.25  # 0 disables storing colour images
    sync_tolerance_s: float | None = None  # depth stamps of one observation (None: the perception config's)
    cameras: list = field(default_factory=list)  # required cameras (empty: the perception config's / rig.CAMERAS)
    perception_config: str | None = None  # YAML for clamp_perception's pipeline (its default if None)


# ------------------------------------------------------------------------------------ bag discovery
def find_bags(paths: list[str | os.PathLike]) -> list[Path]:
    """Episode bag dirs (dirs holding a *.mcap) given as bags or as folders of bags."""
    bags: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConvertError(f"{p} does not exist; pass episode bag directories (or folders of them)")
        if p.is_dir() and any(p.glob("*.mcap")):
            bags.append(p)
        elif p.is_dir():
            found = sorted({m.parent for m in p.rglob("*.mcap")})
            if not found:
                raise ConvertError(f"{p} holds no episode bags (no *.mcap below it)")
            bags.extend(found)
        else:
            raise ConvertError(f"{p} is a file; pass the episode bag directory that contains it")
    return bags


def is_bag_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (any(p.glob("*.mcap")) or any(p.rglob("*.mcap")))


# ------------------------------------------------------------------------------------ one episode
def _stamp_ns(msg, log_ns: int) -> int:
    header = getattr(msg, "header", None)
    if header is not None:
        ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        if ns > 0:
            return ns
    return log_ns


def _joint_dict(msg) -> dict[str, float]:
    return {n: float(p) for n, p in zip(msg.name, msg.position, strict=False)}


def _gripper_for(action_source: str):
    from clamp_core import rig

    if action_source.endswith("follower_gripper"):
        return rig.FOLLOWER_GRIPPER
    return rig.LEADER_GRIPPER


# Image / CameraInfo decoding for rosbags messages without importing ROS message packages (the
# training image has none); same semantics as clamp_core.msg_conversions (row step, endianness),
# which the node uses - the parity test over DDS holds the two to bit-identical views.
_ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def _image_array(msg) -> np.ndarray:
    """sensor_msgs/Image (rosbags) -> (H, W) or (H, W, C) array in native byte order."""
    if msg.encoding not in _ENCODINGS:
        raise _SkipFrame(f"bad_input: image encoding {msg.encoding!r} is not one of {sorted(_ENCODINGS)}")
    dtype, ch = np.dtype(_ENCODINGS[msg.encoding][0]), _ENCODINGS[msg.encoding][1]
    h, w = int(msg.height), int(msg.width)
    row = w * ch * dtype.itemsize
    step = int(msg.step) or row
    raw = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if step < row or raw.size < step * h:
        raise _SkipFrame(f"bad_input: {msg.encoding} image {w}x{h} with step {step} has {raw.size} bytes")
    rows = np.ascontiguousarray(raw[: step * h].reshape(h, step)[:, :row])
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    out = rows.view(wire).astype(dtype, copy=False)
    return out.reshape(h, w) if ch == 1 else out.reshape(h, w, ch)


def _intrinsics(info) -> tuple[np.ndarray, tuple[int, int], np.ndarray | None]:
    """CameraInfo (rosbags) -> (K, (H, W), D or None when no distortion model), as the node reads it."""
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0 or info.height <= 0 or info.width <= 0:
        raise _SkipFrame(f"bad_input: camera_info of {info.header.frame_id!r} has no calibration (K, size)")
    D = np.asarray(info.d, dtype=np.float64) if info.distortion_model else None
    return K, (int(info.height), int(info.width)), D


def _downscale_rgb(img: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return img
    step = max(1, int(round(1.0 / scale)))
    h, w = (img.shape[0] // step) * step, (img.shape[1] // step) * step
    # block mean: cheap and alias-free for integer factors
    x = img[:h, :w].reshape(h // step, step, w // step, step, 3).mean(axis=(1, 3))
    return np.round(x).astype(np.uint8)


class _CameraStreams:
    """Camera messages grouped into observations exactly as the perception node groups them:
    clamp_perception.sync.FrameSynchronizer over the aligned depth images (required / optional
    cameras, stamp tolerance), the latest camera_info per camera, and for the stored colour images
    the colour frame nearest each depth frame."""

    def __init__(self, required: list[str], optional: list[str], tolerance_ns: int, need_color: bool) -> None:
        from collections import deque

        from clamp_core import rig
        from clamp_perception.sync import FrameSynchronizer

        self.sync = FrameSynchronizer(required, optional, tolerance_ns)
        self.cameras = required + optional
        self.tol = tolerance_ns
        self.need_color = need_color
        self.role: dict[str, tuple[str, str]] = {}
        self.required_topics: list[str] = []
        for cam in self.cameras:
            depth = rig.depth_topic(cam)
            self.role[depth] = (cam, "depth")
            self.role[rig.camera_info_topic(depth)] = (cam, "depth_info")
            topics = [depth, rig.camera_info_topic(depth)]
            if need_color:
                self.role[rig.color_topic(cam)] = (cam, "color")
                topics.append(rig.color_topic(cam))
            if cam in required:
                self.required_topics += topics
        self.infos: dict[str, object] = {}
        self.colors = {cam: deque(maxlen=16) for cam in self.cameras}
        self.ready: list = []  # FrameGroups popped from the synchroniser, not yet processed

    def add(self, topic: str, stamp: int, msg) -> None:
        cam, kind = self.role[topic]
        if kind == "depth":
            self.sync.add(cam, stamp, msg)
            group = self.sync.pop()
            if group is not None:
                self.ready.append(group)
        elif kind == "depth_info":
            self.infos[cam] = msg
        else:
            self.colors[cam].append((stamp, msg))

    def complete(self, group) -> bool:
        """Everything the group needs has been read (camera_info, colour at or after its stamp)."""
        if any(cam not in self.infos for cam in group.frames):
            return False
        if self.need_color:
            for cam, t in group.stamps.items():
                if not self.colors[cam] or self.colors[cam][-1][0] < t - self.tol:
                    return False
        return True

    def color_for(self, cam: str, stamp: int):
        best = min(self.colors[cam], key=lambda sm: abs(sm[0] - stamp), default=None)
        return best[1] if best is not None and abs(best[0] - stamp) <= self.tol else None


def convert_episode(bag: str | os.PathLike, out_path: str | os.PathLike, opts: ConvertOptions) -> dict:
    """Convert one bag into the episode group at `out_path` (written to out_path + '.tmp', renamed)."""
    import zarr
    from clamp_core import rig
    from clamp_core.episode_bag import EpisodeBagError, EpisodeReader

    bag = Path(bag)
    out_path = Path(out_path)
    t_start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader = EpisodeReader(bag)
            topics = reader.topics()
    except EpisodeBagError as exc:
        raise ConvertError(f"bag {bag}: {exc}") from exc
    bag_warnings = [str(w.message) for w in caught]
    meta = reader.metadata or {}
    need_cams = opts.views or opts.rgb_scale > 0
    perception = _Perception(opts.perception_config) if opts.views else None
    required_cams, optional_cams, tol_s = list(opts.cameras or rig.CAMERAS), [], opts.sync_tolerance_s
    if perception is not None and not opts.cameras:  # the node's own camera grouping
        required_cams, optional_cams, node_tol = perception.sync_settings()
        tol_s = tol_s if tol_s is not None else node_tol
    tol_s = 0.02 if tol_s is None else tol_s
    streams = _CameraStreams(required_cams, optional_cams, int(tol_s * 1e9), opts.rgb_scale > 0) if need_cams else None
    cameras = streams.cameras if streams else []

    joint_topics = {rig.joint_states_topic(a): a for a in (*rig.FOLLOWERS, *rig.LEADERS)}
    required = list(joint_topics)
    if need_cams:
        required += streams.required_topics
    if opts.views and "/tf" not in topics:
        required.append("/tf_static")  # camera extrinsics (and wrist poses) come from TF
    missing = [t for t in required if t not in topics]
    if missing:
        fix = "record them"
        if all(t not in joint_topics for t in missing):
            fix += ", or convert without cameras (--no-views --rgb-scale 0)"
        raise ConvertError(f"bag {bag} lacks topic(s) {missing}; {fix}. Topics present: {sorted(topics)}")

    joints: dict[str, list[tuple[int, dict]]] = {a: [] for a in joint_topics.values()}
    task_msgs: list[str] = []
    tmp = out_path.with_name(out_path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    group = zarr.open_group(str(tmp), mode="w")
    views_out = _Appender(group, "views", "float16")
    rgb_out = {cam: _Appender(group, f"rgb/{cam}", "uint8") for cam in cameras} if opts.rgb_scale > 0 else {}
    frame_times: list[int] = []
    tf_latest = -1
    skipped: dict[str, int] = {}

    def flush_pending(final: bool) -> None:
        """Process popped groups once TF has reached their stamp (interpolation, not extrapolation)."""
        while streams.ready:
            g = streams.ready[0]
            ok = streams.complete(g) and (perception is None or g.stamp_ns <= tf_latest)
            if not (ok or final):
                return
            streams.ready.pop(0)
            stamp = g.stamp_ns
            if perception is not None:
                try:
                    views_out.add(perception.render(g, streams.infos).astype(np.float16))
                except _SkipFrame as exc:
                    reason = str(exc).split(":")[0]
                    skipped[reason] = skipped.get(reason, 0) + 1
                    continue
            for cam, out in rgb_out.items():
                msg = streams.color_for(cam, g.stamps.get(cam, stamp))
                if msg is None:  # optional camera absent, or no colour near the depth frame
                    skipped["rgb_missing"] = skipped.get("rgb_missing", 0) + 1
                    out.add(None)
                else:
                    try:
                        out.add(_downscale_rgb(_image_array(msg)[..., :3], opts.rgb_scale))
                    except _SkipFrame:
                        skipped["rgb_bad"] = skipped.get("rgb_bad", 0) + 1
                        out.add(None)
            frame_times.append(stamp)

    wanted = set(required) | {"/tf", "/tf_static", rig.TASK_TOPIC}
    try:
        for m in reader.messages([t for t in wanted if t in topics]):
            if m.topic in joint_topics:
                joints[joint_topics[m.topic]].append((_stamp_ns(m.msg, m.stamp_ns), _joint_dict(m.msg)))
            elif m.topic in ("/tf", "/tf_static"):
                if perception is not None:
                    perception.add_tf(m.msg, static=m.topic == "/tf_static")
                    if m.topic == "/tf":
                        tf_latest = max(tf_latest, max((_stamp_ns(t, 0) for t in m.msg.transforms), default=-1))
            elif m.topic == rig.TASK_TOPIC:
                task_msgs.append(str(m.msg.data))
            elif streams is not None and m.topic in streams.role:
                streams.add(m.topic, _stamp_ns(m.msg, m.stamp_ns), m.msg)
                flush_pending(final=False)
        if streams is not None:
            flush_pending(final=True)
        for out in (views_out, *rgb_out.values()):
            out.flush(final=True)
    except EpisodeBagError as exc:
        raise ConvertError(f"bag {bag}: {exc}") from exc

    # ---- the control-step grid
    for arm, msgs in joints.items():
        if len(msgs) < 2:
            raise ConvertError(
                f"bag {bag}: {rig.joint_states_topic(arm)} has {len(msgs)} message(s); the episode is empty or "
                "truncated too early to use"
            )
    stamps = {a: np.array([s for s, _ in msgs], dtype=np.int64) for a, msgs in joints.items()}
    t0 = max(int(s[0]) for s in stamps.values())
    t_end = min(int(s[-1]) for s in stamps.values())
    if need_cams:
        if not frame_times:
            raise ConvertError(
                f"bag {bag}: no complete camera frame set (depth of {required_cams} within {tol_s * 1e3:.0f} ms, "
                f"with camera_info and TF); skipped: {skipped or 'none'}. Check the camera topics and TF, or "
                "raise --sync-tolerance"
            )
        t0 = max(t0, frame_times[0])
    period = int(round(1e9 / opts.control_hz))
    if t_end < t0:
        raise ConvertError(f"bag {bag}: joint states and cameras never overlap in time; nothing to convert")
    grid = np.arange(t0, t_end + 1, period, dtype=np.int64)

    def sample(arm: str) -> list[dict]:
        idx = np.searchsorted(stamps[arm], grid, side="right") - 1
        return [joints[arm][i][1] for i in idx]

    gripper = _gripper_for(str(meta.get("action_source", "leader_joint_states/leader_gripper")))
    fl = {a: sample(a) for a in rig.FOLLOWERS}
    ld = {a: sample(a) for a in rig.LEADERS}
    try:
        state = np.stack([rig.state_from_joint_states({a: fl[a][k] for a in rig.FOLLOWERS}) for k in range(len(grid))])
        action = np.stack(
            [
                rig.state_from_joint_states({a: ld[a][k] for a in rig.LEADERS}, arms=rig.LEADERS, gripper=gripper)
                for k in range(len(grid))
            ]
        )
    except KeyError as exc:
        raise ConvertError(f"bag {bag}: {exc.args[0]}") from exc
    _create_array(group, "state", data=state.astype(np.float32), chunks=(4096, state.shape[1]))
    _create_array(group, "action", data=action.astype(np.float32), chunks=(4096, action.shape[1]))
    _create_array(group, "step_time", data=(grid - t0) / 1e9, chunks=(4096,))
    _create_array(group, "step_stamp", data=grid, chunks=(4096,))  # ns, the bag's clock
    if frame_times:
        ft = np.asarray(frame_times, dtype=np.int64)
        _create_array(group, "frame_time", data=(ft - t0) / 1e9, chunks=(4096,))
        _create_array(group, "frame_stamp", data=ft, chunks=(4096,))
        view_index = np.clip(np.searchsorted(ft, grid, side="right") - 1, 0, len(ft) - 1).astype(np.int32)
        _create_array(group, "view_index", data=view_index, chunks=(4096,))
    else:
        _create_array(group, "view_index", data=np.zeros(len(grid), np.int32), chunks=(4096,))

    # the text on /clamp/task is what the inference node will hear at run time; episode.yaml's task
    # (an id in sim bags) is kept as task_id
    task = str(task_msgs[-1] if task_msgs else meta.get("task") or "")
    extras = dict(meta.get("extras") or {})
    objects = extras.get("object_positions") or extras.get("objects") or extras.get("objects_start") or {}
    info = {
        "name": out_path.name[: -len(".zarr")] if out_path.name.endswith(".zarr") else out_path.name,
        "bag": str(bag.resolve()),
        "task": task,
        "task_id": meta.get("task"),
        "success": meta.get("success"),
        "source": meta.get("source"),
        "action_source": meta.get("action_source"),
        "seed": meta.get("seed"),
        "objects": objects if isinstance(objects, dict) else {},
        "extras": extras,
        "steps": len(grid),
        "frames": len(frame_times),
        "duration_s": float((grid[-1] - grid[0]) / 1e9),
        "cameras": cameras,
        "frame_sets_skipped": skipped,
        "bag_warnings": bag_warnings,
        "truncated": bool(reader.truncated),
        "convert_s": time.perf_counter() - t_start,
    }
    group.attrs.update(json.loads(json.dumps(info, default=str)))
    if out_path.exists():
        shutil.rmtree(out_path)
    os.replace(tmp, out_path)
    return info


def _create_array(group, name: str, **kw):
    """zarr 3 (Python >= 3.11) has Group.create_array; zarr 2 (the robot's Python 3.10) create_dataset."""
    if hasattr(group, "create_array"):
        return group.create_array(name, **kw)
    return group.create_dataset(name, **kw)


class _Appender:
    """Appends frames to a zarr array in blocks: one resize and write per block instead of per frame
    (per-frame appends cost as much as rendering). `None` frames (a missing camera image) become
    zeros once the frame shape is known."""

    def __init__(self, group, name: str, dtype: str, block: int = 32) -> None:
        self.group, self.name, self.dtype, self.block = group, name, dtype, block
        self.arr = None
        self.buf: list = []

    def add(self, frame: np.ndarray | None) -> None:
        self.buf.append(frame)
        if len(self.buf) >= self.block:
            self.flush()

    def flush(self, final: bool = False) -> None:
        known = next((f for f in self.buf if f is not None), None)
        if known is None and self.arr is None:
            return  # shape still unknown (or never known: the array is left out)
        if self.arr is None:
            self.arr = _create_array(
                self.group, self.name, shape=(0, *known.shape), chunks=(1, *known.shape), dtype=self.dtype
            )
        if self.buf:
            shape = self.arr.shape[1:]
            block = np.stack([np.zeros(shape, self.dtype) if f is None else f for f in self.buf])
            self.arr.append(block.astype(self.dtype, copy=False))
            self.buf = []


class _SkipFrame(Exception):
    """A frame set that cannot be rendered (e.g. TF missing at its stamp); counted, not fatal."""


class _Perception:
    """clamp_perception's pipeline fed from bag messages as the perception node feeds it from topics:
    same config (incl. its sync and tf sections), same CameraImage construction, same TF lookups."""

    def __init__(self, config_path: str | None) -> None:
        try:
            from clamp_perception.pipeline import PerceptionPipeline
            from clamp_perception.transforms import TransformBuffer
        except ImportError as exc:
            raise ConvertError(f"rendering views needs clamp_perception.pipeline ({exc}); or use --no-views") from exc
        self.pipeline = PerceptionPipeline.from_config(config_path)
        tf_cfg = self.pipeline.config.get("tf", {}) or {}
        # the node keeps `cache_s` of TF; a bag is read in order, so a long cache changes nothing but
        # never drops a transform a delayed frame group still needs
        self.tf = TransformBuffer(1e6, float(tf_cfg.get("extrapolation_tolerance_ms", 50.0)) / 1e3)

    def sync_settings(self) -> tuple[list[str], list[str], float]:
        from clamp_core import rig

        sync = self.pipeline.config.get("sync", {}) or {}
        return (
            list(sync.get("required_cameras", rig.CAMERAS)),
            list(sync.get("optional_cameras", [])),
            float(sync.get("tolerance_ms", 20.0)) / 1e3,
        )

    def add_tf(self, msg, static: bool) -> None:
        self.tf.add_message(msg, static=static)

    def render(self, group, infos: dict) -> np.ndarray:
        """FrameGroup -> views (V, 4, S, S) float32 (channels depth, x, y, z; empty pixels 0)."""
        from clamp_core import rig
        from clamp_perception.pipeline import CameraImage
        from clamp_perception.transforms import TransformError

        images = {}
        try:
            for cam, msg in group.frames.items():
                K, size, D = _intrinsics(infos[cam])
                images[cam] = CameraImage(
                    _image_array(msg),
                    K,
                    size,
                    msg.header.frame_id or rig.color_optical_frame(cam),
                    D,
                    group.stamps[cam],
                )
            frames, wrist = self.pipeline.frames_from_buffer(images, self.tf, group.stamp_ns)
            views, _ = self.pipeline.process(frames, wrist)  # (V, S, S, 4)
        except TransformError as exc:
            raise _SkipFrame(f"missing_tf: {exc}") from exc
        except ValueError as exc:
            raise _SkipFrame(f"bad_input: {exc}") from exc
        return np.ascontiguousarray(np.transpose(views, (0, 3, 1, 2)), dtype=np.float32)


# ------------------------------------------------------------------------------------ the dataset
def _convert_job(args: tuple[str, str, dict]) -> dict:
    bag, out, opts = args
    return convert_episode(bag, out, ConvertOptions(**opts))


def episode_names(bags: list[Path]) -> list[str]:
    names, seen = [], {}
    for b in bags:
        n = b.name
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n}_{seen[n] - 1}")
    return names


def _perception_config(opts: ConvertOptions) -> dict:
    from clamp_perception.pipeline import load_config

    return load_config(opts.perception_config)


def _atomic_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def convert(
    bag_paths: list[str | os.PathLike],
    out: str | os.PathLike,
    opts: ConvertOptions | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Convert bags into the dataset at `out` (resuming); returns the dataset.json document."""
    from clamp_core import rig
    from tqdm import tqdm

    opts = opts or ConvertOptions()
    out = Path(out)
    bags = find_bags(bag_paths)
    if not bags:
        raise ConvertError(f"no episode bags in {[str(p) for p in bag_paths]}")
    names = episode_names(bags)
    ep_dir = out / EPISODES_DIR
    if overwrite and out.exists():
        shutil.rmtree(out)
    ep_dir.mkdir(parents=True, exist_ok=True)
    opts_file = out / "convert_options.json"
    opts_doc = asdict(opts)
    if opts_file.exists() and json.loads(opts_file.read_text()) != opts_doc:
        raise ConvertError(f"{out} was converted with other options ({opts_file}); use --overwrite or another --out")
    _atomic_json(opts_file, opts_doc)
    todo = [(str(b), str(ep_dir / f"{n}.zarr"), opts_doc) for b, n in zip(bags, names, strict=True)]
    todo = [t for t in todo if not Path(t[1]).is_dir()]  # finished episodes are kept (resume)
    errors: list[str] = []
    bar = tqdm(total=len(todo), desc="converting episodes", unit="ep", disable=not progress)
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_convert_job, t): t[0] for t in todo}
            for fut in as_completed(futures):
                try:
                    fut.result()
                except ConvertError as exc:
                    errors.append(str(exc))
                bar.update()
    else:
        for t in todo:
            try:
                _convert_job(t)
            except ConvertError as exc:
                errors.append(str(exc))
            bar.update()
    bar.close()
    if errors:
        raise ConvertError(f"{len(errors)} of {len(bags)} bag(s) failed (others are kept):\n  " + "\n  ".join(errors))
    episodes = []
    for n in names:
        attrs = dict(open_episode(ep_dir / f"{n}.zarr").attrs)
        episodes.append({k: attrs.get(k) for k in ("name", "bag", "task", "success", "source", "steps", "frames")})
    write_stats(out, names)
    first = open_episode(ep_dir / f"{names[0]}.zarr")
    view_shape = list(first["views"].shape[1:]) if "views" in set(first.array_keys()) else None
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "control_hz": opts.control_hz,
        "chunk_length": rig.CHUNK_LENGTH,
        "action_names": list(rig.ACTION_NAMES),
        "cameras": first.attrs.get("cameras"),
        "view_names": list(rig.VIEW_NAMES),
        "view_channels": list(rig.VIEW_CHANNELS),
        "view_shape": view_shape,
        "rgb_scale": opts.rgb_scale,
        "perception_config": opts.perception_config,
        # the full perception configuration the views were rendered with (views, crop, depth range)
        "perception": _perception_config(opts) if opts.views else None,
        "tasks": sorted({e["task"] for e in episodes}),
        "num_steps": int(sum(e["steps"] for e in episodes)),
        "episodes": episodes,
    }
    _atomic_json(out / DATASET_JSON, doc)
    return doc
