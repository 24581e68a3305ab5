"""In-process closed-loop evaluation that executes like the robot, with grounding diagnostics.

Each control step (rig.CONTROL_HZ, simulated time) does what the nodes do:
- every `execute_steps` ticks the cameras are rendered and the policy is asked (inference node:
  views through clamp_perception's PerceptionPipeline, colour images as the camera publishes them);
  its chunk is stamped with the observation time and reaches `ChunkExecutor` after the measured
  inference latency, rounded up to whole ticks (the node publishes when inference finishes);
- `ChunkExecutor` (the profile's executor settings and joint/velocity/acceleration limits) turns
  the chunks into one limited command per tick, which the simulated arm driver applies.

Diagnostics per episode, which say why a policy fails before a success rate does:
- reach error: when the policy first closes an arm's gripper (command from above 0.8 to below 0.3),
  the distance from that gripper (ee_gripper_link) to the nearest task object;
- limiter clamps: the fraction of ticks where the limiter cut velocity or acceleration (and, apart,
  where it clipped a joint or gripper to its range);
- chunk jumps: the mean change between the last executed point of one chunk and the first of the
  next (a policy that guesses a different target every time jumps).

Library module: the command line is `python -m clamp_training evaluate` (commands/evaluate.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from clamp_core import rig

GRIPPER_INDEX = {"follower_left": 6, "follower_right": 13}


@dataclass
class EvalOptions:
    episodes: int = 20
    seed: int = 5000
    execute_steps: int = 10  # ticks between inferences (the inference node's replanning period)
    inference_steps: int = 10
    samples: int = 0  # chunks drawn per inference and averaged; 0: the profile's, as the inference node
    image_size: tuple = (96, 128)  # rendered camera size (H, W): what the training demonstrations used
    profile: str = "sim"  # robot profile: executor settings and limits
    horizon: int = 0  # 0: the task's scripted horizon
    # ms from observation to the chunk reaching the executor (inference + DDS), rounded up to ticks;
    # -1: the measured wall time of each inference (on a CPU shared with other work this is the
    # load, not the policy: a loaded 2-core machine made it 0.5-2 s)
    latency_ms: float = 60.0
    strip_every: int = 0  # 0: six cam_high thumbnails per episode


@dataclass
class EpisodeReport:
    task: str
    seed: int
    success: bool
    progress: float
    steps: int
    success_step: int | None = None  # first control step from which success held to the end
    reach_error_m: dict = field(default_factory=dict)  # arm -> distance when its gripper closed
    clamped_ticks: int = 0  # velocity / acceleration limited
    position_clamped_ticks: int = 0  # joint / gripper range limited (or rejected)
    command_ticks: int = 0
    chunks_rejected: dict = field(default_factory=dict)  # executor rejection kind -> count (workspace, stale, ...)
    chunk_jump_rad: float = float("nan")
    inference_ms: float = float("nan")
    strip: list = field(default_factory=list, repr=False)
    joints: np.ndarray | None = field(default=None, repr=False)  # (T, 14) commanded
    measured: np.ndarray | None = field(default=None, repr=False)  # (T, 14)

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "success": self.success,
            "progress": round(self.progress, 3),
            "steps": self.steps,
            "success_step": self.success_step,
            "reach_error_m": {k: round(v, 4) for k, v in self.reach_error_m.items()},
            "clamped_fraction": round(self.clamped_ticks / max(self.command_ticks, 1), 4),
            "position_clamped_fraction": round(self.position_clamped_ticks / max(self.command_ticks, 1), 4),
            "chunks_rejected": dict(self.chunks_rejected),
            "chunk_jump_rad": round(self.chunk_jump_rad, 4) if math.isfinite(self.chunk_jump_rad) else None,
            "inference_ms": round(self.inference_ms, 1),
        }


class LivePolicy:
    """Rendered frames -> the inference node's Observation -> PolicyRunner (clamp_policy.inference)."""

    def __init__(self, policy_dir, inference_steps: int, seed: int, samples: int = 1) -> None:
        from clamp_policy.inference import PolicyRunner
        from clamp_policy.models.checkpoint import load_policy

        self.runner = PolicyRunner(load_policy(policy_dir), inference_steps, seed=seed, num_samples=samples)
        cfg = self.runner.cfg
        self.cameras = tuple(rig.CAMERAS) if self.runner.needs_views else tuple(cfg.rgb.cameras)
        self.pipeline = None
        if self.runner.needs_views:
            from clamp_perception.pipeline import PerceptionPipeline

            self.pipeline = PerceptionPipeline.from_config()

    def observation(self, sim, frames: dict):
        from clamp_perception.fusion import DepthFrame
        from clamp_policy.inference import Observation

        views = None
        if self.pipeline is not None:
            depth = {c: DepthFrame(f.depth_mm, f.K, f.T_world_cam, name=c) for c, f in frames.items()}
            v, _ = self.pipeline.process(depth, {a: sim.gripper_pose(a) for a in rig.FOLLOWERS})
            views = self.pipeline.tile(v)
        rgb = {c: frames[c].rgb for c in self.runner.cfg.rgb.cameras} or None
        o = Observation(stamp=float(sim.time), state=sim.state(), views=views, task=sim.description(), rgb=rgb)
        if self.runner.history_length:
            o.action_history = np.repeat(np.asarray(o.state)[None], self.runner.history_length, 0)
        return o


def profile_samples(profile: str) -> int:
    """Chunks the inference node draws per observation under `profile` (else the node's default)."""
    from clamp_core.ros import load_profile_section
    from clamp_policy.inference_node import DEFAULTS

    _, inference = load_profile_section(profile, "policy", "inference")
    return int(inference.get("num_samples", DEFAULTS["num_samples"]))


def _executor(profile: str):
    from clamp_core.profile import load_profile, safety_limits, workspace_guard
    from clamp_policy.executor import ChunkExecutor, ExecutorConfig

    prof = load_profile(profile)
    overrides = dict((prof.get("policy") or {}).get("executor") or {})
    # the limits and the Cartesian guard as the executor node applies them (a chunk planned into the
    # table is rejected and the arm holds, on the robot as here)
    return ChunkExecutor(ExecutorConfig(**overrides), safety_limits(prof), workspace_guard(prof))


def run_episode(sim, policy: LivePolicy, seed: int, opts: EvalOptions, horizon: int) -> EpisodeReport:
    from clamp_policy.executor import make_chunk

    sim.reset(seed)
    ex = _executor(opts.profile)
    ex.update_driver_state("ready")
    dt = 1.0 / rig.CONTROL_HZ
    k = int(opts.execute_steps)
    times = np.arange(policy.runner.cfg.chunk_length) * dt
    pending: list[tuple[int, object]] = []  # (arrival tick, chunk)
    report = EpisodeReport(sim.task.name, seed, False, 0.0, horizon)
    strip_every = opts.strip_every or max(horizon // 6, 1)
    last_cmd, gripper_open = None, {a: False for a in GRIPPER_INDEX}
    jumps, lat, joints, measured = [], [], [], []
    prev_chunk = None
    for t in range(horizon):
        now = sim.time
        state = sim.state()
        ex.update_state(state, now)
        frames = None
        if t % k == 0:
            frames = sim.render(policy.cameras)
            obs = policy.observation(sim, frames)
            res = policy.runner.infer(obs)
            lat.append(res.latency_ms)
            ms = res.latency_ms if opts.latency_ms < 0 else opts.latency_ms
            delay = math.ceil(ms / 1e3 / dt - 1e-9)
            pending.append((t + delay, make_chunk(res.stamp, times, res.chunk)))
            if prev_chunk is not None:  # the previous chunk's point for this tick vs the new chunk's first
                jumps.append(float(np.abs(prev_chunk[min(k, len(prev_chunk) - 1)] - res.chunk[0]).max()))
            prev_chunk = res.chunk
        for _arrival, chunk in [p for p in pending if p[0] <= t]:
            ex.submit(chunk, now)
        pending = [p for p in pending if p[0] > t]
        cmd = ex.tick(now)
        if cmd is not None:
            report.command_ticks += 1
            ev = ex.limiter.last_event
            # motion clamps: velocity / acceleration limited this tick (position clamps are counted
            # apart: a gripper commanded at its demonstrated 1.0 sits just past the profile's range)
            if any(ev.clamped.get(k, np.zeros(1, bool)).any() for k in ("velocity", "acceleration")):
                report.clamped_ticks += 1
            if any(ev.clamped.get(k, np.zeros(1, bool)).any() for k in ("position", "gripper")) or ev.rejected:
                report.position_clamped_ticks += 1
            # reach error: where the gripper is when the policy closes it (command from above 0.8 to
            # below 0.3: a grasp attempt, not a momentary dip; measured closure would miss real
            # grasps, where the cube keeps the fingers open)
            for arm, g in GRIPPER_INDEX.items():
                if cmd[g] > 0.8:
                    gripper_open[arm] = True
                elif gripper_open[arm] and cmd[g] < 0.3:
                    gripper_open[arm] = False
                    if arm not in report.reach_error_m:
                        # the grasp point between the fingertips: ee_gripper_link sits 3.8 cm from
                        # the cube's centre in the scripted demonstrator's own grasps
                        p = sim.grasp_point(arm)
                        objs = [np.asarray(v, float) for v in sim.object_positions().values()]
                        report.reach_error_m[arm] = float(min(np.linalg.norm(o - p) for o in objs))
            sim.apply_action(cmd)
            last_cmd = cmd
        if t % strip_every == 0:
            f = frames["cam_high"] if frames and "cam_high" in frames else sim.render(("cam_high",))["cam_high"]
            report.strip.append(f.rgb)
        joints.append(last_cmd if last_cmd is not None else state)
        measured.append(state)
        sim.step()
        if sim.success():
            report.success_step = t + 1 if report.success_step is None else report.success_step
        else:
            report.success_step = None
    report.chunks_rejected = {k: int(v) for k, v in ex.rejections.items() if v}
    report.success = bool(sim.success())
    report.progress = float(sim.task.progress)
    report.chunk_jump_rad = float(np.mean(jumps)) if jumps else float("nan")
    report.inference_ms = float(np.mean(lat)) if lat else float("nan")
    report.joints, report.measured = np.asarray(joints), np.asarray(measured)
    return report


def evaluate(policy_dir, task: str, opts: EvalOptions, out: Path | None = None, progress: bool = True) -> dict:
    """`opts.episodes` seeded episodes (seeds opts.seed ...); the summary (and OUT/report.md, strips,
    joint plots when `out` is given)."""
    from clamp_sim.aloha_sim import AlohaSim
    from clamp_sim.scripted import make_scripted_policy
    from tqdm import tqdm

    policy = LivePolicy(policy_dir, opts.inference_steps, opts.seed, opts.samples or profile_samples(opts.profile))
    horizon = int(opts.horizon) or make_scripted_policy(task).horizon
    reports = []
    t0 = time.perf_counter()
    with AlohaSim(task, image_size=tuple(int(v) for v in opts.image_size)) as sim:
        bar = tqdm(range(opts.episodes), desc=f"evaluate {task}", unit="ep", disable=not progress)
        for i in bar:
            reports.append(run_episode(sim, policy, opts.seed + i, opts, horizon))
            bar.set_postfix(ok=sum(r.success for r in reports))
    summary = summarize(task, reports, str(policy_dir))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["samples"] = policy.runner.num_samples
    if out is not None:
        write_report(summary, reports, Path(out))
    return summary


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % (z = 1.96) Wilson score interval of a success rate: unlike the normal approximation it
    stays inside [0, 1] and is not empty at 0/n or n/n, the usual results of 20-episode evaluations."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(task: str, reports: list[EpisodeReport], policy: str = "") -> dict:
    reach = [v for r in reports for v in r.reach_error_m.values()]
    ticks = sum(r.command_ticks for r in reports)
    successes = sum(r.success for r in reports)
    success_steps = [r.success_step for r in reports if r.success]
    return {
        "task": task,
        "policy": policy,
        "episodes": len(reports),
        "successes": int(successes),
        "success_rate": float(np.mean([r.success for r in reports])) if reports else 0.0,
        "success_ci95": [round(v, 3) for v in wilson_interval(successes, len(reports))],
        "mean_progress": float(np.mean([r.progress for r in reports])) if reports else 0.0,
        "reach_error_m": float(np.mean(reach)) if reach else None,
        "grasp_attempts": len(reach),
        # control steps to the settled success (the policy's speed against the demonstrations')
        "success_step_median": float(np.median(success_steps)) if success_steps else None,
        "clamped_fraction": sum(r.clamped_ticks for r in reports) / max(ticks, 1),
        "position_clamped_fraction": sum(r.position_clamped_ticks for r in reports) / max(ticks, 1),
        "chunk_jump_rad": float(np.nanmean([r.chunk_jump_rad for r in reports])) if reports else None,
        "inference_ms": float(np.nanmean([r.inference_ms for r in reports])) if reports else None,
        "per_episode": [r.to_json() for r in reports],
    }


def write_report(summary: dict, reports: list[EpisodeReport], out: Path) -> None:
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        f"# {summary['task']}: {summary['successes']}/{summary['episodes']} succeeded "
        f"(95 % Wilson interval {summary['success_ci95'][0]:.0%}-{summary['success_ci95'][1]:.0%})",
        "",
        f"policy `{summary['policy']}`; reach error at the grasp {summary['reach_error_m']} m; limiter clamped "
        f"{summary['clamped_fraction']:.1%} of command ticks; inference {summary['inference_ms']:.0f} ms/chunk",
        "",
        "| seed | success | progress | reach error (m) | clamped | chunk jump (rad) | filmstrip |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        j = r.to_json()
        strip = f"strips/{r.task}_seed{r.seed}.png"
        reach = ", ".join(f"{a.split('_')[-1]} {v:.3f}" for a, v in r.reach_error_m.items()) or "no grasp"
        lines.append(
            f"| {r.seed} | {r.success} | {r.progress:.2f} | {reach} | {j['clamped_fraction']:.1%} | "
            f"{j['chunk_jump_rad']} | ![]({strip}) |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "strips").mkdir(exist_ok=True)
    for r in reports:
        n = len(r.strip)
        fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.0))
        for i, ax in enumerate(np.atleast_1d(axes)):
            ax.imshow(r.strip[i])
            ax.set_axis_off()
        fig.suptitle(f"{r.task} seed {r.seed}: {'success' if r.success else 'failure'}", fontsize=9)
        fig.savefig(out / "strips" / f"{r.task}_seed{r.seed}.png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        if r.joints is not None:
            fig, axes = plt.subplots(2, 7, figsize=(16, 4.5), sharex=True)
            for j, ax in enumerate(axes.ravel()):
                ax.plot(r.joints[:, j], lw=1, label="commanded")
                ax.plot(r.measured[:, j], lw=1, alpha=0.7, label="measured")
                ax.set_title(rig.ACTION_NAMES[j], fontsize=7)
                ax.tick_params(labelsize=6)
            axes[0, 0].legend(fontsize=6)
            fig.suptitle(f"{r.task} seed {r.seed} joints (control steps)", fontsize=9)
            fig.tight_layout()
            fig.savefig(out / "strips" / f"{r.task}_seed{r.seed}_joints.png", dpi=70)
            plt.close(fig)


def reliance(policy_dir, datasets: list, samples: int = 256, seed: int = 0) -> dict:
    """Diffusion loss of the policy on `samples` (held-out) demonstration steps with fixed noise and
    timesteps: as is, with the images (views and colour) shuffled between samples, and with the arm
    state shuffled. A policy that ignores what it sees loses little when the images are shuffled."""
    import torch
    from clamp_policy.models.checkpoint import load_policy

    from .dataset import ChunkDataset

    policy = load_policy(policy_dir).eval()
    cfg = policy.cfg
    ds = ChunkDataset(
        [str(d) for d in datasets],
        cfg.chunk_length,
        cfg.action_history,
        use_views=cfg.image_encoder.type != "none",
        progress=False,
        rgb_cameras=cfg.rgb.cameras,
    )
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds), size=min(samples, len(ds)), replace=False)
    items = [ds[int(i)] for i in idx]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "task"}
    batch["task"] = [it["task"] for it in items]
    gen = torch.Generator().manual_seed(seed)
    actions = batch.pop("actions")
    from clamp_policy.models.diffusion_policy import diffused_length

    noise = torch.randn((len(idx), diffused_length(cfg), cfg.action_dim), generator=gen)
    t = torch.randint(0, cfg.train_timesteps, (len(idx),), generator=gen)
    perm = torch.from_numpy(rng.permutation(len(idx)))
    obs = {k: batch[k] for k in policy.required_obs_keys()}
    images = [k for k in ("views", "rgb") if k in obs]
    out = {}
    with torch.no_grad():
        out["loss"] = float(policy.loss(obs, actions, noise=noise, timesteps=t))
        if images:
            out["loss_images_shuffled"] = float(
                policy.loss({**obs, **{k: obs[k][perm] for k in images}}, actions, noise=noise, timesteps=t)
            )
        shuffled = {**obs, "state": obs["state"][perm]}
        out["loss_state_shuffled"] = float(policy.loss(shuffled, actions, noise=noise, timesteps=t))
    out["samples"] = len(idx)
    return out
