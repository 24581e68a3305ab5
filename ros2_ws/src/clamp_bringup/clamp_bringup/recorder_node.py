"""Episode recorder node: one MCAP bag per episode via clamp_core.episode_bag (thin node).

Services (std_srvs/Trigger): ~/start, ~/stop (success unknown), ~/stop_success, ~/stop_failure,
~/discard. Gesture: both leader grippers held squeezed for recorder.gesture_hold_s starts an
episode, and stops it when one is running. Messages are taken serialised (raw subscriptions) and
written unchanged; /tf_static, the task and the camera_infos seen before the start are written
at the start so every bag stands alone. Callbacks only queue: each episode has its own writer
thread (clamp_bringup.recorder.Episode) that writes zstd-compressed MCAP chunks (parameter
`compression`: zstd|lz4|none) and flushes + fsyncs every flush_interval_s, so a crash or kill loses
at most that tail. Refuses to start (and stops) when the disk is nearly full; a write error closes
the episode as incomplete with one error logged. On sim time it refuses to start before it has heard
/clock (its bag times would begin at 0). Status on /diagnostics.
"""

from __future__ import annotations

import threading
from pathlib import Path

from clamp_core import profile as profiles
from clamp_core import rig
from clamp_core.episode_bag import COMPRESSIONS, EpisodeWriter
from clamp_core.ros import (
    declare_profile,
    latched_subscriber_qos,
    msg_class,
    positions_by_name,
    publish_status,
    spin_node,
)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from clamp_bringup.graph import expected_rates, recorded_topics
from clamp_bringup.recorder import (
    FLAG_DISK,
    FLAG_INTERRUPTED,
    DiskTooFull,
    Episode,
    check_disk,
    episode_dir,
)
from clamp_bringup.teleop import GripperGesture

SENSOR_QOS = {  # images + camera_info; `best_effort` also matches best-effort (sensor_data) publishers
    # 60 deep = 2 s at 30 Hz: an executor held up that long (GC, a loaded machine) loses no frame
    "reliable": QoSProfile(depth=60, reliability=ReliabilityPolicy.RELIABLE),
    "best_effort": QoSProfile(depth=60, reliability=ReliabilityPolicy.BEST_EFFORT),
}
# Deep queues: ~2 s of joint states, so a recorder busy writing images catches up without losing any.
RELIABLE = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)


class RecorderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop("node_name", "recorder"), **kwargs)
        self.profile = declare_profile(self)
        rec = self.profile["recorder"]
        self.out_dir = Path(self.declare_parameter("out_dir", str(rec["out_dir"])).value).expanduser()
        self.task = str(self.declare_parameter("task", str(rec["task"])).value)
        self.min_free_gb = float(self.declare_parameter("min_free_gb", float(rec["min_free_gb"])).value)
        self.flush_interval = float(self.declare_parameter("flush_interval_s", float(rec["flush_interval_s"])).value)
        self.min_control_hz = float(self.declare_parameter("min_control_hz", float(rec["min_control_hz"])).value)
        self.source = str(self.declare_parameter("source", str(rec["source"])).value)
        self.action_source = str(self.declare_parameter("action_source", str(rec["action_source"])).value)
        self.use_gesture = bool(self.declare_parameter("gesture", bool(rec["gesture"])).value)
        self.compression = str(self.declare_parameter("compression", str(rec.get("compression", "zstd"))).value)
        # the writer thread's queue is bounded: beyond this many MB not yet written, messages are dropped,
        # counted, flagged in the episode and logged (memory stays bounded if the disk stalls)
        backlog_mb = float(rec.get("max_backlog_mb", 1024.0))
        self.max_backlog_mb = float(self.declare_parameter("max_backlog_mb", backlog_mb).value)
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"recorder compression must be one of {COMPRESSIONS}, got {self.compression!r}")
        sensor_qos = str(self.declare_parameter("sensor_qos", str(rec["sensor_qos"])).value)
        if sensor_qos not in SENSOR_QOS:
            raise ValueError(f"recorder sensor_qos must be one of {sorted(SENSOR_QOS)}, got {sensor_qos!r}")
        self.gesture = GripperGesture(float(rec["gesture_threshold"]), float(rec["gesture_hold_s"]))
        self.leader_gripper = profiles.gripper_calibration(self.profile, "leader")

        self.topics = recorded_topics(self.profile)
        self.expected = expected_rates(self.profile)
        self._lock = threading.Lock()
        self.episode: Episode | None = None
        self.last_episode: dict | None = None  # {"path", "metadata"} of the last closed episode
        self._latched: dict[str, list[tuple[str, bytes]]] = {"/tf_static": [], rig.TASK_TOPIC: []}
        self._infos: dict[str, tuple[str, bytes]] = {}
        self._leaders: dict[str, dict[str, float]] = {}

        for topic, msgtype in self.topics.items():
            if topic in ("/tf_static", rig.TASK_TOPIC):  # latched by convention (tf2, clamp_sim's task)
                qos = latched_subscriber_qos()
            elif msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"):
                qos = SENSOR_QOS[sensor_qos]
            else:
                qos = RELIABLE
            self.create_subscription(msg_class(msgtype), topic, self._on_raw(topic, msgtype), qos, raw=True)
        for arm in profiles.leaders(self.profile):
            self.create_subscription(JointState, rig.joint_states_topic(arm), self._on_leader(arm), 10)
        self.create_subscription(JointState, rig.JOINT_COMMAND_TOPIC, self._on_command, RELIABLE)  # every tick rated

        for name, cb in (
            ("start", self._srv_start),
            ("stop", self._srv_stop(None)),
            ("stop_success", self._srv_stop(True)),
            ("stop_failure", self._srv_stop(False)),
            ("discard", self._srv_discard),
        ):
            self.create_service(Trigger, f"~/{name}", cb)
        self._diag = self.create_publisher(DiagnosticArray, rig.DIAGNOSTICS_TOPIC, 10)
        # Wall-clock timer: disk checks must go on even if /clock stalls (the writer thread flushes).
        from rclpy.clock import Clock, ClockType

        self.create_timer(0.5, self._on_status, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ----------------------------------------------------------------------------------- inputs
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_raw(self, topic: str, msgtype: str):
        def cb(data: bytes) -> None:
            if topic in self._latched:
                with self._lock:
                    keep = self._latched[topic]
                    if (msgtype, data) not in keep:
                        keep.append((msgtype, data))
                    del keep[:-20]
            elif msgtype == "sensor_msgs/msg/CameraInfo":
                self._infos[topic] = (msgtype, data)
            ep = self.episode
            if ep is not None:
                ep.add(topic, msgtype, data, self._now_ns())  # queues only: never blocks on the disk

        return cb

    def _on_command(self, msg: JointState) -> None:
        ep = self.episode
        if ep is not None:
            ep.tick_control(self._now_ns(), msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)

    def _on_leader(self, arm: str):
        def cb(msg: JointState) -> None:
            self._leaders[arm] = positions_by_name(msg)
            if not self.use_gesture or len(self._leaders) < 2:
                return
            try:
                left, right = (float(self.leader_gripper.normalise(self._leaders[a]["gripper"])) for a in rig.LEADERS)
            except KeyError:
                return
            # time the squeeze by the joint states' own stamps: a busy recorder may receive them in bursts
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if self.gesture.update((stamp or self._now_ns()) * 1e-9, left, right):
                if self.episode is None:
                    self.start_episode()
                else:
                    self.stop_episode()

        return cb

    # --------------------------------------------------------------------------------- episodes
    def start_episode(self) -> tuple[bool, str]:
        with self._lock:
            if self.episode is not None:
                return False, f"already recording {self.episode.writer.bag_dir}"
            if self._now_ns() == 0:  # sim time and no /clock heard yet: the first bag times would be 0
                reason = (
                    "not starting an episode: no /clock received yet (this recorder runs on sim time, "
                    "use_sim_time true). Start what publishes /clock (clamp_sim, a bag played with --clock) "
                    "and try again, or set use_sim_time false on a real robot"
                )
                self.get_logger().error(reason)
                return False, reason
            try:
                check_disk(self.out_dir, self.min_free_gb)
            except DiskTooFull as exc:
                self.get_logger().error(f"not starting an episode: {exc}")
                return False, str(exc)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = episode_dir(self.out_dir)
            meta = {
                "task": self.task or self._task_text(),
                "source": self.source,
                "action_source": self.action_source,
                "expected_rates": self.expected,
                "extras": {"profile": self.profile["name"], "recorder": self.get_fully_qualified_name()},
            }
            writer = EpisodeWriter(path, meta, flush_interval_s=self.flush_interval, compression=self.compression)
            ep = Episode(
                writer,
                self.expected,
                min_control_hz=self.min_control_hz,
                joint_state_topics=[rig.joint_states_topic(a) for a in rig.FOLLOWERS],
                max_backlog_bytes=int(self.max_backlog_mb * 1e6),
                on_error=lambda err, p=path: self.get_logger().error(
                    f"episode {p} stopped by a write error, closed as incomplete (data up to the last flush "
                    f"kept): {err}. Free space or set recorder.out_dir to a larger disk."
                ),
            )
            now = self._now_ns()
            for topic, items in self._latched.items():
                for msgtype, data in items:
                    ep.add(topic, msgtype, data, now)
            for topic, (msgtype, data) in self._infos.items():
                ep.add(topic, msgtype, data, now)
            if not self._latched[rig.TASK_TOPIC] and self.task:  # no task published: the parameter's
                ep.add(rig.TASK_TOPIC, "std_msgs/msg/String", serialize_message(String(data=self.task)), now)
            self.episode = ep
        self.get_logger().info(f"recording episode {path}")
        return True, str(path)

    def _task_text(self) -> str:
        """The latest task published on rig.TASK_TOPIC ('' if none)."""
        items = self._latched[rig.TASK_TOPIC]
        return deserialize_message(items[-1][1], String).data if items else ""

    def stop_episode(self, success: bool | None = None, extra_flags=(), discard: bool = False) -> tuple[bool, str]:
        with self._lock:
            ep, self.episode = self.episode, None
        if ep is None:
            return False, "not recording"
        path = ep.writer.bag_dir
        if discard:
            ep.discard()
            self.get_logger().info(f"discarded {path}")
            return True, f"discarded {path}"
        meta = ep.close(success=success, extra_flags=extra_flags)  # writes out the queue first
        self.last_episode = {"path": str(path), "metadata": meta}
        if ep.error is not None:
            return False, f"{path} incomplete: {ep.error}"
        if meta["flags"]:
            self.get_logger().warn(
                f"episode {path} flagged {meta['flags']}: control {meta['control_hz'] or 0:.1f} Hz "
                f"(min {self.min_control_hz}), dropped frames {meta['dropped_frames']}"
            )
        self.get_logger().info(f"saved {path} ({sum(meta['message_counts'].values())} messages)")
        return True, str(path)

    # --------------------------------------------------------------------------------- services
    def _srv_start(self, request, response):
        response.success, response.message = self.start_episode()
        return response

    def _srv_stop(self, success: bool | None):
        def cb(request, response):
            response.success, response.message = self.stop_episode(success)
            return response

        return cb

    def _srv_discard(self, request, response):
        response.success, response.message = self.stop_episode(discard=True)
        return response

    # ----------------------------------------------------------------------------------- timers
    def _on_status(self) -> None:
        ep = self.episode
        level, message = DiagnosticStatus.OK, "idle"
        values = {"out_dir": self.out_dir}
        if ep is not None and ep.error is not None:  # closed by its writer thread (error already logged)
            self.stop_episode()
            level, message = DiagnosticStatus.ERROR, f"episode {ep.writer.bag_dir.name} incomplete: {ep.error}"
        elif ep is not None:
            try:
                free = check_disk(self.out_dir, self.min_free_gb)
            except DiskTooFull as exc:
                self.get_logger().error(f"stopping the episode: {exc}")
                self.stop_episode(extra_flags=(FLAG_DISK,))
                level, message = DiagnosticStatus.ERROR, str(exc)
            else:
                message = f"recording {ep.writer.bag_dir.name}"
                if ep.backlog_dropped:  # the writer fell a whole backlog behind: say so (once per 5 s)
                    level = DiagnosticStatus.WARN
                    message = (
                        f"dropped {ep.backlog_dropped} messages: the writer is more than "
                        f"{self.max_backlog_mb:.0f} MB behind (slow or stalled disk at {self.out_dir})"
                    )
                    self.get_logger().warning(message, throttle_duration_sec=5.0)
                values["free_gb"] = f"{free:.1f}"
                values.update({f"count {t}": n for t, n in ep.writer.counts.items()})
        publish_status(self, self._diag, "clamp_bringup/recorder", level, message, values)

    def shutdown(self) -> None:
        """Close a running episode properly (SIGINT/SIGTERM), flagged as interrupted."""
        if self.episode is not None:
            self.stop_episode(extra_flags=(FLAG_INTERRUPTED,))


def main(args=None) -> None:
    spin_node(RecorderNode, args, on_shutdown=lambda node: node.shutdown())


if __name__ == "__main__":
    main()
