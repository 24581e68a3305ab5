"""The ROS helpers every clamp node shares, each defined once (Humble-compatible rclpy API only).

- QoS: `latched_publisher_qos()` / `latched_subscriber_qos()` (RELIABLE + TRANSIENT_LOCAL, for latched
  topics such as /tf_static, /clamp/task, the driver state), `reliable_qos()`, `best_effort_qos()`,
  `sensor_qos()`;
- `spin_node` / `spin_until` / `make_executor`: the one `main()` of every node. rclpy's own signal handler would shut
  the context down before a node's shutdown step can still publish (the arm driver's sleep pose,
  the recorder closing its bag), so signals are handled here;
- `publish_status`: one /diagnostics DiagnosticStatus;
- time: `stamp_to_s`, `s_to_stamp`, `duration_to_s`, `now_s`;
- parameters: `declare_profile`, `load_profile_section`, `declare_dataclass_params`;
- `call_service`, `msg_class`, `positions_by_name`, `state14`.

rclpy and message packages are imported inside the functions, so this module imports without ROS.
"""

from __future__ import annotations

import dataclasses
import gc
import signal
import threading
from collections.abc import Callable

import numpy as np

from clamp_core import rig
from clamp_core.profile import load_profile


# ------------------------------------------------------------------------------------------- QoS
def latched_publisher_qos():
    """RELIABLE + TRANSIENT_LOCAL, depth 1: a late-joining subscriber still gets the last message."""
    return _latched(1)


def latched_subscriber_qos():
    """The matching subscription. Deep, because one latched topic may have many publishers (on the
    robot /tf_static comes from every camera driver and static_transform_publisher)."""
    return _latched(100)


def _latched(depth: int):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def reliable_qos(depth: int = 10):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def best_effort_qos(depth: int = 10):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT)


def sensor_qos():
    """BEST_EFFORT, shallow: a subscription with it matches both reliable and best-effort publishers."""
    from rclpy.qos import qos_profile_sensor_data

    return qos_profile_sensor_data


# ------------------------------------------------------------------------------------ node main
def freeze_startup_objects() -> None:
    """Collect once, then move every object alive after start-up out of the collector's reach (gc.freeze).

    A node process holds a few hundred thousand long-lived objects (rclpy, numpy, torch, the message
    types); each full collection scanned them all: 100-190 ms pauses in make demo's process (measured with
    gc.callbacks), long enough for the 50 Hz chunk executor to miss ticks and to see stale joint states.
    Objects made later are still collected; call it when a process has finished starting.
    """
    gc.collect()
    gc.freeze()


def spin_node(make_node: Callable[..., object], args=None, on_shutdown: Callable[[object], None] | None = None) -> None:
    """Run `make_node()` until SIGINT/SIGTERM (or its context shuts down), then `on_shutdown(node)`."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def _handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    node = make_node()
    executor = make_executor(node)
    executor.add_node(node)
    freeze_startup_objects()
    spinner = threading.Thread(target=spin_until, args=(executor, stop), daemon=True)
    spinner.start()
    try:
        while not stop.wait(0.2):
            if not spinner.is_alive():
                break
        if on_shutdown is not None:
            on_shutdown(node)
    except ExternalShutdownException:
        pass
    finally:
        stop.set()
        spinner.join(timeout=5.0)  # never tear down under a spinning thread (C++ terminate)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def make_executor(node, context=None):
    """The executor for one node: single-threaded unless the node has callback groups of its own.

    rclpy's MultiThreadedExecutor costs ~3x the CPU per message of the SingleThreadedExecutor (a
    thread-pool future per callback, all threads contending for the GIL; measured by
    `python -m clamp_bringup.bench --executors`). On a loaded 2-core machine that overhead is what
    made nodes fall behind and lose 50-75% of their messages from KEEP_LAST queues. Only nodes that
    put callbacks in separate groups (so a slow one does not block the others) need threads.
    """
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    entities = [*node.subscriptions, *node.timers, *node.services, *node.clients, *node.waitables]
    groups = len({id(e.callback_group) for e in entities} | {id(node.default_callback_group)})
    if groups <= 1:
        return SingleThreadedExecutor(context=context)
    return MultiThreadedExecutor(num_threads=groups, context=context)


class NodeExecutors:
    """Executor-like (add_node / remove_node / shutdown): each node spun by its own executor thread
    (`make_executor`), so several nodes in one process neither share a thread pool nor wait on
    each other's callbacks. A callback that raises does not stop its node: `on_error(traceback)`.
    """

    def __init__(self, context, on_error: Callable[[str], None] | None = None) -> None:
        self.context = context
        self.on_error = on_error or (lambda tb: print(tb, flush=True))
        self._spun: dict[int, tuple[object, threading.Event, threading.Thread, object]] = {}
        self._lock = threading.Lock()

    def add_node(self, node) -> bool:
        executor = make_executor(node, context=self.context)
        executor.add_node(node)
        stop = threading.Event()
        thread = threading.Thread(target=self._spin, args=(executor, stop), name=f"spin {node.get_name()}", daemon=True)
        with self._lock:
            self._spun[id(node)] = (executor, stop, thread, node)
        thread.start()
        return True

    def _spin(self, executor, stop: threading.Event) -> None:
        import traceback

        while self.context.ok() and not stop.is_set():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:
                if not self.context.ok() or stop.is_set():
                    return
                self.on_error(traceback.format_exc())

    def remove_node(self, node) -> None:
        """Stop spinning `node` (joins its thread first: nothing is destroyed under a waiting executor)."""
        with self._lock:
            entry = self._spun.pop(id(node), None)
        if entry is None:
            return
        executor, stop, thread, _ = entry
        stop.set()
        thread.join(timeout=5.0)
        executor.remove_node(node)
        executor.shutdown(timeout_sec=0.5)

    def get_nodes(self) -> list:
        """The nodes being spun (what a caller must still remove and destroy)."""
        with self._lock:
            return [entry[3] for entry in self._spun.values()]

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        with self._lock:
            entries = list(self._spun.values())
            self._spun.clear()
        for _, stop, _, _ in entries:
            stop.set()
        for executor, _, thread, _ in entries:
            thread.join(timeout=5.0)
            executor.shutdown(timeout_sec=0.5)
        return True


def spin_until(executor, stop: threading.Event) -> None:
    """Spin `executor` in this thread until `stop` is set (errors after `stop` are shutdown noise)."""
    while not stop.is_set():
        try:
            executor.spin_once(timeout_sec=0.1)
        except Exception:
            if not stop.is_set():
                raise
            return


# ------------------------------------------------------------------------------------ diagnostics
def publish_status(node, publisher, name: str, level, message: str, values: dict, hardware_id: str = "aloha") -> None:
    """One /diagnostics status for `node`: every entry of `values` as a key/value pair."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()],
    )
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(arr)


# ------------------------------------------------------------------------------------------ time
def stamp_to_s(stamp) -> float:
    """builtin_interfaces/Time or Duration -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


duration_to_s = stamp_to_s


def s_to_stamp(t: float):
    from builtin_interfaces.msg import Time

    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def now_s(node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


# ------------------------------------------------------------------------------------ parameters
def declare_profile(node) -> dict:
    """Declare the `profile` parameter (name or path; default 'sim') and load that profile."""
    name = node.declare_parameter("profile", "sim").value
    return load_profile(name)


def load_profile_section(profile: str, section: str, sub: str) -> tuple[dict | None, dict]:
    """(whole profile or None, profile[section][sub] or {}) for a profile name/path ('' = none)."""
    if not profile:
        return None, {}
    prof = load_profile(profile)
    return prof, dict(prof.get(section, {}).get(sub, {}) or {})


def declare_dataclass_params(node, cls, overrides: dict, skip: tuple[str, ...] = ()) -> dict:
    """Declare one ROS parameter per dataclass field and return {field: value}.

    Defaults come from `overrides` (the robot profile) else the field's default. Optional
    sequences (e.g. a pose) are string parameters holding comma-separated numbers ('' = None),
    because an empty ROS array parameter has no type on Humble.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    values = {}
    for name, f in fields.items():
        default = overrides.get(name, f.default)
        if f.default is None or isinstance(f.default, (list, tuple)):
            text = default if isinstance(default, str) else ",".join(str(float(v)) for v in (default or []))
            text = node.declare_parameter(name, text).value
            values[name] = [float(v) for v in text.split(",")] if text.strip() else None
        elif isinstance(f.default, bool):
            values[name] = bool(node.declare_parameter(name, bool(default)).value)
        elif isinstance(f.default, float):
            values[name] = float(node.declare_parameter(name, float(default)).value)
        else:
            values[name] = node.declare_parameter(name, type(f.default)(default)).value
    return values


# ---------------------------------------------------------------------------------------- misc
def call_service(node, client, request, timeout: float) -> object:
    """Call a service from a non-executor thread; the node must be spun elsewhere. Raises on timeout."""
    if not client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"service {client.srv_name} not available after {timeout:.1f}s")
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout):
        raise TimeoutError(f"service {client.srv_name} did not answer within {timeout:.1f}s")
    return future.result()


def msg_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class (clear error when the package is missing)."""
    import importlib

    pkg, sub, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"message type {msgtype} is not available; install/source the {pkg} package") from exc


def positions_by_name(msg) -> dict[str, float]:
    return dict(zip(msg.name, msg.position, strict=False))


def state14(latest: dict[str, dict[str, float]], arms, gripper: rig.GripperCalibration) -> np.ndarray | None:
    """14-D state from the latest joint states of `arms`, or None until both arrived."""
    if not all(a in latest for a in arms):
        return None
    return rig.state_from_joint_states(latest, tuple(arms), gripper)
