"""`python -m clamp_bringup.run`: the node graph of a profile in one process (see clamp_bringup.runner).

python -m clamp_bringup.run --profile sim [--mode policy|teleop|record|arms] [--skip NODE ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

import yaml
from clamp_core.ros import freeze_startup_objects

from clamp_bringup.graph import MODES, build_graph
from clamp_bringup.runner import RunnerError, start_graph


def _parse_set(items) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set expects NODE.PARAM=VALUE, got {item!r}")
        out.setdefault(node, {})[param] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_bringup.run", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="sim", help="profile name (config/profiles) or path to a .yaml")
    ap.add_argument("--mode", default="policy", choices=MODES)
    ap.add_argument("--skip", nargs="*", default=[], help="nodes to leave out")
    ap.add_argument("--only", nargs="*", default=[], help="start only these nodes")
    ap.add_argument("--set", nargs="*", default=[], metavar="NODE.PARAM=VALUE", help="parameter overrides")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)")
    ap.add_argument("--print", action="store_true", help="print the graph and exit")
    ap.add_argument("--parent-pid", type=int, default=0, help="stop when this process (the one starting this) ends")
    a = ap.parse_args(argv)
    graph = build_graph(a.profile, a.mode)
    if a.print:
        for inc in graph.includes:
            print(f"include {inc.package}/{inc.launch_file} {inc.arguments}")
        for n in graph.nodes:
            where = f"{n.module}:{n.cls}" if n.in_process else f"{n.package}/{n.executable} (hardware)"
            print(f"node {n.namespace + '/' if n.namespace else ''}{n.name}: {where} {n.parameters}")
        return 0
    if graph.includes or any(not n.in_process for n in graph.nodes):
        hw = [i.name for i in graph.includes] + [n.name for n in graph.nodes if not n.in_process]
        raise SystemExit(
            f"profile {graph.profile['name']!r} needs hardware drivers {hw}: use `ros2 launch clamp_bringup "
            "aloha.launch.py` on the robot (or --profile sim here)"
        )
    try:
        running = start_graph(graph, skip=a.skip, only=a.only, overrides=_parse_set(a.set))
    except RunnerError as exc:
        raise SystemExit(f"error: {exc}") from None
    freeze_startup_objects()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"running {list(running.nodes)} ({graph.profile['name']}, {graph.mode}); Ctrl-C stops", flush=True)
    t0 = time.monotonic()
    while not stop.wait(0.2):
        if a.duration and time.monotonic() - t0 >= a.duration:
            break
        if a.parent_pid and os.getppid() != a.parent_pid:  # orphaned: never keep publishing on the domain
            break
    driver = running.nodes.get("arm_driver")
    if driver is not None:
        driver.go_to_sleep()
    running.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
