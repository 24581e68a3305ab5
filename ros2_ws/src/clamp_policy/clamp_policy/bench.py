"""Benchmark: policy inference latency and 50 Hz tick timing while inference runs.

    python -m clamp_policy.bench [--seconds 10] [--runs 20] [--steps 10] [--png out.png]

Ends with one JSON line:
- inference_ms {median, p95}: the default model (`PolicyConfig()`, 224 px views, random weights)
  with 10 DDIM steps and the runtime's torch threads (`configure_torch_threads`: all cores but one),
  against the baseline of torch's default threads (all cores);
- tick_jitter_p99_ms, missed_ticks: the executor's tick thread (`WallTicker` driving the real
  `ChunkExecutor`, own process as deployed) while inference runs back-to-back in this process;
  against the baseline of an rclpy timer at 50 Hz (the usual way to write a control loop in rclpy)
  under the same load, and (ablation) the same tick thread without SCHED_FIFO.
  Jitter = wake-up after the deadline; a missed tick = a deadline slept through.
Both loops are timed the same way, from outside (time.monotonic() at each call).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from clamp_core import rig

PERIOD = 1.0 / rig.CONTROL_HZ


def _timing(calls: list[float], t0: float, period: float = PERIOD) -> dict:
    """Lateness and missed deadlines of call times against the grid t0 + k * period (k >= 1)."""
    t = np.asarray(calls) - t0
    k = np.floor(t / period + 1e-9)
    late_ms = (t - k * period) * 1e3
    missed = int(np.sum(np.maximum(np.diff(np.concatenate([[0.0], k])) - 1, 0)))
    return {
        "ticks": len(calls),
        "missed_ticks": missed,
        "tick_jitter_p50_ms": float(np.percentile(late_ms, 50)),
        "tick_jitter_p99_ms": float(np.percentile(late_ms, 99)),
        "tick_jitter_max_ms": float(late_ms.max()),
    }


# ------------------------------------------------------------------------------- tick processes
def run_executor_ticker(seconds: float, priority: int) -> dict:
    """The runtime's tick thread driving the real ChunkExecutor (chunk replanned every 25 ticks)."""
    from .executor import ChunkExecutor, make_chunk
    from .executor_node import TickStats, WallTicker

    core = ChunkExecutor()
    home = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.5] * 2)
    tfs = np.arange(rig.CHUNK_LENGTH) * PERIOD
    calls: list[float] = []
    n = [0]

    def tick() -> None:
        now = time.monotonic()
        calls.append(now)
        core.update_state(home, now)
        if n[0] % 25 == 0:
            pos = np.tile(home, (rig.CHUNK_LENGTH, 1))
            pos[:, 0] += 0.2 * np.sin(now + tfs)
            core.submit(make_chunk(now - 0.1, tfs, pos), now)
        n[0] += 1
        core.tick(now)

    stats = TickStats()
    ticker = WallTicker(PERIOD, tick, stats, priority=priority)
    sys.setswitchinterval(0.0005)  # as the node does
    ticker.start()
    ticker.started_event.wait(1.0)
    time.sleep(seconds)
    ticker.stop()
    out = _timing(calls, stats.started)
    out["sched_fifo"] = priority > 0 and not ticker.priority_error
    out["executor_state"] = core.state.value
    return out


def run_rclpy_timer(seconds: float) -> dict:
    """Baseline: rclpy timer callback at 50 Hz, spun by a SingleThreadedExecutor."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bench_timer", context=ctx)
    calls: list[float] = []
    t0 = time.monotonic()
    node.create_timer(PERIOD, lambda: calls.append(time.monotonic()))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    end = t0 + seconds
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)
    out = _timing(calls, t0)
    node.destroy_node()
    rclpy.shutdown(context=ctx)
    return out


def _start_ticker(kind: str, seconds: float, priority: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "clamp_policy.bench", "--ticker", kind, "--seconds", str(seconds)]
    args += ["--priority", str(priority)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=os.environ.copy())


# ------------------------------------------------------------------------------------ inference
def _default_runner(steps: int, threads: int):
    import torch

    from .inference import PolicyRunner, configure_torch_threads
    from .models import DiffusionPolicy, PolicyConfig

    n = configure_torch_threads(threads) if threads >= 0 else None
    if n is None:
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    runner = PolicyRunner(DiffusionPolicy(PolicyConfig()), num_inference_steps=steps)
    runner.warmup(2)
    return runner, torch.get_num_threads()


def _time_inference(runner, runs: int, desc: str) -> list[float]:
    from tqdm import tqdm

    obs = runner.dummy_observation()
    return [runner.infer(obs).latency_ms for _ in tqdm(range(runs), desc=desc, leave=False)]


def _load_while(proc: subprocess.Popen, runner) -> int:
    """Back-to-back inference until the ticker process ends; returns the number of inferences."""
    obs = runner.dummy_observation()
    n = 0
    while proc.poll() is None:
        runner.infer(obs)
        n += 1
    return n


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"ticker process failed ({proc.returncode}): {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each tick measurement")
    ap.add_argument("--runs", type=int, default=20, help="timed inferences")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps")
    ap.add_argument("--priority", type=int, default=50, help="SCHED_FIFO priority of the tick thread (0 = off)")
    ap.add_argument("--replan-every", type=int, default=25, help="control steps between chunks (horizon)")
    ap.add_argument("--png", default="", help="write a latency / jitter plot here")
    ap.add_argument("--ticker", choices=("executor", "rclpy_timer"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.ticker:  # child process: one tick loop, one JSON line
        fn = run_executor_ticker if args.ticker == "executor" else run_rclpy_timer
        res = fn(args.seconds, args.priority) if args.ticker == "executor" else fn(args.seconds)
        print(json.dumps(res))
        return

    result: dict = {"bench": "clamp_policy", "cpu_count": os.cpu_count(), "ddim_steps": args.steps}
    # 1. inference latency: the runtime's threads vs torch's default (all cores)
    runner, threads = _default_runner(args.steps, 0)
    lat = _time_inference(runner, args.runs, f"inference ({threads} thread)")
    result["inference_ms"] = {"median": float(np.median(lat)), "p95": float(np.percentile(lat, 95))}
    result["torch_threads"] = threads
    params = sum(p.numel() for p in runner.policy.parameters())
    result["model_params_M"] = round(params / 1e6, 2)
    base_runner, base_threads = _default_runner(args.steps, -1)
    base = _time_inference(base_runner, max(3, args.runs // 4), f"baseline inference ({base_threads} threads)")
    result["baseline_inference_ms_all_threads"] = {
        "median": float(np.median(base)),
        "p95": float(np.percentile(base, 95)),
        "threads": base_threads,
    }
    import torch

    torch.set_num_threads(threads)
    horizon_ms = args.replan_every * PERIOD * 1e3
    result["replan_period_ms"] = horizon_ms
    result["inference_within_horizon"] = result["inference_ms"]["p95"] < horizon_ms

    # 2. tick timing while inference runs back-to-back on the same cores
    print(f"ticking {args.seconds:.0f} s with the executor's tick thread under inference load ...", file=sys.stderr)
    proc = _start_ticker("executor", args.seconds, args.priority)
    n_ours = _load_while(proc, runner)
    ours = _result(proc)
    no_rt = None
    if ours["sched_fifo"]:  # ablation: the same thread without real-time priority (e.g. no rtprio limit)
        print(f"ticking {args.seconds:.0f} s, tick thread without SCHED_FIFO, under load ...", file=sys.stderr)
        proc = _start_ticker("executor", args.seconds, 0)
        n_no_rt = _load_while(proc, runner)
        no_rt = {**_result(proc), "inferences_during": n_no_rt}
    print(f"ticking {args.seconds:.0f} s with an rclpy timer under inference load ...", file=sys.stderr)
    proc = _start_ticker("rclpy_timer", args.seconds, 0)
    n_base = _load_while(proc, runner)
    timer = _result(proc)
    result["tick_jitter_p99_ms"] = ours["tick_jitter_p99_ms"]
    result["missed_ticks"] = ours["missed_ticks"]
    result["executor"] = {**ours, "inferences_during": n_ours}
    if no_rt is not None:
        result["executor_without_sched_fifo"] = no_rt
    result["baseline_rclpy_timer"] = {**timer, "inferences_during": n_base}
    result["targets_met"] = {
        "zero_missed_ticks": ours["missed_ticks"] == 0,
        "p99_jitter_under_2ms": ours["tick_jitter_p99_ms"] < 2.0,
        "inference_shorter_than_horizon": result["inference_within_horizon"],
    }
    result["load_avg_1min"] = os.getloadavg()[0]
    if args.png:
        _plot(args.png, lat, base, ours, timer, no_rt)
        result["png"] = args.png
    print(json.dumps(result))


def _plot(path: str, lat, base, ours: dict, timer: dict, no_rt: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.boxplot([lat, base], tick_labels=["runtime threads", "all threads"])
    a.set_ylabel("inference ms (10 DDIM steps)")
    keys = ("tick_jitter_p50_ms", "tick_jitter_p99_ms", "tick_jitter_max_ms")
    x = np.arange(len(keys))
    series = [("executor ticker", ours)] + ([("ticker, no SCHED_FIFO", no_rt)] if no_rt else [])
    series.append(("rclpy timer", timer))
    w = 0.8 / len(series)
    for i, (name, r) in enumerate(series):
        label = f"{name} (missed {r['missed_ticks']})"
        b.bar(x + (i - (len(series) - 1) / 2) * w, [r[k] for k in keys], w, label=label)
    b.set_xticks(x, ["p50", "p99", "max"])
    b.set_ylabel("tick lateness ms")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
