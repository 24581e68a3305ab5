"""Scripted demonstrations -> one rosbag2 MCAP episode bag per episode (the shared episode schema).

    python -m clamp_sim.generate --task transfer_cube --episodes 10 --seed 0 --out DIR

Bags are written with `clamp_core.episode_bag.EpisodeWriter` from rosbags-typestore
messages (no ROS install needed), stamped with sim time: follower and "leader" joint states at
rig.CONTROL_HZ (the leader topics carry the demonstrator's commanded joint targets: the actions,
gripper as a follower gripper angle), per camera colour + aligned 16UC1 depth + both camera_info
at --camera-hz, /tf every control step (arm links, ee_gripper_link), /tf_static (fixed camera
mounts and the wrist camera mounts on ee_gripper_link), /clamp/task, and with each camera frame
the task objects' world positions (OBJECTS_TOPIC, JSON as sim_node publishes them) and the task
progress (PROGRESS_TOPIC, JSON {"progress": best so far, "current": this state's stage}) for the
CLAMP text prompts. episode.yaml records task, success, seed, the object positions at the start
and end, progress, and the image size.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from clamp_core import rig
from clamp_core.episode_bag import EpisodeWriter, make_typestore

from clamp_sim.aloha_sim import AlohaSim, finger_from_normalised
from clamp_sim.evaluation import run_episode
from clamp_sim.scripted import make_scripted_policy

OBJECTS_TOPIC = "/clamp_sim/objects"  # std_msgs/String: {"red cube": [x, y, z], ...} in the world frame
PROGRESS_TOPIC = "/clamp_sim/progress"  # std_msgs/String: {"progress": p, "current": c}, both in [0, 1]


def _quat_xyzw(R: np.ndarray) -> np.ndarray:
    import mujoco

    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R).ravel())
    return np.array([q[1], q[2], q[3], q[0]])


class BagMessages:
    """Builds rosbags-typestore messages for the episode schema from sim state."""

    def __init__(self, store) -> None:
        self.store = store
        T = store.types
        self.Time, self.Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]
        self.JointState, self.Image = T["sensor_msgs/msg/JointState"], T["sensor_msgs/msg/Image"]
        self.CameraInfo, self.ROI = T["sensor_msgs/msg/CameraInfo"], T["sensor_msgs/msg/RegionOfInterest"]
        self.TFMessage, self.TS = T["tf2_msgs/msg/TFMessage"], T["geometry_msgs/msg/TransformStamped"]
        self.Transform, self.V3 = T["geometry_msgs/msg/Transform"], T["geometry_msgs/msg/Vector3"]
        self.Quat, self.String = T["geometry_msgs/msg/Quaternion"], T["std_msgs/msg/String"]

    def header(self, ns: int, frame: str = ""):
        return self.Header(stamp=self.Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=frame)

    def joint_state(self, ns: int, pos, vel=None, eff=None):
        z = np.zeros(len(rig.XS_JOINT_NAMES))
        as64 = lambda v: np.asarray(z if v is None else v, np.float64)  # noqa: E731
        # velocity/effort always filled: rosbags rejects rclpy-style empty float64[] fields
        return self.JointState(
            header=self.header(ns),
            name=list(rig.XS_JOINT_NAMES),
            position=as64(pos),
            velocity=as64(vel),
            effort=as64(eff),
        )

    def image(self, ns: int, frame: str, arr: np.ndarray, encoding: str):
        arr = np.ascontiguousarray(arr)
        h, w = arr.shape[:2]
        return self.Image(
            header=self.header(ns, frame),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=arr.strides[0],
            data=arr.view(np.uint8).reshape(-1),
        )

    def camera_info(self, ns: int, frame: str, K: np.ndarray, h: int, w: int):
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self.CameraInfo(
            header=self.header(ns, frame),
            height=h,
            width=w,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=K.ravel().astype(np.float64),
            r=np.eye(3).ravel(),
            p=P.ravel(),
            binning_x=0,
            binning_y=0,
            roi=self.ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )

    def tf(self, ns: int, items: list[tuple[str, str, np.ndarray]]):
        out = []
        for parent, child, T in items:
            q = _quat_xyzw(T[:3, :3])
            out.append(
                self.TS(
                    header=self.header(ns, parent),
                    child_frame_id=child,
                    transform=self.Transform(
                        translation=self.V3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                        rotation=self.Quat(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
                    ),
                )
            )
        return self.TFMessage(transforms=out)


def leader_positions(action_arm: np.ndarray) -> np.ndarray:
    """7-D per-arm action (gripper normalised) -> xs_sdk joint positions of a follower-style command."""
    g = float(action_arm[6])
    p = finger_from_normalised(g)
    return np.concatenate([action_arm[:6], [rig.FOLLOWER_GRIPPER.joint(g)], [p, -p]])


def dynamic_tf(sim: AlohaSim) -> list[tuple[str, str, np.ndarray]]:
    """Arm links relative to their base_link (as robot_state_publisher would), incl. ee_gripper_link."""
    poses = sim.link_poses()
    out = []
    for arm in rig.FOLLOWERS:
        base_inv = np.linalg.inv(poses[f"{arm}/base_link"])
        out += [
            (f"{arm}/base_link", name, base_inv @ T)
            for name, T in poses.items()
            if name.startswith(arm + "/") and name != f"{arm}/base_link"
        ]
    return out


def static_tf(sim: AlohaSim) -> list[tuple[str, str, np.ndarray]]:
    """Arm bases in world, fixed cameras in world, wrist cameras rigidly on ee_gripper_link."""
    poses = sim.link_poses()
    out = [(rig.WORLD_FRAME, f"{arm}/base_link", poses[f"{arm}/base_link"]) for arm in rig.FOLLOWERS]
    for cam in rig.CAMERAS:
        parent, T = sim.camera_mount(cam)
        out.append((parent, rig.color_optical_frame(cam), T))
    return out


class _Recorder:
    """One simulator + demonstrator writing episode bags (one per process when generating in parallel)."""

    def __init__(self, task: str, out: Path, image_size, camera_hz: float, cameras) -> None:
        self.task, self.out, self.image_size, self.camera_hz = task, out, image_size, camera_hz
        self.cameras = tuple(cameras)
        self.policy = make_scripted_policy(task)
        self.msgs = BagMessages(make_typestore())
        self.every = max(1, round(rig.CONTROL_HZ / camera_hz))
        self.sim = AlohaSim(task, image_size=image_size, cameras=self.cameras)

    def close(self) -> None:
        self.sim.close()

    def episode(self, ep_seed: int) -> dict:
        task, msgs, sim, policy, every = self.task, self.msgs, self.sim, self.policy, self.every
        bag = self.out / f"{task}_seed{ep_seed:04d}"
        writer = EpisodeWriter(
            bag,
            {"task": task, "source": "sim", "seed": ep_seed, "action_source": "leader_joint_states/follower_gripper"},
            fsync=False,
        )
        start_objects = {}

        def on_step(sim_, t, action, frames):
            ns = int(round(sim_.time * 1e9))
            if t == 0:
                start_objects.update(sim_.object_positions())
                writer.write("/tf_static", msgs.tf(ns, static_tf(sim_)), ns)
                writer.write(rig.TASK_TOPIC, msgs.String(data=sim_.description()), ns)
            for i, arm in enumerate(rig.FOLLOWERS):
                _, pos, vel, eff = sim_.joint_states(arm)
                writer.write(rig.joint_states_topic(arm), msgs.joint_state(ns, pos, vel, eff))
                leader = rig.LEADERS[i]
                writer.write(
                    rig.joint_states_topic(leader),
                    msgs.joint_state(ns, leader_positions(action[7 * i : 7 * i + 7])),
                )
            writer.write("/tf", msgs.tf(ns, dynamic_tf(sim_)), ns)
            if frames:
                writer.write(OBJECTS_TOPIC, msgs.String(data=json.dumps(sim_.object_positions())), ns)
                progress = {"progress": sim_.task.progress, "current": sim_.task.current_progress}
                writer.write(PROGRESS_TOPIC, msgs.String(data=json.dumps(progress)), ns)
                for cam, f in frames.items():
                    frame = rig.color_optical_frame(cam)
                    h, w = f.rgb.shape[:2]
                    ctopic, dtopic = rig.color_topic(cam), rig.depth_topic(cam)
                    writer.write(ctopic, msgs.image(ns, frame, f.rgb, "rgb8"))
                    writer.write(rig.camera_info_topic(ctopic), msgs.camera_info(ns, frame, f.K, h, w))
                    writer.write(dtopic, msgs.image(ns, frame, f.depth_mm, "16UC1"))
                    writer.write(rig.camera_info_topic(dtopic), msgs.camera_info(ns, frame, f.K, h, w))

        t0 = time.perf_counter()
        try:
            # ends once the demonstrator is done and the task has settled (episodes vary in length)
            r = run_episode(
                sim,
                policy,
                ep_seed,
                policy.horizon,
                execute_steps=10,
                render_every=every,
                on_step=on_step,
                stop_on_success=True,
            )
        except BaseException:
            writer.discard()
            raise
        expected = {rig.joint_states_topic(a): rig.CONTROL_HZ for a in rig.FOLLOWERS + rig.LEADERS}
        expected["/tf"] = rig.CONTROL_HZ
        expected[OBJECTS_TOPIC] = expected[PROGRESS_TOPIC] = rig.CONTROL_HZ / every
        for cam in self.cameras:
            for topic in (rig.color_topic(cam), rig.depth_topic(cam)):
                expected[topic] = expected[rig.camera_info_topic(topic)] = rig.CONTROL_HZ / every
        meta = writer.close(
            success=bool(r.success),
            expected_rates=expected,
            control_hz=rig.CONTROL_HZ,
            dropped_frames={t: 0 for t in expected},
            extras={
                "description": sim.description(),
                "objects_start": start_objects,
                "objects_end": sim.object_positions(),
                "progress": float(r.progress),
                "success_step": r.success_step,
                "image_size": list(self.image_size),
                "camera_hz": self.camera_hz,
                "wall_s": round(time.perf_counter() - t0, 2),
            },
        )
        return {"bag": str(bag), "success": meta["success"], "seed": ep_seed, "steps": r.steps}


_worker: _Recorder | None = None


def _init_worker(*args) -> None:
    global _worker
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker = _Recorder(*args)


def _worker_episode(ep_seed: int) -> dict:
    return _worker.episode(ep_seed)


def generate(
    task: str,
    episodes: int,
    seed: int,
    out: Path,
    image_size=(240, 320),
    camera_hz: float = 10.0,
    cameras=rig.CAMERAS,
    progress: bool = True,
    workers: int = 1,
) -> list[dict]:
    """Episodes seed..seed+episodes-1 as bags under `out`; results in seed order. `workers` > 1
    records in that many processes (each its own simulator; one per core is the sweet spot)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    seeds = [seed + k for k in range(episodes)]
    results = []
    bar = tqdm(total=episodes, desc=f"generate {task}", disable=not progress)
    args = (task, out, tuple(image_size), camera_hz, tuple(cameras))
    if workers > 1 and episodes > 1:
        import multiprocessing as mp

        # spawn: a fresh interpreter per worker (no forked GL context or ROS state)
        with mp.get_context("spawn").Pool(min(workers, episodes), _init_worker, args) as pool:
            for res in pool.imap_unordered(_worker_episode, seeds):
                results.append(res)
                bar.update(1)
                bar.set_postfix(success=f"{sum(x['success'] for x in results)}/{len(results)}")
    else:
        rec = _Recorder(*args)
        try:
            for ep_seed in seeds:
                results.append(rec.episode(ep_seed))
                bar.update(1)
                bar.set_postfix(success=f"{sum(x['success'] for x in results)}/{len(results)}")
        finally:
            rec.close()
    bar.close()
    return sorted(results, key=lambda r: r["seed"])
