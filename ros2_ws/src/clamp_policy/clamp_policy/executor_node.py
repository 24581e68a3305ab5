"""ChunkExecutorNode: streams action chunks to the arm driver at 50 Hz (logic in executor.py).

Subscribes  /clamp/action_chunk (trajectory_msgs/JointTrajectory: rig.ACTION_NAMES, time_from_start
            per point, header.stamp = observation time), /<follower>/joint_states and
            rig.DRIVER_STATE_TOPIC (std_msgs/String; when the driver publishes it, chunks run only
            while it is "ready").
Publishes   rig.JOINT_COMMAND_TOPIC (sensor_msgs/JointState, name = rig.ACTION_NAMES, 14 positions,
            gripper normalised) every tick, /diagnostics (1 Hz).
Service     ~/rearm (std_srvs/Trigger): leave the latched SAFE state.

Ticks come from a dedicated thread, never from the executor's callback queue:
- wall time: absolute deadlines on the monotonic clock (a late wake-up skips whole periods and
  counts them as missed, it never bursts), optional SCHED_FIFO priority (`realtime_priority`);
- sim time (use_sim_time): one tick per 1 / control_hz of /clock on the sim-time grid, stamped with
  that grid time (ticks the clock jumped over are run in order, up to `max_catch_up`).
Run it in its own process (as the launch files do) so no other node's Python holds its GIL.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque

import numpy as np
from clamp_core import rig
from clamp_core.ros import (
    best_effort_qos,
    declare_dataclass_params,
    duration_to_s,
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

from .executor import ChunkError, ChunkExecutor, ExecState, ExecutorConfig, make_chunk
from .follower_state import FollowerState

try:  # rclpy is imported lazily by tests that only need the helpers above
    from rclpy.node import Node
except ImportError:  # pragma: no cover
    Node = object


class TickStats:
    """Wake-up lateness (jitter) and missed ticks of the timing thread; thread-safe snapshot."""

    def __init__(self, window: int = 3000) -> None:
        self.lateness_ms: deque[float] = deque(maxlen=window)
        self.missed = 0  # while commanding: each one is a 20 ms gap in the command stream
        self.missed_idle = 0  # while nothing is commanded (e.g. at start-up)
        self.ticks = 0
        self.catch_up = 0
        self.started: float | None = None  # monotonic time the ticker started (wall time only)
        self.period = 0.0
        self._lock = threading.Lock()

    def record(self, lateness_s: float, missed: int = 0, active: bool = True) -> None:
        with self._lock:
            if active:
                self.lateness_ms.append(lateness_s * 1e3)
                self.missed += missed
            else:
                self.missed_idle += missed
            self.ticks += 1

    def summary(self) -> dict:
        with self._lock:
            lat = np.array(self.lateness_ms) if self.lateness_ms else np.zeros(1)
            expected = None
            if self.started is not None:  # deadlines since the start: ticks + missed should match
                expected = int((time.monotonic() - self.started) / self.period)
            return {
                "expected_ticks": expected,
                "ticks": self.ticks,
                "missed_ticks": self.missed,
                "missed_ticks_idle": self.missed_idle,
                "catch_up_ticks": self.catch_up,
                "jitter_p50_ms": float(np.percentile(lat, 50)),
                "jitter_p99_ms": float(np.percentile(lat, 99)),
                "jitter_max_ms": float(lat.max()),
            }


class WallTicker:
    """Calls `fn()` every `period` s on absolute monotonic deadlines in its own thread."""

    def __init__(
        self, period: float, fn, stats: TickStats, spin_s: float = 0.0002, priority: int = 0, active=lambda: True
    ) -> None:
        self.period, self.fn, self.stats, self.spin_s, self.priority = period, fn, stats, spin_s, priority
        self.active = active  # jitter and misses count while this is true (commands are due)
        self.priority_error = ""
        self.started_event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clamp-executor-tick", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        if self.priority > 0:
            try:  # Linux: pid 0 = this thread; needs CAP_SYS_NICE / rtprio limits on the robot
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.priority))
            except (AttributeError, PermissionError, OSError) as exc:
                self.priority_error = f"SCHED_FIFO {self.priority} not set: {exc}"
        self.started_event.set()
        period = self.period
        deadline = time.monotonic() + period
        self.stats.started, self.stats.period = deadline - period, period
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining > self.spin_s:
                time.sleep(remaining - self.spin_s)
            while time.monotonic() < deadline:  # short spin for the last fraction of a ms
                pass
            late = time.monotonic() - deadline
            missed = 0
            if late >= period:  # woke past the next deadline: skip, never burst
                missed = int(late // period)
                deadline += missed * period
                late -= missed * period
            self.stats.record(late, missed, self.active())
            self.fn()
            deadline += period


class SimTicker:
    """Ticks on the sim-time grid as /clock advances (fed by `on_clock`)."""

    def __init__(self, period: float, fn, stats: TickStats, max_catch_up: int = 5, active=lambda: True) -> None:
        self.period, self.fn, self.stats, self.max_catch_up = period, fn, stats, max_catch_up
        self.active = active
        self._cond = threading.Condition()
        self._now: float | None = None
        self._jumped = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="clamp-executor-simtick", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def on_clock(self, t: float) -> None:
        with self._cond:
            if self._now is not None and t < self._now - self.period:
                # the clock went back (clamp_sim reset, a looped bag): start a new grid there; the
                # executor sees the step back and forgets what it knew from the old time line
                self._jumped = True
                self._now = t
                self._cond.notify_all()
            elif self._now is None or t > self._now:
                self._now = t
                self._cond.notify_all()

    def _run(self) -> None:
        nxt = None  # integer index of the next tick on the grid k * period (no float drift)
        eps = 1e-6  # clock values within a microsecond of a grid point count as on it
        while True:
            with self._cond:
                while not self._stop and (
                    self._now is None or (not self._jumped and nxt is not None and self._now / self.period + eps < nxt)
                ):
                    self._cond.wait(0.1)
                if self._stop:
                    return
                now = self._now
                if self._jumped:
                    self._jumped, nxt = False, None
            last_due = math.floor(now / self.period + eps)
            if nxt is None:
                nxt = last_due  # start on the current grid point
            due = last_due - nxt + 1
            missed = max(0, due - self.max_catch_up)
            nxt += missed
            for i in range(due - missed):
                self.stats.record(0.0, missed if i == 0 else 0, self.active())
                if i:
                    self.stats.catch_up += 1
                self.fn(nxt * self.period)
                nxt += 1


class ChunkExecutorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("chunk_executor", **kwargs)
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from sensor_msgs.msg import JointState
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        profile = self.declare_parameter("profile", "").value
        prof, overrides = load_profile_section(profile, "policy", "executor")
        cfg = declare_dataclass_params(self, ExecutorConfig, overrides)
        self.config = ExecutorConfig(**cfg).validate()
        limits = guard = None
        gripper = rig.FOLLOWER_GRIPPER
        if prof is not None:
            from clamp_core.profile import gripper_calibration, safety_limits, workspace_guard

            limits = safety_limits(prof)
            guard = workspace_guard(prof)
            gripper = gripper_calibration(prof, "follower")
        # SCHED_FIFO priority of the tick thread (as ros2_control does); falls back to normal scheduling
        # with a warning where not permitted (needs root or an rtprio limit in limits.conf). 0 = off.
        self.realtime_priority = int(self.declare_parameter("realtime_priority", 50).value)
        self.diagnostics_period = float(self.declare_parameter("diagnostics_period_s", 1.0).value)
        self.use_sim_time = bool(self.get_parameter("use_sim_time").value)
        # Python hands the GIL to a waiting thread only every switch interval (default 5 ms): shorter,
        # so the tick thread waking up is not stalled behind callbacks (process-wide setting).
        switch = float(self.declare_parameter("gil_switch_interval_s", 0.0005).value)
        if switch > 0:
            sys.setswitchinterval(switch)

        self.core = ChunkExecutor(self.config, limits, guard)
        self._lock = threading.Lock()
        self._followers = FollowerState(gripper)
        self.tick_stats = TickStats()
        self._published = 0
        self._last_diag = (None, 0)  # (time, published) for the executed rate
        self.last_command: np.ndarray | None = None

        self._JointState = JointState
        self._cmd_pub = self.create_publisher(JointState, rig.JOINT_COMMAND_TOPIC, 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, rig.DIAGNOSTICS_TOPIC, 10)
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(
            JointTrajectory,
            rig.ACTION_CHUNK_TOPIC,
            self._on_chunk,
            reliable_qos(depth=2),
            callback_group=inputs,
        )
        for arm in rig.FOLLOWERS:
            self.create_subscription(
                JointState,
                rig.joint_states_topic(arm),
                lambda msg, arm=arm: self._on_joint_state(arm, msg),
                sensor_qos(),  # best effort matches both reliable and best-effort drivers
                callback_group=inputs,
            )
        from std_msgs.msg import String

        self.create_subscription(
            String,
            rig.DRIVER_STATE_TOPIC,
            self._on_driver_state,
            latched_subscriber_qos(),
            callback_group=inputs,
        )
        self.create_service(Trigger, "~/rearm", self._on_rearm)
        self.create_timer(self.diagnostics_period, self._publish_diagnostics)

        period = self.config.dt
        if self.use_sim_time:
            from rosgraph_msgs.msg import Clock

            self._ticker = SimTicker(period, self._tick_at, self.tick_stats, active=self._active)
            self.create_subscription(
                Clock,
                "/clock",
                lambda msg: self._ticker.on_clock(stamp_to_s(msg.clock)),
                best_effort_qos(),
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        else:
            self._ticker = WallTicker(
                period, self._tick_now, self.tick_stats, priority=self.realtime_priority, active=self._active
            )
        self._ticker.start()
        if not self.use_sim_time and self.realtime_priority > 0:
            self._ticker.started_event.wait(1.0)
            if self._ticker.priority_error:
                self.get_logger().warning(
                    f"{self._ticker.priority_error}; ticks may jitter under CPU load. Allow it with "
                    "`ulimit -r 99` / an rtprio entry in /etc/security/limits.conf, or set realtime_priority:=0"
                )
        self.get_logger().info(
            f"chunk executor at {self.config.control_hz:g} Hz on {'sim' if self.use_sim_time else 'wall'} time; "
            f"blend {self.config.blend_s} s, ensembling {self.config.temporal_ensembling}, "
            f"hold after {self.config.chunk_timeout_s} s without a chunk, SAFE after {self.config.safe_after_s} s"
        )

    # ------------------------------------------------------------------------------- callbacks
    def _on_joint_state(self, arm: str, msg) -> None:
        stamp = stamp_to_s(msg.header.stamp)
        if stamp == 0.0:  # some drivers leave it empty: use the arrival time
            stamp = now_s(self)
        try:
            got = self._followers.update(arm, msg.name, msg.position, stamp)
        except KeyError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)
            return
        if got is not None:
            with self._lock:
                self.core.update_state(*got)

    def _on_driver_state(self, msg) -> None:
        with self._lock:
            self.core.update_driver_state(msg.data)

    def _on_chunk(self, msg) -> None:
        now = now_s(self)
        chunk, error = None, ""
        try:
            positions = [list(p.positions) for p in msg.points]
            if any(len(p) != rig.ACTION_DIM for p in positions):
                raise ChunkError(f"every point needs {rig.ACTION_DIM} positions (rig.ACTION_NAMES)")
            tfs = [duration_to_s(p.time_from_start) for p in msg.points]
            chunk = make_chunk(stamp_to_s(msg.header.stamp), tfs, np.array(positions), msg.joint_names)
        except ChunkError as exc:
            error = str(exc)
        with self._lock:
            result = self.core.submit(chunk, now, error)
            warnings = self.core.pop_warnings()
        for w in warnings:
            self.get_logger().warning(w)
        if result.accepted and result.dropped:
            self.get_logger().debug(f"chunk accepted; {result.dropped} passed point(s) dropped")

    def _on_rearm(self, request, response):
        with self._lock:
            previous = self.core.state.value
            self.core.rearm()
        response.success = True
        response.message = f"re-armed (was {previous})"
        self.get_logger().info(response.message)
        return response

    # ----------------------------------------------------------------------------------- ticks
    def _active(self) -> bool:
        return self.core.state != ExecState.IDLE

    def _tick_now(self) -> None:
        self._tick_at(now_s(self))

    def _tick_at(self, now: float) -> None:
        with self._lock:
            cmd = self.core.tick(now)
        if cmd is None:
            return
        msg = self._JointState()
        msg.header.stamp = s_to_stamp(now)
        msg.header.frame_id = rig.COMMAND_SOURCE_EXECUTOR  # the arm driver takes commands from its mode's owner
        msg.name = list(rig.ACTION_NAMES)
        msg.position = cmd.tolist()
        self._cmd_pub.publish(msg)
        self.last_command = cmd
        self._published += 1

    # ----------------------------------------------------------------------------- diagnostics
    def stats(self) -> dict:
        now = now_s(self)
        with self._lock:
            out = self.core.stats(now)
        out.update(self.tick_stats.summary())
        prev_t, prev_n = self._last_diag
        out["executed_rate_hz"] = (
            (self._published - prev_n) / (now - prev_t) if prev_t is not None and now > prev_t else None
        )
        self._last_diag = (now, self._published)
        out["published"] = self._published
        if getattr(self._ticker, "priority_error", ""):
            out["priority"] = self._ticker.priority_error
        return out

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus

        s = self.stats()
        with self._lock:
            warnings = self.core.pop_warnings()
        for w in warnings:
            self.get_logger().warning(w)
        level = {
            "running": DiagnosticStatus.OK,
            "idle": DiagnosticStatus.OK,
            "hold": DiagnosticStatus.WARN,
            "safe": DiagnosticStatus.ERROR,
        }[s["state"]]
        if s["missed_ticks"] and level == DiagnosticStatus.OK:
            level = DiagnosticStatus.WARN
        publish_status(self, self._diag_pub, "clamp_policy: chunk executor", level, f"{s['state']}: {s['reason']}", s)

    def close(self) -> None:
        self._ticker.stop()

    def destroy_node(self):
        self._ticker.stop()
        return super().destroy_node()


def main(args=None) -> None:
    spin_node(ChunkExecutorNode, args, on_shutdown=lambda node: node.close())


if __name__ == "__main__":
    main()
