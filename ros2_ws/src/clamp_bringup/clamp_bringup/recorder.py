"""Episode recorder logic (ROS-free): stream statistics, dropped frames, episode quality flags, naming.

The node hands every message to `Episode.add(topic, msgtype, cdr, now_ns)`; bag timestamps are the
node clock at receipt (sim time under clamp_sim), forced non-decreasing so file order = time order.
Dropped frames are gaps in the header stamps of image streams longer than 1.5 frame periods.

`add` only counts and queues: the episode's own writer thread serialises the MCAP, compresses,
flushes and fsyncs, so a slow disk never blocks the subscription callbacks (a blocked executor is
what loses DDS messages). A write error (disk full) closes the episode as `incomplete` on that
thread, keeps everything flushed before it, and reports the error once (`Episode.error`).
"""

from __future__ import annotations

import datetime as _dt
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from clamp_core.episode_bag import EpisodeWriter, disk_free_bytes

STAMPED_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/JointState")
FLAG_SLOW_CONTROL = "control_below_min_hz"
FLAG_DROPPED = "dropped_frames"
FLAG_DISK = "stopped_disk_low"
FLAG_INTERRUPTED = "interrupted"
FLAG_WRITE_ERROR = "write_error"
FLAG_BACKLOG = "recorder_backlog_dropped"


def header_stamp_ns(cdr: bytes | memoryview) -> int | None:
    """Stamp of a message that starts with std_msgs/Header (Image, JointState, CameraInfo...)."""
    if len(cdr) < 12:
        return None
    little = bool(cdr[1])
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", cdr, 4)
    return sec * 1_000_000_000 + nsec


@dataclass
class StreamStats:
    """Header-stamp gaps of one image stream -> dropped frame count."""

    fps: float
    count: int = 0
    dropped: int = 0
    last_stamp: int | None = None

    def add(self, stamp_ns: int | None) -> None:
        self.count += 1
        if stamp_ns is None or self.fps <= 0:
            return
        if self.last_stamp is not None and stamp_ns > self.last_stamp:
            periods = (stamp_ns - self.last_stamp) * self.fps / 1e9
            if periods > 1.5:
                self.dropped += int(round(periods)) - 1
        self.last_stamp = stamp_ns if self.last_stamp is None else max(stamp_ns, self.last_stamp)


@dataclass
class RateCounter:
    first_ns: int | None = None
    last_ns: int | None = None
    count: int = 0

    def add(self, t_ns: int) -> None:
        self.count += 1
        self.first_ns = t_ns if self.first_ns is None else min(t_ns, self.first_ns)
        self.last_ns = t_ns if self.last_ns is None else max(t_ns, self.last_ns)

    @property
    def hz(self) -> float | None:
        if self.count < 2 or self.last_ns is None or self.last_ns <= self.first_ns:
            return None
        return (self.count - 1) * 1e9 / (self.last_ns - self.first_ns)


def episode_dir(out_dir: str | Path, now: _dt.datetime | None = None) -> Path:
    """out_dir/episode_YYYYmmdd_HHMMSS[_n]: a new, unused directory name."""
    out = Path(out_dir).expanduser()
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d_%H%M%S")
    path, n = out / f"episode_{stamp}", 1
    while path.exists():
        path, n = out / f"episode_{stamp}_{n}", n + 1
    return path


class DiskTooFull(RuntimeError):
    pass


def check_disk(out_dir: str | Path, min_free_gb: float) -> float:
    """Free GB under out_dir; raises DiskTooFull below `min_free_gb` (the message says what to do)."""
    free = disk_free_bytes(Path(out_dir).expanduser()) / 1e9
    if free < min_free_gb:
        raise DiskTooFull(
            f"only {free:.2f} GB free under {out_dir} (< min_free_gb {min_free_gb}); free space or set "
            "recorder.out_dir to a larger disk"
        )
    return free


class Episode:
    """One recording: the writer, its writer thread, and the statistics that go into episode.yaml."""

    def __init__(
        self,
        writer: EpisodeWriter,
        expected_rates: dict[str, float],
        min_control_hz: float = 45.0,
        joint_state_topics: list[str] | None = None,
        max_backlog_bytes: int = 1 << 30,
        on_error=None,
    ) -> None:
        self.writer = writer
        self.expected_rates = dict(expected_rates)
        self.min_control_hz = min_control_hz
        self.joint_state_topics = list(joint_state_topics or [])
        self.max_backlog_bytes = max_backlog_bytes
        self.on_error = on_error  # called once, from the writer thread, with the error text
        self.streams: dict[str, StreamStats] = {}
        self.stamped: dict[str, RateCounter] = {}  # header-stamp rates per topic
        self.control = RateCounter()
        self.error: str | None = None
        self.backlog_dropped = 0  # messages not written because the writer fell > max_backlog_bytes behind
        self.max_backlog_seen = 0
        self.bytes_in = 0  # serialised bytes received for the episode
        self.bytes_written = 0  # of those, handed to the bag writer (its thread)
        self._backlog = 0
        self._last_ns = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name=f"writer {writer.bag_dir.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ subscription side (cheap)
    def add(self, topic: str, msgtype: str, cdr: bytes, now_ns: int) -> None:
        with self._lock:
            t = max(int(now_ns), self._last_ns)  # non-decreasing bag time
            self._last_ns = t
            if msgtype in STAMPED_TYPES:
                stamp = header_stamp_ns(cdr)
                if stamp:  # unstamped (0) messages are rated by bag time only
                    self.stamped.setdefault(topic, RateCounter()).add(stamp)
                if msgtype == "sensor_msgs/msg/Image" and topic in self.expected_rates:
                    stats = self.streams.setdefault(topic, StreamStats(self.expected_rates[topic]))
                    stats.add(stamp)
            self.bytes_in += len(cdr)
            if self.error is not None:
                return
            if self._backlog + len(cdr) > self.max_backlog_bytes:
                self.backlog_dropped += 1
                return
            self._backlog += len(cdr)
            self.max_backlog_seen = max(self.max_backlog_seen, self._backlog)
            self._queue.put((topic, msgtype, t, cdr))  # under the lock: queue order = bag time order

    def tick_control(self, now_ns: int, stamp_ns: int = 0) -> None:
        """One control-loop command seen (e.g. on rig.JOINT_COMMAND_TOPIC); its stamp if it has one."""
        with self._lock:
            self.control.add(int(stamp_ns or now_ns))

    # ------------------------------------------------------------------------- writer thread
    def _write_loop(self) -> None:
        period = max(0.01, self.writer.flush_interval_s)
        dirty = False
        while True:
            try:
                item = self._queue.get(timeout=period)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if item is not None:
                    topic, msgtype, t, cdr = item
                    with self._lock:
                        self._backlog -= len(cdr)
                    if self.error is None:
                        self.writer.write_raw(topic, msgtype, t, cdr)  # flushes by itself every flush interval
                        self.bytes_written += len(cdr)
                        dirty = True
                elif dirty and self.error is None:  # quiet stream: flush what is pending anyway
                    self.writer.flush()
                    dirty = False
            except OSError as exc:  # disk full, I/O error: stop writing, keep what is on disk
                self._fail(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a bad message: the episode cannot be trusted either
                self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, error: str) -> None:
        with self._lock:
            if self.error is not None:
                return
            self.error = error
        meta = self.quality()
        meta["flags"] = meta["flags"] + [FLAG_WRITE_ERROR]
        self.writer.close_incomplete(error, **meta)
        if self.on_error is not None:
            self.on_error(error)

    def finish(self, timeout: float = 60.0) -> None:
        """Write out everything queued and stop the writer thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def close(self, success: bool | None = None, extra_flags=()) -> dict:
        """Drain the queue, then finalise the bag (or return the incomplete episode's metadata)."""
        self.finish()
        if self.error is not None:
            return self.writer.metadata
        q = self.quality()
        q["flags"] = q["flags"] + [f for f in extra_flags if f not in q["flags"]]
        return self.writer.close(success=success, **q)

    def discard(self) -> None:
        with self._lock:
            self.error = self.error or "discarded"
        self.finish()
        self.writer.discard()

    def quality(self) -> dict:
        """Measured rates, dropped frames, control rate and flags for the metadata.

        Rates come from the messages' header stamps where they have them (the rate of the data
        itself: a recorder receiving in bursts under load does not change it), else bag time.
        """
        rates = self.writer.measured_rates()
        with self._lock:
            rates.update({t: c.hz for t, c in self.stamped.items() if c.hz is not None})
            control_hz = self.control.hz
            dropped = {t: s.dropped for t, s in self.streams.items()}
            backlog_dropped, max_backlog, bytes_in = self.backlog_dropped, self.max_backlog_seen, self.bytes_in
        if control_hz is None:  # no commands seen: the slowest follower joint-state stream
            js = [rates[t] for t in self.joint_state_topics if t in rates]
            control_hz = min(js) if js else None
        flags = []
        if control_hz is not None and control_hz < self.min_control_hz:
            flags.append(FLAG_SLOW_CONTROL)
        if any(dropped.values()):
            flags.append(FLAG_DROPPED)
        if backlog_dropped:
            flags.append(FLAG_BACKLOG)
        extras = {
            **self.writer.metadata.get("extras", {}),
            "recorder_backlog_dropped": backlog_dropped,
            "recorder_max_backlog_mb": round(max_backlog / 1e6, 1),
            "recorder_bytes_in": bytes_in,
            "recorder_bytes_written": self.bytes_written,
        }
        return {
            "rates": rates,
            "expected_rates": dict(self.expected_rates),
            "dropped_frames": dropped,
            "control_hz": control_hz,
            "flags": flags,
            "extras": extras,
        }


_STOP = object()
