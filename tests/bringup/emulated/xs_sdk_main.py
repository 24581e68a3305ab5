"""Run one XsSdkEmulator as its own process (as xs_sdk runs); on SIGINT/SIGTERM it exits at once
(like xs_sdk) and writes its last joint positions to --state-file (for the Ctrl-C order tests).

    python tests/bringup/emulated/xs_sdk_main.py ROBOT_NAME MOTOR_CONFIGS MODE_CONFIGS STATE_FILE [START7...]
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from emulated.xs_sdk import XsSdkEmulator

    name, motors, modes, state_file, *start = sys.argv[1:]
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = XsSdkEmulator(name, motors, modes, [float(v) for v in start] or None)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
    Path(state_file).write_text(json.dumps({"q": node.state7().tolist(), "t": time.time()}))
    executor.shutdown(timeout_sec=0.5)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
