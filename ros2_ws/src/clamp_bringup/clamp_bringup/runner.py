"""In-process runner: the clamp nodes of a profile's graph in one process (where `launch` is absent).

    python -m clamp_bringup.run --profile sim [--mode policy|teleop|record|arms] [--skip NODE ...]
                                [--only NODE ...] [--set NODE.PARAM=VALUE ...] [--duration S]

Starts exactly the NodeSpecs of clamp_bringup.graph.build_graph (the graph the launch files
launch), with the same parameters. Hardware nodes (xs_sdk, realsense2_camera, static TF) need the
robot and `ros2 launch clamp_bringup aloha.launch.py`; here they are refused with that advice.
`start_graph` is the same thing as a library call (tests use it); `spawn_graph` starts some of the
graph's nodes in a child process of their own (`python -m clamp_bringup.run --only ...`), so that a
caller can spread a graph over processes as `ros2 launch` does (make demo's closed loop).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from clamp_bringup.graph import Graph, NodeSpec


class RunnerError(RuntimeError):
    pass


def node_class(spec: NodeSpec):
    """Import the Python class of a clamp node (clear error naming the module when it is missing)."""
    if not spec.in_process:
        raise RunnerError(
            f"{spec.name} ({spec.package}/{spec.executable}) is a hardware driver: run it on the robot with "
            "`ros2 launch clamp_bringup aloha.launch.py`, or use --profile sim"
        )
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise RunnerError(
            f"cannot import {spec.module} for node {spec.name!r} ({exc}); build the workspace (make setup) or "
            f"leave it out with --skip {spec.name}"
        ) from exc
    try:
        return getattr(module, spec.cls)
    except AttributeError as exc:
        raise RunnerError(f"{spec.module} has no class {spec.cls} (node {spec.name!r})") from exc


def parameter_overrides(params: dict) -> list:
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in params.items()]


@dataclass
class RunningGraph:
    graph: Graph
    context: object
    executor: object
    nodes: dict = field(default_factory=dict)
    own_context: bool = False
    own_executor: bool = False

    def stop(self) -> None:
        recorder = self.nodes.get("recorder")
        if recorder is not None:
            recorder.shutdown()  # close a running episode properly
        for node in self.nodes.values():
            self.executor.remove_node(node)  # a NodeExecutors joins the node's thread: never destroy under it
            node.destroy_node()
        self.nodes.clear()
        if self.own_context:
            import rclpy

            try:
                rclpy.shutdown(context=self.context)
            except Exception as exc:  # a node that failed half-way in __init__ may not destroy cleanly
                print(f"warning: while shutting down: {exc!r}", flush=True)
        if self.own_executor:  # a caller's executor stays theirs
            self.executor.shutdown(timeout_sec=1.0)


def start_graph(
    graph: Graph,
    *,
    context=None,
    executor=None,
    skip=(),
    only=(),
    overrides: dict[str, dict] | None = None,
) -> RunningGraph:
    """Create the graph's in-process nodes in `context` (a new one if None) and spin them.

    With an `executor` given (e.g. the test harness's) the nodes are added to it; otherwise each
    node is spun by its own executor thread (clamp_core.ros.NodeExecutors), as separate processes
    under `ros2 launch` would be. (No node does heavy work in its callbacks: the perception node
    renders on a thread of its own, so its /tf is read as it arrives.)
    """
    import rclpy
    from clamp_core.ros import NodeExecutors

    unknown = sorted((set(skip) | set(only)) - set(graph.names))
    if unknown:
        raise RunnerError(f"unknown node(s) {unknown}; the {graph.mode} graph has {graph.names}")
    specs = [n for n in graph.nodes if n.name not in skip and (not only or n.name in only)]
    classes = {s.name: node_class(s) for s in specs}  # import everything before starting anything
    own = context is None
    if own:
        context = rclpy.Context()
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    spin_own = executor is None
    if spin_own:
        executor = NodeExecutors(context)
    running = RunningGraph(graph, context, executor, own_context=own, own_executor=spin_own)
    try:
        for s in specs:
            params = {**s.parameters, **(overrides or {}).get(s.name, {})}
            try:
                node = classes[s.name](context=context, parameter_overrides=parameter_overrides(params))
            except Exception as exc:
                raise RunnerError(f"node {s.name!r} ({s.module}:{s.cls}) did not start: {exc}") from exc
            running.nodes[s.name] = node
            executor.add_node(node)
    except Exception:
        running.stop()
        raise
    return running


def spawn_graph(profile: str, mode: str, only, overrides: dict[str, dict] | None = None, log=None) -> subprocess.Popen:
    """Start the nodes `only` of the same graph in a child process (`python -m clamp_bringup.run`).

    `ros2 launch` gives every node a process; here this spreads a graph over the cores instead of one
    Python interpreter (whose GIL let the demo's one-process loop use a single core). The child stops
    when its parent ends. Stop it with `stop_process`. `log`: a file for its output.
    """
    cmd = [
        sys.executable,
        "-m",
        "clamp_bringup.run",
        "--profile",
        profile,
        "--mode",
        mode,
        "--parent-pid",
        str(os.getpid()),
    ]
    cmd += ["--only", *only]
    sets = [f"{node}.{k}={json.dumps(v)}" for node, params in (overrides or {}).items() if node in only
            for k, v in params.items()]  # fmt: skip
    if sets:
        cmd += ["--set", *sets]  # JSON values read back by yaml.safe_load: types survive (1.0 stays a float)
    out = log if log is not None else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGINT (the runner's clean stop), then SIGKILL after `timeout` seconds; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
