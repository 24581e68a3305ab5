"""Evaluation harness: run a policy callable in the simulator for N seeded episodes per task.

A policy is any callable `obs -> (rig.CHUNK_LENGTH, 14) action chunk` (optionally with `reset()`);
obs is the dict built by `observation()`: camera frames (rgb, depth, K, T_world_cam), the 14-D
state, the task text, object positions, gripper poses and the control step. The first
`execute_steps` actions of each chunk are executed, then the policy is asked again.

    python -m clamp_sim.evaluate --task transfer_cube insertion place_cube --episodes 10 --out DIR

writes DIR/results.md (success table), DIR/results.png (success rates) and one image strip per
episode (DIR/strips/<task>_seed<k>.png); prints one JSON line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from clamp_core import rig

from clamp_sim.aloha_sim import AlohaSim, CameraFrame


def observation(sim: AlohaSim, step: int, frames: dict[str, CameraFrame] | None) -> dict:
    return {
        "frames": frames or {},
        "state": sim.state(),
        "task": sim.description(),
        "objects": sim.object_positions(),
        "progress": sim.task.progress,
        "gripper_poses": {arm: sim.gripper_pose(arm) for arm in rig.FOLLOWERS},
        "step": step,
        "time": sim.time,
        "seed": sim.seed,  # scripted demonstrators seed their variation with it; learned policies ignore it
    }


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    steps: int  # control steps run (the horizon, or until a finished scripted policy's success)
    success_step: int | None  # first step at which the goal state had settled
    policy_ms: float  # mean policy time per call
    step_ms: float  # mean sim time per control step (physics + rendering)
    progress: float
    strip: list[np.ndarray] = field(default_factory=list, repr=False)


def run_episode(
    sim: AlohaSim,
    policy: Callable[[dict], np.ndarray],
    seed: int,
    horizon: int,
    execute_steps: int = 10,
    render_every: int | None = 1,
    on_step: Callable[[AlohaSim, int, np.ndarray, dict | None], None] | None = None,
    strip_every: int = 0,
    stop_on_success: bool = False,
) -> EpisodeResult:
    """One episode. Frames are rendered every `render_every` control steps (None: never; the
    policy then sees no frames). `on_step(sim, step, action, frames)` is called before each step
    (for recording); `strip_every` > 0 keeps a cam_high thumbnail that often. `stop_on_success`
    ends the episode once the task has succeeded and the policy, if it has `finished(step)`, says
    it is done. The simulator's start pose jitter is the policy's `start_jitter` (default 0)."""
    if not 1 <= execute_steps <= rig.CHUNK_LENGTH:
        raise ValueError(f"execute_steps must be in 1..{rig.CHUNK_LENGTH}, got {execute_steps}")
    sim.start_jitter = float(getattr(policy, "start_jitter", 0.0))
    sim.reset(seed)
    if hasattr(policy, "reset"):
        policy.reset()
    chunk, policy_s, sim_s, calls, strip, success_step = None, 0.0, 0.0, 0, [], None
    for t in range(horizon):
        t0 = time.perf_counter()
        frames = sim.render() if render_every and t % render_every == 0 else None
        sim_s += time.perf_counter() - t0
        if t % execute_steps == 0:
            t0 = time.perf_counter()
            chunk = np.asarray(policy(observation(sim, t, frames)), float)
            policy_s += time.perf_counter() - t0
            calls += 1
            if chunk.ndim != 2 or chunk.shape[1] != rig.ACTION_DIM or len(chunk) < execute_steps:
                raise ValueError(
                    f"policy returned shape {chunk.shape}; expected ({rig.CHUNK_LENGTH}, {rig.ACTION_DIM}) "
                    f"with at least execute_steps={execute_steps} rows"
                )
        action = chunk[t % execute_steps]
        if on_step is not None:
            on_step(sim, t, action, frames)
        if strip_every and t % strip_every == 0:
            f = frames["cam_high"] if frames and "cam_high" in frames else sim.render(("cam_high",))["cam_high"]
            strip.append(f.rgb[::2, ::2])
        t0 = time.perf_counter()
        sim.apply_action(action)
        sim.step()
        sim_s += time.perf_counter() - t0
        if sim.success():
            if success_step is None:
                success_step = t + 1
            if stop_on_success and (not hasattr(policy, "finished") or policy.finished(t + 1)):
                break
        else:
            success_step = None  # the goal state broke again: only the final settled state counts
    steps = t + 1
    return EpisodeResult(
        sim.task.name,
        seed,
        sim.success(),
        steps,
        success_step,
        1e3 * policy_s / max(calls, 1),
        1e3 * sim_s / steps,
        sim.task.progress,
        strip,
    )


def save_strip(result: EpisodeResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.strip)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.2))
    for i, (ax, img) in enumerate(zip(np.atleast_1d(axes), result.strip, strict=False)):
        ax.imshow(img)
        ax.set_axis_off()
        ax.set_title(f"step {i * (result.steps // max(n, 1))}", fontsize=7)
    fig.suptitle(f"{result.task} seed {result.seed}: {'success' if result.success else 'failure'}", fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def write_report(results: list[EpisodeResult], out: Path, policy_name: str) -> dict:
    """Markdown table + PNG bar chart of success rates; returns the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r.task for r in results})
    summary = {}
    lines = [
        f"# clamp_sim evaluation: {policy_name}",
        "",
        "| task | episodes | success rate | mean steps to success | policy ms/call | sim ms/step |",
        "|---|---|---|---|---|---|",
    ]
    for task in tasks:
        rs = [r for r in results if r.task == task]
        rate = float(np.mean([r.success for r in rs]))
        to_succ = [r.success_step for r in rs if r.success_step]
        summary[task] = {
            "episodes": len(rs),
            "success_rate": rate,
            "mean_success_step": float(np.mean(to_succ)) if to_succ else None,
            "policy_ms": float(np.mean([r.policy_ms for r in rs])),
            "sim_ms_per_step": float(np.mean([r.step_ms for r in rs])),
            "failed_seeds": [r.seed for r in rs if not r.success],
        }
        s = summary[task]
        mean_steps = f"{s['mean_success_step']:.0f}" if s["mean_success_step"] else "-"
        lines.append(
            f"| {task} | {len(rs)} | {rate:.0%} | {mean_steps} | {s['policy_ms']:.1f} | {s['sim_ms_per_step']:.1f} |"
        )
    lines += ["", "Per episode:", "", "| task | seed | success | success step | progress |", "|---|---|---|---|---|"]
    lines += [f"| {r.task} | {r.seed} | {r.success} | {r.success_step or '-'} | {r.progress:.2f} |" for r in results]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(1.8 * len(tasks) + 1.5, 3))
    rates = [summary[t]["success_rate"] for t in tasks]
    ax.bar(tasks, rates, color="tab:green")
    for i, r in enumerate(rates):
        ax.text(i, r + 0.02, f"{r:.0%}", ha="center")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("success rate")
    ax.set_title(f"{policy_name} ({results and len(results) // len(tasks)} episodes per task)")
    fig.savefig(out / "results.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return summary


def evaluate(
    policy_factory: Callable[[str], Callable[[dict], np.ndarray]],
    tasks: list[str],
    episodes: int,
    seed: int = 0,
    out: Path | None = None,
    image_size: tuple[int, int] = (240, 320),
    execute_steps: int = 10,
    horizon: int | None = None,
    needs_images: bool | None = None,
    policy_name: str = "policy",
    progress: bool = True,
) -> tuple[dict, list[EpisodeResult]]:
    """Run `episodes` seeded episodes (seeds seed..seed+episodes-1) of each task."""
    from tqdm import tqdm

    results = []
    bar = tqdm(total=episodes * len(tasks), desc=f"evaluate {policy_name}", disable=not progress)
    for task in tasks:
        policy = policy_factory(task)
        use_images = getattr(policy, "needs_images", True) if needs_images is None else needs_images
        n = horizon or getattr(policy, "horizon", 400)
        with AlohaSim(task, image_size=image_size) as sim:
            for k in range(episodes):
                r = run_episode(
                    sim,
                    policy,
                    seed + k,
                    n,
                    execute_steps,
                    render_every=1 if use_images else None,
                    strip_every=max(n // 8, 1) if out else 0,
                    stop_on_success=hasattr(policy, "finished"),  # scripted: done once settled
                )
                results.append(r)
                if out:
                    (out / "strips").mkdir(parents=True, exist_ok=True)
                    save_strip(r, out / "strips" / f"{task}_seed{r.seed}.png")
                bar.update(1)
                bar.set_postfix(task=task, ok=sum(x.success for x in results if x.task == task))
    bar.close()
    summary = write_report(results, out, policy_name) if out else {}
    return summary, results
