"""`make demo`: a CLAMP policy from the project's own pipeline, run closed-loop on the simulated ALOHA.

    python -m clamp_demo [--episodes N] [--seed S] [--task TASK] [--policy DIR] [--out DIR] [--rebuild]
                         [--build-only] [--config demo.yaml]
    make demo ARGS="--episodes 5 --seed 7"

1. Build (first run; cached in `.build/demo/<key>/policy`, key = the build sections of demo.yaml, the
   training config's text and a hash of the simulator / perception / training code): scripted
   demonstrations of the demo task (clamp_sim.generate) -> conversion with the CLAMP views and colour
   images (clamp_training.convert) -> fine-tuning of the shipped CLAMP checkpoint (models/clamp_cpu,
   its encoder frozen; clamp_training.train with `train.config`) -> export (checksum-verified
   clamp_policy checkpoint). Episodes are shared with `python -m clamp_training experiment`
   (`data_cache`). demo.yaml names the colour-only recipe from scratch as the alternative.
2. Closed loop over real DDS: the sim profile's policy graph (clamp_bringup.graph, the graph the
   launch files start), started with clamp_bringup.runner.start_graph, each node on its own executor
   thread (clamp_core.ros.NodeExecutors) as `python -m clamp_bringup.run` spins them: SimNode ->
   PerceptionNode -> InferenceNode (the exported policy) -> ChunkExecutorNode -> ArmDriverNode -> SimNode. Each episode
   is a fresh bring-up with the episode's seed (clamp_sim's /clamp_sim/reset restarts sim time at 0,
   which sim-time nodes do not follow), runs `horizon_s` of sim time under the policy or until
   /clamp_sim/success, and is recorded by a probe node: /clamp/views snapshots, the commanded targets
   (rig.JOINT_COMMAND_TOPIC) and the followers' joint states, action chunks and /diagnostics.
3. Report in OUT (default out/demo): report.md (success table, latency figures, stage timings, a
   cam_high filmstrip per episode), views.png (the five views over an episode, when perception
   published them), joints.png (commanded vs executed joints), results.json. The last line printed
   is one JSON object {"task", "episodes", "successes", ...}.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BUILD_SECTIONS = ("task", "data", "train")


class DemoError(RuntimeError):
    """A problem the user can fix; the message says how."""


# ------------------------------------------------------------------------------------------ config
def repo_root() -> Path:
    env = os.environ.get("CLAMP_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2]  # demo/clamp_demo/demo.py


def default_config_path() -> Path:
    here = Path(__file__).resolve().parent.parent / "demo.yaml"
    if here.is_file():
        return here
    raise DemoError(f"{here} not found; run from the source tree (make setup installs clamp_demo editable)")


def load_demo_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict:
    from clamp_core.config import ConfigError, deep_merge, read_yaml

    p = Path(path) if path else default_config_path()
    try:
        cfg = read_yaml(p, "demo config")
    except ConfigError as exc:
        raise DemoError(str(exc)) from exc
    required = ("task", "out", "cache", "data_cache", "data", "train", "closed_loop")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise DemoError(f"{p}: missing key(s) {missing}; start from demo/demo.yaml")
    cfg = deep_merge(cfg, overrides)
    from clamp_sim.tasks import TASKS

    if cfg["task"] not in TASKS:
        raise DemoError(f"task {cfg['task']!r} is not a clamp_sim task; choose one of {sorted(TASKS)}")
    from clamp_bringup.graph import build_graph

    names = [n for n in build_graph("sim", "policy").names if n != "arm_driver"]  # the demo watches the driver
    apart = [n for g in process_groups(cfg["closed_loop"]) for n in g]
    if set(apart) - set(names) or len(apart) != len(set(apart)):
        raise DemoError(f"{p}: closed_loop.processes {apart}: each of {names} at most once")
    cfg["config_path"] = str(p)
    return cfg


def process_groups(cl: dict) -> list[tuple[str, ...]]:
    """closed_loop.processes: the groups of nodes that run in processes of their own."""
    return [tuple(g) for g in cl.get("processes") or ()]


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


# ------------------------------------------------------------------------------------------- build
def _train_config_file(cfg: dict) -> Path:
    f = _resolve(cfg["train"]["config"])
    if not f.is_file():
        raise DemoError(f"train.config {f} not found; point it at a training config (training/configs/*.yaml)")
    return f


def _train_config(cfg: dict):
    """The training config the build uses (TrainConfig), checked against the data section."""
    from clamp_core.config import ConfigError
    from clamp_training.train import build_config

    try:
        tcfg = build_config("default", str(_train_config_file(cfg)), dict(cfg["train"].get("overrides") or {}))
    except ConfigError as exc:
        raise DemoError(str(exc)) from exc
    if tcfg.stage == "finetune" and not cfg["data"].get("views", False):
        raise DemoError(
            f"train.config {cfg['train']['config']} fine-tunes a CLAMP checkpoint, whose encoder reads the views: "
            "set data.views: true in the demo config"
        )
    return tcfg


def _checkpoint_digest(tcfg) -> str | None:
    """The weights' sha256 of the CLAMP checkpoint a finetune recipe starts from (part of the build key:
    a re-made checkpoint rebuilds the policy); None for other stages."""
    if tcfg.stage != "finetune":
        return None
    from clamp_policy.models.checkpoint import read_config
    from clamp_training.stages import resolve_init

    try:
        return read_config(resolve_init(tcfg.finetune.clamp_checkpoint))[1].get("weights_sha256")
    except FileNotFoundError as exc:
        raise DemoError(str(exc)) from exc


def build_key(cfg: dict) -> str:
    from clamp_training.experiment import code_digest, digest

    recipe = _train_config_file(cfg).read_text()
    parts = [{k: cfg[k] for k in BUILD_SECTIONS}, recipe, code_digest("data"), code_digest("train")]
    checkpoint = _checkpoint_digest(_train_config(cfg))
    if checkpoint:  # (only then: the keys of builds without a checkpoint stay as they were)
        parts.append(checkpoint)
    return digest(*parts)


def build_policy(cfg: dict, rebuild: bool = False, progress: bool = True) -> tuple[Path, dict]:
    """The exported demo policy (built once per key); returns (policy dir, build record)."""
    from clamp_training.experiment import Stages, episode_datasets
    from clamp_training.train import train

    key = build_key(cfg)  # (checks the training config before anything is generated)
    root = _resolve(cfg["cache"]) / key
    record_file = root / "build.json"
    if record_file.is_file() and (root / "policy" / "config.json").is_file() and not rebuild:
        record = json.loads(record_file.read_text())
        print(f"policy: reusing {root / 'policy'} (built {record.get('built_at', '?')} in "
              f"{record.get('total_s', 0) / 60:.1f} min; --rebuild to build it again)", flush=True)  # fmt: skip
        return root / "policy", {**record, "cached": True}
    if rebuild:
        shutil.rmtree(root, ignore_errors=True)
    d, tr = cfg["data"], cfg["train"]
    print(f"policy: building {root / 'policy'} (first run: scripted demos -> training with {tr['config']})")
    stages = Stages(prefix="[build] ")
    t0 = time.perf_counter()
    with stages.stage("demonstrations", f"{d['episodes']} scripted episodes of {cfg['task']}"):
        data = episode_datasets(
            cfg["task"],
            int(d["episodes"]),
            int(d["seed"]),
            image_size=d["image_size"],
            camera_hz=float(d["camera_hz"]),
            cache=_resolve(cfg["data_cache"]),
            workers=int(d.get("workers", 2)),
            progress=progress,
            require_success=bool(d.get("require_success", True)),
            views=bool(d.get("views", False)),
        )
    with stages.stage("train", f"{len(data)} {cfg['task']} demonstrations"):
        tcfg = _train_config(cfg)
        run = root / "train"
        summary = train(tcfg, [str(p) for p in data], run, progress=progress)
    with stages.stage("export", "checksum-verified policy checkpoint"):
        policy_dir = export_policy(run / "policy", root / "policy")
    record = {
        "key": key,
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "stage_s": {k: round(v, 1) for k, v in stages.times.items()},
        "stage_cached": stages.cached,
        "total_s": round(time.perf_counter() - t0, 1),
        "train": summary,
        "episodes": {"train": len(data)},
        "config": {k: cfg[k] for k in BUILD_SECTIONS},
    }
    (root / "build.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return policy_dir, {**record, "cached": False}


def check_policy_dir(path: str | os.PathLike) -> Path:
    """A `--policy` dir that the inference node will load (checked before any bring-up)."""
    from clamp_policy.models.checkpoint import CheckpointError, load_policy

    p = Path(path).expanduser().resolve()
    fix = "give an exported policy dir (`python -m clamp_training export RUN --out DIR`) or omit --policy to build one"
    if not p.is_dir():
        raise DemoError(f"--policy {path}: no such directory; {fix}")
    if not (p / "config.json").is_file():
        raise DemoError(f"--policy {path}: no config.json in it, not an exported policy; {fix}")
    try:
        load_policy(p)  # checksum, and config and weights against this code
    except CheckpointError as exc:
        raise DemoError(f"--policy {path} does not load: {exc}") from exc
    return p


def export_policy(src: Path, dst: Path) -> Path:
    """Copy the fine-tuned policy and prove it loads (checksum, strict config) and samples a chunk."""
    import torch
    from clamp_policy.inference import PolicyRunner
    from clamp_policy.models.checkpoint import load_policy

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    runner = PolicyRunner(load_policy(tmp), num_inference_steps=2)  # checks the policy fits the rig
    with torch.inference_mode():
        chunk = runner.infer(runner.dummy_observation()).chunk
    if not np.all(np.isfinite(chunk)):
        raise DemoError(f"the exported policy {src} produces non-finite actions; rebuild with --rebuild")
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


# ------------------------------------------------------------------------------------------- probe
def _parse_value(v: str):
    try:
        return float(v)
    except ValueError:
        pass
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


@dataclass
class EpisodeLog:
    """What the probe saw over DDS during one episode (sim-time stamps unless named wall)."""

    clock: float = 0.0
    success_at: float | None = None
    commands: list = field(default_factory=list)  # (stamp, 14 positions)
    command_wall: list = field(default_factory=list)  # monotonic receipt times
    states: list = field(default_factory=list)  # (stamp, 14-D state)
    chunk_ages: list = field(default_factory=list)  # clock at receipt - chunk stamp (observation time)
    view_ages: list = field(default_factory=list)  # clock at receipt - views stamp
    views: int = 0
    snapshots: list = field(default_factory=list)  # (stamp, (224, 1120, 4) float32)
    filmstrip: list = field(default_factory=list)  # (stamp, cam_high colour image (h, w, 3) uint8)
    diagnostics: dict = field(default_factory=dict)  # status name -> (level, message, {key: value})


def make_probe(context, log: EpisodeLog, snapshot_times: list[float], lock: threading.Lock):
    """A node that records the loop: success, clock, views snapshots, commands, states, chunks, diagnostics."""
    from clamp_core import rig
    from clamp_core.msg_conversions import image_to_numpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool
    from trajectory_msgs.msg import JointTrajectory

    node = Node("clamp_demo_probe", context=context)
    from clamp_core.ros import stamp_to_s as s

    latest: dict[str, dict] = {}
    pending = list(snapshot_times)
    pending_rgb = list(snapshot_times)

    def on_clock(msg):
        log.clock = max(log.clock, s(msg.clock))

    def on_success(msg):
        if msg.data and log.success_at is None and log.commands:  # only once the policy is in charge
            log.success_at = log.clock

    def on_views(msg):
        t = s(msg.header.stamp)
        with lock:
            log.views += 1
            log.view_ages.append(log.clock - t)
            take = bool(pending) and bool(log.commands) and t >= log.commands[0][0] + pending[0]
            if take:
                pending.pop(0)
        if take:
            arr = image_to_numpy(msg)
            with lock:
                log.snapshots.append((t, arr))

    def on_cam_high(msg):
        t = s(msg.header.stamp)
        with lock:
            take = bool(pending_rgb) and bool(log.commands) and t >= log.commands[0][0] + pending_rgb[0]
            if take:
                pending_rgb.pop(0)
        if take:
            img = np.array(image_to_numpy(msg)[..., :3])
            with lock:
                log.filmstrip.append((t, img))

    def on_command(msg):
        if list(msg.name) != list(rig.ACTION_NAMES):
            return
        with lock:
            log.commands.append((s(msg.header.stamp), np.array(msg.position)))
            log.command_wall.append(time.monotonic())

    def on_state(arm, msg):
        latest[arm] = dict(zip(msg.name, msg.position, strict=False))
        if arm == rig.FOLLOWERS[1] and rig.FOLLOWERS[0] in latest:
            with lock:
                log.states.append((s(msg.header.stamp), rig.state_from_joint_states(latest)))

    def on_chunk(msg):
        with lock:
            log.chunk_ages.append(log.clock - s(msg.header.stamp))

    def on_diag(msg):
        for st in msg.status:
            values = {kv.key: _parse_value(kv.value) for kv in st.values}
            with lock:
                level = st.level if isinstance(st.level, int) else int.from_bytes(st.level, "little")
                log.diagnostics[st.name] = (level, st.message, values)

    best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(Clock, "/clock", on_clock, best_effort)
    node.create_subscription(Bool, "/clamp_sim/success", on_success, 10)
    node.create_subscription(Image, rig.VIEWS_TOPIC, on_views, 2)
    node.create_subscription(Image, rig.color_topic("cam_high"), on_cam_high, best_effort)
    node.create_subscription(JointState, rig.JOINT_COMMAND_TOPIC, on_command, 100)
    for arm in rig.FOLLOWERS:
        node.create_subscription(JointState, rig.joint_states_topic(arm), lambda m, a=arm: on_state(a, m), 100)
    node.create_subscription(JointTrajectory, rig.ACTION_CHUNK_TOPIC, on_chunk, 10)
    node.create_subscription(DiagnosticArray, rig.DIAGNOSTICS_TOPIC, on_diag, 20)
    return node


# ------------------------------------------------------------------------------------- closed loop
def _wait(cond, timeout: float, what: str, check=None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


INFERENCE_STATUS = "clamp_policy: inference"


class _Children:
    """Node processes of one episode (`python -m clamp_bringup.run --only ...`), their output kept for errors."""

    def __init__(self) -> None:
        self.procs: list[tuple[tuple, object, object]] = []  # (node names, Popen, log file)

    def spawn(self, names: tuple, overrides: dict) -> None:
        from clamp_bringup.runner import spawn_graph

        log = tempfile.TemporaryFile(mode="w+")
        self.procs.append((names, spawn_graph("sim", "policy", names, overrides, log=log), log))

    def check(self) -> None:
        for names, proc, log in self.procs:
            if proc.poll() is not None:
                log.seek(0)
                tail = "".join(log.readlines()[-15:])
                raise DemoError(f"the process running {list(names)} ended (exit {proc.returncode}):\n{tail}")

    def stop(self) -> None:
        from clamp_bringup.runner import stop_process

        for _, proc, log in self.procs:
            stop_process(proc)
            log.close()
        self.procs.clear()


def run_episode(policy_dir: Path, task: str, seed: int, cl: dict, progress: bool = True) -> dict:
    """One closed-loop episode over DDS: fresh graph with `seed`, the policy in charge for horizon_s."""
    import rclpy
    from clamp_bringup.graph import build_graph
    from clamp_bringup.runner import start_graph
    from clamp_core.ros import NodeExecutors, freeze_startup_objects
    from rclpy.signals import SignalHandlerOptions
    from tqdm import tqdm

    horizon, n_snap = float(cl["horizon_s"]), int(cl.get("snapshots", 4))
    snap_times = [horizon * i / max(n_snap - 1, 1) for i in range(n_snap)]
    snap_times[-1] = horizon * 0.97  # the last frame before the episode ends
    log, lock = EpisodeLog(), threading.Lock()
    graph = build_graph("sim", "policy")
    overrides = {
        "sim": {**cl.get("sim", {}), "task": task, "seed": int(seed)},
        "inference": {**cl.get("inference", {}), "checkpoint": str(policy_dir)},
        "chunk_executor": dict(cl.get("chunk_executor") or {}),
        "perception": dict(cl.get("perception") or {}),
    }
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    # each node on its own single-threaded executor thread, as clamp_bringup.run and the tests spin them
    # (one MultiThreadedExecutor for all of them lost high-rate messages under load; issue 17)
    errors: list[str] = []  # tracebacks of callbacks that raised (the node keeps spinning; the episode stops)

    def on_error(tb: str) -> None:
        print(tb, file=sys.stderr, flush=True)
        errors.append(tb)

    executor = NodeExecutors(context, on_error=on_error)
    probe = make_probe(context, log, snap_times, lock)
    executor.add_node(probe)
    running, t_wall0 = None, time.monotonic()
    # nodes in processes of their own, as `ros2 launch` runs them (in one process every node shared one core)
    groups = process_groups(cl)
    apart = {name for g in groups for name in g}
    policy_nodes = ("inference", "chunk_executor")
    children = _Children()
    out: dict = {"seed": int(seed), "task": task}
    try:
        # bring-up first (sim, driver to its start pose, perception), then the policy, as an operator would
        for g in groups:
            if not set(g) & set(policy_nodes):
                children.spawn(g, overrides)
        running = start_graph(graph, context=context, executor=executor, overrides=overrides,
                              skip=(*policy_nodes, *apart))  # fmt: skip
        driver = running.nodes["arm_driver"]

        def no_callback_errors():
            if errors:
                last = errors[0].strip().splitlines()[-1]
                raise DemoError(f"a node's callback raised ({last}); its traceback is printed above")
            children.check()

        bringup = float(cl["bringup_timeout_s"])
        _wait(lambda: driver.core.state == "ready", bringup, "the arm driver at its start pose", no_callback_errors)
        _wait(lambda: log.views > 0, bringup, "/clamp/views from the perception node", no_callback_errors)
        freeze_startup_objects()  # before the policy moves the arm: no 100-200 ms full collections here after
        for g in groups:
            if set(g) & set(policy_nodes):
                children.spawn(g, overrides)
        policy = start_graph(graph, context=context, executor=executor, overrides=overrides,
                             only=tuple(n for n in policy_nodes if n not in apart))  # fmt: skip
        running.nodes.update(policy.nodes)

        def node_stats(name: str, status: str) -> dict:
            """A node's stats: in this process from the node, from its /diagnostics in another."""
            if name in running.nodes:
                return running.nodes[name].stats()
            with lock:
                return dict(log.diagnostics.get(status, (None, None, {}))[2])

        def healthy():
            no_callback_errors()
            inference = running.nodes.get("inference")
            if inference is not None and inference.last_error and not inference.ready:
                raise DemoError(f"the inference node failed: {inference.last_error}")
            with lock:
                level, message, _ = log.diagnostics.get(INFERENCE_STATUS, (0, "", {}))
            if level >= 2:  # ERROR: the policy cannot run (bad checkpoint, inputs it cannot use)
                raise DemoError(f"the inference node failed: {message}")

        timeout = float(cl["timeout_s"])
        _wait(lambda: bool(log.commands), timeout - (time.monotonic() - t_wall0), "the first command", healthy)
        t_start = log.commands[0][0]
        out["bringup_wall_s"] = time.monotonic() - t_wall0
        # progress in 0.1 s ticks of sim time, displayed as seconds (unit_scale)
        bar = tqdm(total=round(horizon * 10), desc=f"episode seed {seed}", unit="sim s", unit_scale=0.1,
                   disable=not progress)  # fmt: skip
        t_policy_wall, shown = time.monotonic(), 0
        while True:
            elapsed = log.clock - t_start
            ticks = int(min(elapsed, horizon) * 10)
            if ticks > shown:
                bar.update(ticks - shown)
                shown = ticks
            if log.success_at is not None:
                bar.set_postfix(success=True)
                break
            if elapsed >= horizon:
                break
            if time.monotonic() - t_wall0 > timeout:
                out["timed_out"] = True
                break
            healthy()
            time.sleep(0.05)
        bar.close()
        policy_sim_s, policy_wall_s = log.clock - t_start, time.monotonic() - t_policy_wall
        time.sleep(1.2)  # one more /diagnostics period from every node
        out.update(
            success=log.success_at is not None,
            time_to_success_s=None if log.success_at is None else log.success_at - t_start,
            policy_sim_s=policy_sim_s,
            policy_wall_s=policy_wall_s,
            # sim time per wall time while the policy ran: below rate_factor when the sim could not keep up
            sim_rate_achieved=policy_sim_s / max(policy_wall_s, 1e-9),
            wall_s=time.monotonic() - t_wall0,
            t_start=t_start,
            inference=node_stats("inference", INFERENCE_STATUS),
            executor=node_stats("chunk_executor", "clamp_policy: chunk executor"),
        )
        out.setdefault("timed_out", False)
    finally:
        children.stop()
        if running is not None:
            running.stop()  # removes each node from its executor thread (joined) before destroying it
        executor.remove_node(probe)
        probe.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        try:
            rclpy.shutdown(context=context)
        except Exception as exc:  # a node that failed half-way in __init__ may not destroy cleanly
            print(f"warning: while shutting down: {exc!r}", file=sys.stderr, flush=True)
    with lock:
        out["log"] = log
    return out


# ------------------------------------------------------------------------------------------ report
def _pct(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def episode_metrics(ep: dict, rate_factor: float) -> dict:
    """Latency / control figures of one episode from the probe's recordings and /diagnostics."""
    log: EpisodeLog = ep["log"]
    diag = {name: values for name, (_, _, values) in log.diagnostics.items()}
    inf = diag.get("clamp_policy: inference", {})
    exe = diag.get("clamp_policy: chunk executor", {})
    per = diag.get("clamp_perception: views", {})
    skipped = {k[len("skipped ") :]: int(v) for k, v in per.items() if k.startswith("skipped ")}
    stamps = np.array([t for t, _ in log.commands if t >= ep["t_start"]])
    gaps = np.diff(stamps) if len(stamps) > 1 else np.zeros(0)
    rate = ep.get("sim_rate_achieved") or rate_factor  # the sim's real pace, below rate_factor when it lagged
    wall = np.diff(np.array(log.command_wall)) * 1e3 * rate  # wall inter-arrival in sim ms
    clamps = exe.get("clamps_total")
    return {
        "inference_ms_median": inf.get("inference_ms_median"),
        "inference_ms_p95": inf.get("inference_ms_p95"),
        "chunks": inf.get("published"),
        "chunk_age_ms_median": 1e3 * float(np.median(log.chunk_ages)) if log.chunk_ages else None,
        "perception_ms_median": per.get("latency_ms_median"),
        "views_age_ms_median": 1e3 * float(np.median(log.view_ages)) if log.view_ages else None,
        "views_received": log.views,
        "views_published": per.get("views_published"),
        # frames perception gave up on (TF / camera_info late beyond tf_wait_s, bad input): must be 0
        "perception_skipped": int(sum(skipped.values())) if per else None,
        "perception_skipped_by_reason": skipped,
        # newer frame sets arrived while one rendered (the renderer is slower than the cameras; not an error)
        "perception_superseded": per.get("frames_superseded"),
        "commands": int(len(stamps)),
        "command_period_ms_median": 1e3 * float(np.median(gaps)) if len(gaps) else None,
        "command_gaps_over_1p5_ticks": int(np.sum(gaps > 0.03)),
        "command_arrival_ms_p50": _pct(wall, 50),
        "command_arrival_ms_p99": _pct(wall, 99),
        "executor_missed_ticks": exe.get("missed_ticks"),
        "executor_catch_up_ticks": exe.get("catch_up_ticks"),
        "executor_jitter_p99_ms": exe.get("jitter_p99_ms"),
        "clamps_total": clamps,
        "clamps": exe.get("clamps"),
        "clamps_per_command": clamps / len(stamps) if clamps is not None and len(stamps) else None,
        "holds": exe.get("holds"),
        "safe_entries": exe.get("safe_entries"),
        "executor_state": exe.get("state"),
        "diagnostics_seen": sorted(log.diagnostics),
    }


def plot_views(snapshots: list, t_start: float, path: Path, title: str) -> None:
    """Rows: per snapshot, depth (top) and world xyz as RGB (bottom) for the five views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from clamp_core import rig

    if not snapshots:
        raise DemoError("no /clamp/views snapshot was recorded; is the perception node publishing?")
    n, v = len(snapshots), len(rig.VIEW_NAMES)
    fig, axes = plt.subplots(2 * n, v, figsize=(2.2 * v, 2.3 * 2 * n), squeeze=False)
    lo, hi = np.array([-0.65, 0.15, -0.04]), np.array([0.65, 1.05, 0.6])  # the perception crop box
    for i, (t, tiled) in enumerate(snapshots):
        s = tiled.shape[0]
        for j, name in enumerate(rig.VIEW_NAMES):
            view = np.nan_to_num(tiled[:, j * s : (j + 1) * s], nan=0.0)
            depth = np.where(view[..., 0] > 0, view[..., 0], np.nan)
            xyz = np.clip((view[..., 1:4] - lo) / (hi - lo), 0, 1) * (view[..., :1] > 0)
            ax_d, ax_x = axes[2 * i, j], axes[2 * i + 1, j]
            ax_d.imshow(depth, cmap="viridis")
            ax_x.imshow(xyz)
            ax_d.set_title(f"{name} depth, t={t - t_start:+.1f}s", fontsize=7)
            ax_x.set_title(f"{name} xyz", fontsize=7)
            ax_d.set_axis_off()
            ax_x.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / (2.3 * 2 * n)))  # room for the title above the first row
    fig.savefig(path, dpi=70)
    plt.close(fig)


def plot_filmstrip(frames: list, path: Path, title: str) -> bool:
    """cam_high thumbnails over an episode in one PNG; False when none were recorded."""
    if not frames:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = frames[0][0]
    fig, axes = plt.subplots(1, len(frames), figsize=(2.4 * len(frames), 2.2), squeeze=False)
    for ax, (t, img) in zip(axes[0], frames, strict=True):
        ax.imshow(img)
        ax.set_axis_off()
        ax.set_title(f"+{t - t0:.1f} s", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_joints(ep: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from clamp_core import rig

    log: EpisodeLog = ep["log"]
    if not log.commands or not log.states:
        raise DemoError("no commands or joint states were recorded; did the chunk executor run?")
    t0 = ep["t_start"]
    ct = np.array([t for t, _ in log.commands]) - t0
    c = np.array([x for _, x in log.commands])
    st = np.array([t for t, _ in log.states]) - t0
    m = np.array([x for _, x in log.states])
    keep = st >= min(ct.min(), 0) - 0.5
    fig, axes = plt.subplots(2, 7, figsize=(18, 5), sharex=True)
    for j, name in enumerate(rig.ACTION_NAMES):
        ax = axes[j // 7, j % 7]
        ax.plot(st[keep], m[keep, j], color="tab:blue", lw=1.2, label="executed (joint_states)")
        ax.plot(ct, c[:, j], color="tab:red", lw=1.0, ls="--", label="commanded")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("sim s since policy start", fontsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _fmt(v, spec=".1f", none="-") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return none
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _policy_line(cfg: dict, build: dict, policy: str) -> str:
    if build.get("key") == "given":  # --policy DIR: what its export records
        try:
            meta = json.loads((Path(policy) / "config.json").read_text()).get("metadata", {})
        except (OSError, ValueError):
            meta = {}
        return (
            f"Policy: `{policy}` (given with --policy): exported from run `{meta.get('run', '?')}` at step "
            f"{meta.get('step', '?')} ({meta.get('weights', '?')} weights), trained on "
            f"{_datasets(meta.get('datasets'))}."
        )
    return (
        f"Policy: `{policy}` ({'reused from the cache' if build.get('cached') else 'built by this run'}; key "
        f"{build.get('key')}): trained with `{cfg['train']['config']}` on "
        f"{build.get('episodes', {}).get('train')} scripted {cfg['task']} demonstrations."
    )


def _datasets(paths) -> str:
    """A run's dataset list for the report: every path when few, else the count and their common folder."""
    if not isinstance(paths, list) or len(paths) <= 3:
        return str(paths if paths is not None else "?")
    return f"{len(paths)} datasets under `{os.path.commonpath([str(p) for p in paths])}`"


def _process_line(cl: dict) -> str:
    """'sim, perception | inference | arm_driver, chunk_executor, probe': which nodes shared a process."""
    from clamp_bringup.graph import build_graph

    groups = process_groups(cl)
    apart = {n for g in groups for n in g}
    here = (*(n for n in build_graph("sim", "policy").names if n not in apart), "probe")
    return " | ".join(", ".join(g) for g in [*groups, here])


def write_report(cfg: dict, build: dict, episodes: list[dict], out: Path, timings: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cl = cfg["closed_loop"]
    rate = float(cl.get("sim", {}).get("rate_factor", 1.0))
    metrics = [episode_metrics(ep, rate) for ep in episodes]
    n_ok = sum(ep["success"] for ep in episodes)
    first = next((ep for ep in episodes if ep["success"]), episodes[0])
    outcome = "success" if first["success"] else "failure"
    title = f"/clamp/views over {cfg['task']} seed {first['seed']} ({outcome})"
    # the views are the perception node's output; a policy that reads colour only does not need them,
    # so their absence is reported, not fatal
    views_note = ""
    if first["log"].snapshots:
        plot_views(first["log"].snapshots, first["t_start"], out / "views.png", title)
    else:
        views_note = "no /clamp/views arrived during the episodes (perception skipped every frame); no views.png"
    plot_joints(first, out / "joints.png", f"{cfg['task']} seed {first['seed']}: commanded vs executed joints")

    def agg(key, fn=np.median):
        vals = [m[key] for m in metrics if isinstance(m.get(key), (int, float))]
        return float(fn(vals)) if vals else None

    summary = {
        "task": cfg["task"],
        "episodes": len(episodes),
        "successes": n_ok,
        "success_rate": n_ok / len(episodes),
        "inference_ms_median": agg("inference_ms_median"),
        "inference_ms_p95": agg("inference_ms_p95", np.max),
        "chunk_age_ms_median": agg("chunk_age_ms_median"),
        "perception_ms_median": agg("perception_ms_median"),
        "command_period_ms_median": agg("command_period_ms_median"),
        "command_gaps": int(sum(m["command_gaps_over_1p5_ticks"] for m in metrics)),
        "executor_missed_ticks": agg("executor_missed_ticks", np.sum),
        "perception_skipped": agg("perception_skipped", np.sum),
        "clamps_total": agg("clamps_total", np.sum),
        "clamps_per_command": (agg("clamps_total", np.sum) or 0.0) / max(sum(m["commands"] for m in metrics), 1),
        "report": str(out / "report.md"),
    }
    policy = build.get("policy_dir", "")
    lines = [
        f"# make demo: CLAMP policy on the simulated ALOHA ({cfg['task']})",
        "",
        f"**{n_ok} / {len(episodes)} episodes succeeded** ({summary['success_rate']:.0%}). Each episode: a fresh "
        f"bring-up of the sim profile's policy graph over DDS (clamp_sim -> perception -> inference -> chunk "
        f"executor -> arm driver -> clamp_sim; processes: {_process_line(cl)}) with the episode's seed, then "
        f"{cl['horizon_s']} s of sim time under "
        f"the policy (or until /clamp_sim/success). Sim at x{rate} real time requested "
        f"(achieved: 'sim x real time' below), cameras "
        f"{cl['sim'].get('image_width')}x{cl['sim'].get('image_height')} at {cl['sim'].get('camera_hz')} Hz.",
        "",
        _policy_line(cfg, build, policy),
        "",
        "## Success",
        "",
        "| episode | seed | success | time to success (sim s) | sim s under policy | wall s (bring-up) "
        "| sim x real time | chunks | commands | clamps (per command) | holds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (ep, m) in enumerate(zip(episodes, metrics, strict=True)):
        lines.append(
            f"| {i + 1} | {ep['seed']} | {'yes' if ep['success'] else 'no'} | "
            f"{_fmt(ep['time_to_success_s'], '.2f')} | {ep['policy_sim_s']:.1f} | "
            f"{ep['wall_s']:.0f} ({ep['bringup_wall_s']:.0f}) | {ep['sim_rate_achieved']:.2f} | "
            f"{_fmt(m['chunks'], '.0f')} | "
            f"{m['commands']} | {_fmt(m['clamps_total'], '.0f')} ({_fmt(m['clamps_per_command'], '.2f')}) | "
            f"{_fmt(m['holds'], '.0f')} |"
        )
    lines += [
        "",
        "## Latency and control (per episode; from /diagnostics and the probe's recordings)",
        "",
        "| episode | inference ms median / p95 | obs -> chunk ms (sim) | perception ms median | views age ms (sim) "
        "| perception skipped (superseded) | command period ms | command gaps | missed ticks | catch-up ticks "
        "| command arrival p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, m in enumerate(metrics):
        lines.append(
            f"| {i + 1} | {_fmt(m['inference_ms_median'])} / {_fmt(m['inference_ms_p95'])} | "
            f"{_fmt(m['chunk_age_ms_median'], '.0f')} | {_fmt(m['perception_ms_median'])} | "
            f"{_fmt(m['views_age_ms_median'], '.0f')} | {_fmt(m['perception_skipped'], '.0f')} "
            f"({_fmt(m['perception_superseded'], '.0f')}) | {_fmt(m['command_period_ms_median'], '.2f')} | "
            f"{m['command_gaps_over_1p5_ticks']} | {_fmt(m['executor_missed_ticks'], '.0f')} | "
            f"{_fmt(m['executor_catch_up_ticks'], '.0f')} | {_fmt(m['command_arrival_ms_p50'], '.1f')} / "
            f"{_fmt(m['command_arrival_ms_p99'], '.1f')} |"
        )
    clamps = [m["clamps"] for m in metrics if isinstance(m.get("clamps"), dict)]
    joint_clamps: dict[str, float] = {}  # "kind joint" -> count (the limiter reports {kind: {joint: n}})
    for c in clamps:
        for kind, per in c.items():
            for joint, v in per.items() if isinstance(per, dict) else [("", per)]:
                name = f"{kind} {joint}".strip()
                joint_clamps[name] = joint_clamps.get(name, 0) + float(v)
    lines += [
        "",
        "- inference ms: wall time of one DDIM sampling (InferenceNode diagnostics); obs -> chunk: the chunk's "
        "observation stamp to its arrival here, in sim time (perception + inference + DDS).",
        "- command period / gaps: sim-time stamps of rig.JOINT_COMMAND_TOPIC (20 ms = every 50 Hz tick; gaps = "
        "steps over 30 ms). On sim time the executor ticks on /clock, so its own jitter figure is 0 by "
        "construction; command arrival = wall-clock inter-arrival here scaled to sim time (DDS + GIL delivery).",
        "- perception skipped: frames the perception node gave up on (TF or camera_info later than its "
        "tf_wait_s, bad input); superseded: newer frame sets that replaced one while it rendered (normal when "
        "rendering is slower than the cameras).",
        "- clamps: safety-limiter clamp events (one per joint and kind: position, velocity, acceleration, gripper) "
        "in the chunk executor; per command = clamps / 50 Hz commands, so a tick clamping several joints counts "
        "several times and the fraction of ticks with any clamp is at most this figure (and at most 1).",
        f"- clamps (safety limiter, summed over episodes): "
        f"{', '.join(f'{k} {v:.0f}' for k, v in joint_clamps.items() if v) or 'none'}.",
        "",
        "## Timings",
        "",
        "| stage | seconds | |",
        "|---|---|---|",
    ]
    for k, v in build.get("stage_s", {}).items():
        note = "cached stage" if build.get("stage_cached", {}).get(k) else ""
        note = "built earlier, reused" if build.get("cached") else note
        lines.append(f"| build: {k} | {v:.0f} | {note} |")
    for k, v in timings.items():
        lines.append(f"| {k} | {v:.0f} | |")
    lines += ["", "## Episodes (cam_high over the episode)", ""]
    for i, ep in enumerate(episodes):
        name = f"filmstrip_{i + 1}_seed{ep['seed']}.png"
        if plot_filmstrip(ep["log"].filmstrip, out / name, f"episode {i + 1} seed {ep['seed']}: "
                          f"{'success' if ep['success'] else 'failure'}"):  # fmt: skip
            lines += [f"![episode {i + 1}]({name})", ""]
    if views_note:
        lines += ["", f"Note: {views_note}."]
    lines += [
        "",
        "![views](views.png)",
        "",
        "![joints](joints.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    doc = {
        "summary": summary,
        "build": {k: v for k, v in build.items() if k != "config"},
        "episodes": [
            {**{k: v for k, v in ep.items() if k != "log"}, "metrics": m}
            for ep, m in zip(episodes, metrics, strict=True)
        ],
        "timings_s": timings,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return summary


def parse_success_table(report: str) -> list[dict]:
    """The success table of a report.md back as rows (used by the tests and by anyone scripting)."""
    rows = []
    in_table = False
    for line in report.splitlines():
        if line.startswith("| episode | seed | success"):
            in_table = True
            continue
        if in_table:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0].startswith("---"):
                continue
            rows.append({"episode": int(cells[0]), "seed": int(cells[1]), "success": cells[2] == "yes"})
    return rows


# -------------------------------------------------------------------------------------------- main
def run_demo(cfg: dict, episodes: int | None = None, rebuild: bool = False, progress: bool = True,
             policy_dir: str | None = None) -> dict:  # fmt: skip
    import torch

    torch.set_num_threads(1)  # the build stages set their own; inference in the node uses 1 of 2 cores
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if policy_dir:
        pdir = check_policy_dir(policy_dir)
        build = {"cached": True, "key": "given", "policy_dir": str(pdir)}
    else:
        pdir, build = build_policy(cfg, rebuild=rebuild, progress=progress)
        build["policy_dir"] = str(pdir)
    timings["policy (build or cache lookup)"] = time.perf_counter() - t0
    cl = cfg["closed_loop"]
    n = int(episodes if episodes is not None else cl["episodes"])
    print(f"closed loop: {n} episode(s) of {cfg['task']} over DDS (ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', 0)})")
    results = []
    t1 = time.perf_counter()
    for k in range(n):
        ep = run_episode(pdir, cfg["task"], int(cl["seed"]) + k, cl, progress)
        results.append(ep)
        print(
            f"  episode {k + 1}/{n} seed {ep['seed']}: {'SUCCESS' if ep['success'] else 'failure'} after "
            f"{ep['policy_sim_s']:.1f} sim s ({ep['wall_s']:.0f} s wall incl. {ep['bringup_wall_s']:.0f} s bring-up)",
            flush=True,
        )
    timings["closed loop"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    out = _resolve(cfg["out"])
    return write_report(cfg, build, results, out, timings)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's error, plus where the flags are listed and how make passes them
        self.print_usage(sys.stderr)
        self.exit(
            2,
            f"{self.prog}: error: {message}\n(`python -m clamp_demo --help` lists the flags; through make: "
            f'make demo ARGS="--episodes 5 --seed 7")\n',
        )


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m clamp_demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="demo YAML (default: demo/demo.yaml)")
    ap.add_argument("--episodes", type=_positive_int, default=None, help="closed-loop episodes (default: the config's)")
    ap.add_argument("--task", default=None, help="clamp_sim task to fine-tune on and run")
    ap.add_argument("--out", default=None, help="report directory (default: out/demo)")
    ap.add_argument("--seed", type=int, default=None, help="first episode seed")
    ap.add_argument("--rebuild", action="store_true", help="build the policy again even if it is cached")
    ap.add_argument("--policy", default=None, help="use this exported policy dir instead of building one")
    ap.add_argument("--build-only", action="store_true", help="build (or find) the policy and stop")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.build_only and a.policy:
        ap.error("--build-only builds the demo's own policy; it has nothing to do with --policy DIR (drop one)")
    overrides: dict = {}
    if a.task:
        overrides["task"] = a.task
    if a.out:
        overrides["out"] = str(Path(a.out).resolve())
    if a.seed is not None:
        overrides["closed_loop"] = {"seed": a.seed}
    try:
        cfg = load_demo_config(a.config, overrides)
        if a.build_only:
            pdir, _ = build_policy(cfg, rebuild=a.rebuild, progress=not a.no_progress)
            print(f"policy: {pdir}")
            return 0
        s = run_demo(cfg, a.episodes, a.rebuild, not a.no_progress, a.policy)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # e.g. clamp_bringup.run.RunnerError: a node of the graph did not start
        if type(exc).__name__ != "RunnerError":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print(f"success: {s['successes']}/{s['episodes']} episodes of {s['task']} ({s['success_rate']:.0%})")
    print(
        f"latency: inference {_fmt(s['inference_ms_median'])} ms median (p95 max {_fmt(s['inference_ms_p95'])} ms), "
        f"observation -> chunk {_fmt(s['chunk_age_ms_median'], '.0f')} ms sim, perception "
        f"{_fmt(s['perception_ms_median'])} ms; commands every {_fmt(s['command_period_ms_median'], '.1f')} ms sim, "
        f"{s['command_gaps']} gaps, {_fmt(s['executor_missed_ticks'], '.0f')} missed ticks, "
        f"{_fmt(s['clamps_total'], '.0f')} clamps"
    )
    print(f"report: {s['report']} (views.png, joints.png, results.json beside it)")
    print(json.dumps(s))  # the last line: one JSON object
    return 0
