"""The one `main()` of every clamp node: init, spin multi-threaded until SIGINT/SIGTERM, shut down cleanly.

rclpy's own signal handler would shut the context down before a node's shutdown step can still
publish (the arm driver's sleep pose, the recorder closing its bag), so signals are handled here.
Humble-compatible rclpy API only.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def spin_node(make_node: Callable[..., object], args=None, on_shutdown: Callable[[object], None] | None = None) -> None:
    """Run `make_node()` until SIGINT/SIGTERM (or its context shuts down), then `on_shutdown(node)`."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def _handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    node = make_node()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
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


def spin_until(executor, stop: threading.Event) -> None:
    """Spin `executor` in this thread until `stop` is set (errors after `stop` are shutdown noise)."""
    while not stop.is_set():
        try:
            executor.spin_once(timeout_sec=0.1)
        except Exception:
            if not stop.is_set():
                raise
            return
