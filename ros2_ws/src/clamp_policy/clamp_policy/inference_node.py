"""InferenceNode: runs the exported policy on live observations and publishes action chunks.

Subscribes  /clamp/views (sensor_msgs/Image 32FC4, tiled 224 x 224*V, stamp = observation time)
            when the policy takes views, the colour images (rig.color_topic) of the policy's
            rgb.cameras, /<follower>/joint_states, /clamp/task (std_msgs/String), and
            rig.JOINT_COMMAND_TOPIC (the executed targets, for policies that take an action history).
Publishes   /clamp/action_chunk (trajectory_msgs/JointTrajectory: rig.ACTION_NAMES, point i at
            time_from_start = i / CONTROL_HZ) and /diagnostics.

Chunk alignment, the same as in training and in `clamp_training evaluate`: chunk point 0 is the
target for the time of the arm state the policy saw, and the images are the newest ones not after
it. So header.stamp = the joint states' stamp (not the views' stamp, which is older by the
perception time: stamping with it made every chunk play early by the views' age). An observation
whose state stamp is not newer than the last one inferred on is not inferred on again.

Every `replan_every` control steps (node clock: sim time in simulation) the newest observation goes
to a single worker thread (inference.InferenceWorker); callbacks never block on the model. The
policy is loaded with `clamp_policy.models.checkpoint.load_policy(checkpoint)` (refuses a
mismatched config), checked against the rig, and warmed up before the node reports ready.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from clamp_core import rig
from clamp_core.ros import (
    latched_subscriber_qos,
    load_profile_section,
    now_s,
    publish_status,
    reliable_qos,
    s_to_stamp,
    sensor_qos,
    spin_node,
    stamp_to_s,
)

from .follower_state import FollowerState
from .inference import (
    ActionHistory,
    InferenceResult,
    InferenceWorker,
    Observation,
    PolicyRunner,
    configure_torch_threads,
)

try:
    from rclpy.node import Node
except ImportError:  # pragma: no cover
    Node = object

DEFAULTS = {
    "checkpoint": "",
    "num_inference_steps": 10,  # DDIM steps
    "num_samples": 1,  # chunks drawn per observation and averaged
    "replan_every": 25,  # control steps between chunks (0.5 s at 50 Hz; a chunk covers 1 s)
    "torch_threads": 0,  # 0 = all cores but one
    "warmup_runs": 2,
    "max_obs_age_s": 0.5,  # views older than this (node clock) are not inferred on
    "seed": 0,  # DDIM noise seed (-1 = random)
    "device": "cpu",
}


class InferenceNode(Node):
    def __init__(self, policy=None, **kwargs) -> None:
        """`policy`: an already built DiffusionPolicy (tests, benchmarks); otherwise `checkpoint` is loaded."""
        super().__init__("clamp_inference", **kwargs)
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        profile = self.declare_parameter("profile", "").value
        prof, overrides = load_profile_section(profile, "policy", "inference")
        if prof is not None and prof["policy"].get("checkpoint") and "checkpoint" not in overrides:
            overrides["checkpoint"] = str(prof["policy"]["checkpoint"])
        unknown = sorted(set(overrides) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown policy.inference setting(s) {unknown} in the profile; known: {sorted(DEFAULTS)}")
        p = {k: self.declare_parameter(k, type(v)(overrides.get(k, v))).value for k, v in DEFAULTS.items()}
        self.params = p
        if int(p["replan_every"]) < 1:
            raise ValueError(f"replan_every must be >= 1 control step, got {p['replan_every']}")
        gripper = rig.FOLLOWER_GRIPPER
        if prof is not None:
            from clamp_core.profile import gripper_calibration

            gripper = gripper_calibration(prof, "follower")

        self.torch_threads = configure_torch_threads(int(p["torch_threads"]))
        if policy is None:
            if not p["checkpoint"]:
                raise ValueError(
                    "no policy: set the `checkpoint` parameter to an exported policy directory "
                    "(python -m clamp_training export RUN --out POLICY_DIR), or policy.checkpoint in the profile"
                )
            from .models.checkpoint import load_policy

            policy = load_policy(p["checkpoint"], device=p["device"])  # raises CheckpointError on mismatch
        seed = int(p["seed"])
        self.runner = PolicyRunner(
            policy, int(p["num_inference_steps"]), seed=None if seed < 0 else seed, num_samples=int(p["num_samples"])
        )
        self.replan_period = int(p["replan_every"]) / rig.CONTROL_HZ

        self._lock = threading.Lock()
        self._views_msg = None
        self._views_stamp: float | None = None
        self._rgb_msgs: dict[str, object] = {}
        self._last_obs_stamp = -float("inf")
        self._task = ""
        self._followers = FollowerState(gripper)
        self._history = ActionHistory(self.runner.history_length)
        self.published = 0
        self.skipped: dict[str, int] = {
            "busy": 0,
            "stale_views": 0,
            "no_views": 0,
            "no_state": 0,
            "bad_input": 0,
            "no_rgb": 0,
            "stale_rgb": 0,
            "same_state": 0,
        }
        self.chunk_ages: deque[float] = deque(maxlen=200)  # obs stamp -> publish, node clock
        self.last_error = ""
        self.ready = False

        self._Trajectory = JointTrajectory
        self._chunk_pub = self.create_publisher(JointTrajectory, rig.ACTION_CHUNK_TOPIC, reliable_qos(depth=2))
        self._diag_pub = self.create_publisher(DiagnosticArray, rig.DIAGNOSTICS_TOPIC, 10)
        inputs = MutuallyExclusiveCallbackGroup()
        if self.runner.needs_views:
            self.create_subscription(Image, rig.VIEWS_TOPIC, self._on_views, 2, callback_group=inputs)
        for cam in self.runner.cfg.rgb.cameras:
            self.create_subscription(
                Image,
                rig.color_topic(cam),
                lambda msg, cam=cam: self._on_rgb(cam, msg),
                sensor_qos(),
                callback_group=inputs,
            )
        for arm in rig.FOLLOWERS:
            self.create_subscription(
                JointState,
                rig.joint_states_topic(arm),
                lambda msg, arm=arm: self._on_joint_state(arm, msg),
                sensor_qos(),
                callback_group=inputs,
            )
        # latched like its publishers (clamp_sim, the robot's task node): a task set before start is received
        self.create_subscription(String, rig.TASK_TOPIC, self._on_task, latched_subscriber_qos(), callback_group=inputs)
        if self.runner.history_length:
            self.create_subscription(JointState, rig.JOINT_COMMAND_TOPIC, self._on_command, 10, callback_group=inputs)
        self.worker = InferenceWorker(self.runner, self._on_result, self._on_error)
        self.create_timer(self.replan_period, self._on_replan, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self._warmup_thread = threading.Thread(target=self._warm_up, name="clamp-inference-warmup", daemon=True)
        self._warmup_thread.start()

    # ---------------------------------------------------------------------------------- start-up
    def _warm_up(self) -> None:
        try:
            times = self.runner.warmup(int(self.params["warmup_runs"]))
        except Exception as exc:
            self.last_error = f"warm-up failed: {exc}"
            self.get_logger().error(self.last_error)
            return
        self.worker.start()
        self.ready = True
        horizon_ms = self.replan_period * 1e3
        msg = (
            f"policy ready: warm-up {', '.join(f'{t:.0f}' for t in times)} ms, {self.runner.num_inference_steps} "
            f"DDIM steps, {self.torch_threads} torch thread(s); a chunk every {horizon_ms:.0f} ms"
        )
        self.get_logger().info(msg)
        if times[-1] > horizon_ms:
            self.get_logger().warning(
                f"inference ({times[-1]:.0f} ms) is longer than the replan period ({horizon_ms:.0f} ms): "
                "raise replan_every or lower num_inference_steps"
            )

    # --------------------------------------------------------------------------------- callbacks
    def _on_views(self, msg) -> None:
        with self._lock:
            self._views_msg = msg  # decoded only when used (4.5 MB per message)
            self._views_stamp = stamp_to_s(msg.header.stamp)

    def _on_rgb(self, cam: str, msg) -> None:
        with self._lock:
            self._rgb_msgs[cam] = msg  # decoded only when used

    def _on_joint_state(self, arm: str, msg) -> None:
        stamp = stamp_to_s(msg.header.stamp) or now_s(self)
        try:
            self._followers.update(arm, msg.name, msg.position, stamp)
        except KeyError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)

    def _on_task(self, msg) -> None:
        with self._lock:
            if msg.data != self._task:
                self.get_logger().info(f"task: {msg.data!r}")
            self._task = msg.data

    def _on_command(self, msg) -> None:
        if list(msg.name) == list(rig.ACTION_NAMES) and len(msg.position) == rig.ACTION_DIM:
            self._history.push(msg.position)

    def _on_replan(self) -> None:
        if not self.ready:
            return
        if self.worker.busy:
            self.skipped["busy"] += 1
            return
        obs = self._observation()
        if obs is not None:
            self.worker.submit(obs)

    def _observation(self) -> Observation | None:
        from clamp_core.msg_conversions import image_to_numpy

        now = now_s(self)
        state = self._followers.latest()
        if state is None:
            self.skipped["no_state"] += 1
            return None
        with self._lock:
            views_msg, views_stamp, task = self._views_msg, self._views_stamp, self._task
            rgb_msgs = dict(self._rgb_msgs)
        views, stamp = None, state[1]
        if stamp <= self._last_obs_stamp:  # no new joint state since the last chunk: nothing new to infer
            self.skipped["same_state"] += 1
            return None
        if self.runner.needs_views:
            if views_msg is None:
                self.skipped["no_views"] += 1
                self.get_logger().warning("waiting for /clamp/views", throttle_duration_sec=5.0)
                return None
            if now - views_stamp > float(self.params["max_obs_age_s"]):
                self.skipped["stale_views"] += 1
                self.get_logger().warning(
                    f"/clamp/views is {now - views_stamp:.2f} s old (> max_obs_age_s); not inferring",
                    throttle_duration_sec=2.0,
                )
                return None
            try:
                views = image_to_numpy(views_msg)
            except ValueError as exc:
                self._bad_input(f"/clamp/views: {exc}")
                return None
        rgb = None
        if self.runner.cfg.rgb.cameras:
            rgb = {}
            for cam in self.runner.cfg.rgb.cameras:
                msg = rgb_msgs.get(cam)
                if msg is None:
                    self.skipped["no_rgb"] += 1
                    self.get_logger().warning(f"waiting for {rig.color_topic(cam)}", throttle_duration_sec=5.0)
                    return None
                age = now - stamp_to_s(msg.header.stamp)
                if age > float(self.params["max_obs_age_s"]):
                    self.skipped["stale_rgb"] += 1
                    self.get_logger().warning(
                        f"{rig.color_topic(cam)} is {age:.2f} s old (> max_obs_age_s); not inferring",
                        throttle_duration_sec=2.0,
                    )
                    return None
                try:
                    img = image_to_numpy(msg)
                except ValueError as exc:
                    self._bad_input(f"{rig.color_topic(cam)}: {exc}")
                    return None
                if msg.encoding.lower().startswith("bgr"):
                    img = img[..., ::-1]
                rgb[cam] = np.ascontiguousarray(img[..., :3])
        history = self._history.get(state[0]) if self.runner.history_length else None
        self._last_obs_stamp = stamp
        return Observation(stamp=stamp, state=state[0], views=views, task=task, action_history=history, rgb=rgb)

    def _bad_input(self, message: str) -> None:
        self.skipped["bad_input"] += 1
        self.last_error = message
        self.get_logger().error(message, throttle_duration_sec=2.0)

    def _on_error(self, exc: Exception) -> None:
        self._bad_input(f"inference failed: {exc}")

    def _on_result(self, result: InferenceResult) -> None:
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectoryPoint

        msg = self._Trajectory()
        msg.header.stamp = s_to_stamp(result.stamp)
        msg.joint_names = list(rig.ACTION_NAMES)
        for i, p in enumerate(result.chunk):
            ns = int(round(i * 1e9 / rig.CONTROL_HZ))
            msg.points.append(
                JointTrajectoryPoint(
                    positions=p.tolist(), time_from_start=Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
                )
            )
        # counted before it leaves: a subscriber can then never have seen more chunks than `published`
        # says (counted after, a test thread read 2 while its subscription already held the 3rd)
        self.published += 1
        self._chunk_pub.publish(msg)
        self.chunk_ages.append(now_s(self) - result.stamp)

    # ------------------------------------------------------------------------------ diagnostics
    def stats(self) -> dict:
        out = {
            "ready": self.ready,
            "published": self.published,
            "num_inference_steps": self.runner.num_inference_steps,
            "num_samples": self.runner.num_samples,
            "replan_period_ms": self.replan_period * 1e3,
            "torch_threads": self.torch_threads,
            "replaced": self.worker.replaced,
            "errors": self.worker.errors,
            "last_error": self.last_error,
            **{f"skipped_{k}": v for k, v in self.skipped.items()},
            **self.runner.latency_stats(),
        }
        ages = list(self.chunk_ages)
        out["chunk_age_ms_median"] = float(np.median(ages)) * 1e3 if ages else None
        return out

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus

        s = self.stats()
        level = DiagnosticStatus.OK  # levels are bytes (b"\x00" < b"\x01" < b"\x02"): max() works
        message = "ready" if self.ready else "warming up"
        if self.last_error:
            level, message = (DiagnosticStatus.WARN if self.ready else DiagnosticStatus.ERROR), self.last_error
        med = s["inference_ms_median"]
        if med is not None and med > s["replan_period_ms"]:
            level = max(level, DiagnosticStatus.WARN)
            message = f"inference {med:.0f} ms > replan period {s['replan_period_ms']:.0f} ms"
        publish_status(self, self._diag_pub, "clamp_policy: inference", level, message, s)

    def close(self) -> None:
        self.worker.stop()

    def destroy_node(self):
        worker = getattr(self, "worker", None)  # absent when __init__ failed (e.g. a bad checkpoint)
        if worker is not None:
            worker.stop()
        return super().destroy_node()


def wait_ready(node: InferenceNode, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not node.ready:
        if node.last_error or time.monotonic() > deadline:
            raise RuntimeError(f"inference node not ready: {node.last_error or 'timeout'}")
        time.sleep(0.02)


def main(args=None) -> None:
    spin_node(InferenceNode, args, on_shutdown=lambda node: node.close())


if __name__ == "__main__":
    main()
