"""Synthetic episode bags with known geometry, for tests and benchmarks when no simulator bags exist.

`write_synthetic_episode` writes a bag with the real episode schema (clamp_core.episode_bag):
follower and leader joint states at 50 Hz (smooth sinusoids; the leader leads the follower, as in
teleoperation), four cameras (rgb8 + aligned 16UC1 depth in mm + camera_info) at `camera_hz` that see
an analytically ray-cast scene (table plane z = 0 and one box), /tf_static camera mounts, /tf gripper
poses (the wrist cameras ride on them), and the task on /clamp/task. Everything is deterministic
given the seed, so tests can check converted values against the generating functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HOME = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])  # ALOHA's sleep-ish pose, rad


def follower_joints(t: np.ndarray | float, seed: int = 0) -> np.ndarray:
    """(..., 2, 7) xs_sdk arm joints + gripper joint (rad) of both followers at time t (s)."""
    rng = np.random.default_rng(seed)
    amp = rng.uniform(0.1, 0.3, size=(2, 6))
    freq = rng.uniform(0.3, 0.8, size=(2, 6))
    phase = rng.uniform(0, 2 * np.pi, size=(2, 6))
    t = np.asarray(t, dtype=np.float64)[..., None, None]
    arm = HOME + amp * np.sin(2 * np.pi * freq * t + phase)
    grip = 0.4 + 0.5 * np.sin(2 * np.pi * 0.5 * t[..., 0] + np.array([0.0, 1.0]))  # follower gripper angle
    return np.concatenate([arm, grip[..., None]], axis=-1)


def leader_joints(t: np.ndarray | float, seed: int = 0, lead_s: float = 0.1) -> np.ndarray:
    """Leader arm joints (rad) = where the follower will be `lead_s` later; gripper as a leader angle."""
    from clamp_core import rig

    f = follower_joints(np.asarray(t) + lead_s, seed)
    norm = rig.FOLLOWER_GRIPPER.normalise(f[..., 6])
    f[..., 6] = rig.LEADER_GRIPPER.closed + norm * (rig.LEADER_GRIPPER.open - rig.LEADER_GRIPPER.closed)
    return f


def gripper_pose(arm_index: int, t: float, seed: int = 0) -> np.ndarray:
    """T_world_gripper of follower `arm_index` at t: a point above the table that sways, x forward."""
    rng = np.random.default_rng(seed + 100)
    base = np.array([-0.2 if arm_index == 0 else 0.2, 0.5, 0.25])
    sway = 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + np.array([0.0, 1.0, 2.0]))
    pose = np.eye(4)
    # gripper x axis pointing down at the table (so a wrist camera looking along +x sees it)
    pose[:3, :3] = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=float)  # columns: gripper x, y, z
    pose[:3, 3] = base + sway
    return pose


def _look_at(eye, target) -> np.ndarray:
    from clamp_core.geometry import look_at

    return look_at(np.asarray(eye, float), np.asarray(target, float))


FIXED_CAMERAS = {  # T_world_optical for the two fixed cameras
    "cam_high": ((0.0, 0.1, 0.75), (0.0, 0.5, 0.0)),
    "cam_low": ((0.0, -0.15, 0.3), (0.0, 0.5, 0.05)),
}
# wrist camera optical frame in the gripper frame: a bit behind/above, looking along the gripper x
WRIST_MOUNT = np.array([[0.0, 0.0, 1.0, -0.05], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.04], [0, 0, 0, 1.0]])


def box_of(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 7)
    centre = np.array([rng.uniform(-0.1, 0.1), rng.uniform(0.45, 0.55), 0.025])
    return centre - 0.025, centre + 0.025


def raycast_depth(T_world_cam: np.ndarray, K: np.ndarray, h: int, w: int, box) -> np.ndarray:
    """Depth (m along the optical axis) of the table plane z=0 and an axis-aligned box; 0 = no hit."""
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    R, o = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = rays_cam @ R.T  # world direction per unit optical depth
    with np.errstate(divide="ignore", invalid="ignore"):
        t_plane = np.where(d[..., 2] < -1e-9, -o[2] / d[..., 2], np.inf)
        lo, hi = box
        t1, t2 = (lo - o) / d, (hi - o) / d
        tmin = np.nanmax(np.minimum(t1, t2), axis=-1)
        tmax = np.nanmin(np.maximum(t1, t2), axis=-1)
    t_box = np.where((tmax >= tmin) & (tmin > 0), tmin, np.inf)
    depth = np.minimum(t_plane, t_box)
    depth[~np.isfinite(depth) | (depth > 2.0)] = 0.0
    return depth


def write_synthetic_episode(
    bag_dir: str | Path,
    duration_s: float = 2.0,
    seed: int = 0,
    task: str = "transfer the cube",
    camera_hz: float = 10.0,
    image_size: tuple[int, int] = (48, 64),
    joint_hz: float = 50.0,
    cameras: bool = True,
    drop_topics: tuple[str, ...] = (),
    source: str = "teleop",
    flush_interval_s: float = 0.5,
) -> Path:
    """Write one synthetic episode bag; returns its directory. `drop_topics` leaves topics out."""
    from clamp_core import rig
    from clamp_core.episode_bag import EpisodeWriter, make_typestore

    store = make_typestore()
    T = store.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]

    def header(ns: int, frame: str = ""):
        return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=frame)

    def tf_msg(parent: str, child: str, M: np.ndarray, ns: int):
        from clamp_core.geometry import matrix_to_quat

        q = matrix_to_quat(M[:3, :3])
        V3, Q, TS, Tr = (
            T["geometry_msgs/msg/Vector3"],
            T["geometry_msgs/msg/Quaternion"],
            T["geometry_msgs/msg/TransformStamped"],
            T["geometry_msgs/msg/Transform"],
        )
        return TS(
            header=header(ns, parent),
            child_frame_id=child,
            transform=Tr(translation=V3(*M[:3, 3]), rotation=Q(x=q[0], y=q[1], z=q[2], w=q[3])),
        )

    h, w = image_size
    f = 0.8 * w
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    box = box_of(seed)
    t0 = 1_000_000_000  # 1 s: nonzero stamps like sim time
    meta = {
        "task": task,
        "source": source,
        "action_source": "leader_joint_states/leader_gripper",
        "seed": seed,
        "success": True,
        "extras": {"object_positions": {"box": ((box[0] + box[1]) / 2).tolist()}, "synthetic": True},
    }
    out = Path(bag_dir)
    with EpisodeWriter(out, meta, fsync=False, flush_interval_s=flush_interval_s) as writer:

        def put(topic: str, msg, ns: int) -> None:
            if topic not in drop_topics:
                writer.write(topic, msg, ns)

        put(rig.TASK_TOPIC, T["std_msgs/msg/String"](data=task), t0)
        if cameras:
            static = [
                tf_msg(rig.WORLD_FRAME, rig.color_optical_frame(c), _look_at(*FIXED_CAMERAS[c]), t0)
                for c in ("cam_high", "cam_low")
            ]
            static += [
                tf_msg(rig.gripper_frame(arm), rig.color_optical_frame(cam), WRIST_MOUNT, t0)
                for arm, cam in zip(rig.FOLLOWERS, ("cam_left_wrist", "cam_right_wrist"), strict=True)
            ]
            put("/tf_static", T["tf2_msgs/msg/TFMessage"](transforms=static), t0)
        n_joint = int(duration_s * joint_hz) + 1
        n_cam = int(duration_s * camera_hz) + 1 if cameras else 0
        events = [(int(t0 + i * 1e9 / joint_hz), "joint", i) for i in range(n_joint)]
        events += [(int(t0 + i * 1e9 / camera_hz), "cam", i) for i in range(n_cam)]
        events.sort(key=lambda e: (e[0], e[1] != "joint"))
        JS = T["sensor_msgs/msg/JointState"]
        for ns, kind, _ in events:
            ts = (ns - t0) / 1e9
            if kind == "joint":
                fol, lead = follower_joints(ts, seed), leader_joints(ts, seed)
                for arms, q in ((rig.FOLLOWERS, fol), (rig.LEADERS, lead)):
                    for i, arm in enumerate(arms):
                        pos = np.concatenate([q[i], [q[i, 6] / 20, -q[i, 6] / 20]])  # fingers follow the gripper
                        msg = JS(
                            header=header(ns),
                            name=list(rig.XS_JOINT_NAMES),
                            position=pos,
                            velocity=np.zeros(9),
                            effort=np.zeros(9),
                        )
                        put(rig.joint_states_topic(arm), msg, ns)
                if cameras:
                    grippers = [
                        tf_msg(rig.WORLD_FRAME, rig.gripper_frame(arm), gripper_pose(i, ts, seed), ns)
                        for i, arm in enumerate(rig.FOLLOWERS)
                    ]
                    put("/tf", T["tf2_msgs/msg/TFMessage"](transforms=grippers), ns)
                continue
            for cam in rig.CAMERAS:
                if cam in FIXED_CAMERAS:
                    pose = _look_at(*FIXED_CAMERAS[cam])
                else:
                    arm_i = 0 if cam == "cam_left_wrist" else 1
                    pose = gripper_pose(arm_i, ts, seed) @ WRIST_MOUNT
                depth = raycast_depth(pose, K, h, w, box)
                depth_mm = np.round(depth * 1000).astype(np.uint16)
                shade = np.clip(depth / 1.5, 0, 1)
                rgb = np.stack([shade * 255, (1 - shade) * 255, np.full_like(shade, 80)], -1).astype(np.uint8)
                frame = rig.color_optical_frame(cam)
                info = T["sensor_msgs/msg/CameraInfo"](
                    header=header(ns, frame),
                    height=h,
                    width=w,
                    distortion_model="plumb_bob",
                    d=np.zeros(5),
                    k=K.reshape(-1),
                    r=np.eye(3).reshape(-1),
                    p=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
                    binning_x=0,
                    binning_y=0,
                    roi=T["sensor_msgs/msg/RegionOfInterest"](
                        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
                    ),
                )
                img = T["sensor_msgs/msg/Image"]
                color = img(
                    header=header(ns, frame),
                    height=h,
                    width=w,
                    encoding="rgb8",
                    is_bigendian=0,
                    step=w * 3,
                    data=rgb.reshape(-1),
                )
                dmsg = img(
                    header=header(ns, frame),
                    height=h,
                    width=w,
                    encoding="16UC1",
                    is_bigendian=0,
                    step=w * 2,
                    data=depth_mm.view(np.uint8).reshape(-1),
                )
                put(rig.color_topic(cam), color, ns)
                put(rig.camera_info_topic(rig.color_topic(cam)), info, ns)
                put(rig.depth_topic(cam), dmsg, ns)
                put(rig.camera_info_topic(rig.depth_topic(cam)), info, ns)
    return out
