"""The CLAMP few-demonstration experiment, end to end on clamp_sim (and the cached pipeline stages
that `make demo` shares with it).

    python -m clamp_training experiment [--config training/configs/experiment_cpu.yaml] [--out DIR]

1. scripted demonstrations (clamp_sim.generate) of the pretraining tasks and of a held-out task,
   each episode converted (clamp_training.convert, i.e. the perception pipeline) into its own dataset;
2. CLAMP pretraining (clamp_training.train, stage pretrain) on the pretraining tasks only;
3. for each number of held-out demonstrations N, seed and arm, fine-tuning (stage finetune):
   `clamp`   = from the CLAMP-pretrained policy, CLAMP encoders frozen (the paper's recipe);
   `scratch` = the same architecture from a random initialisation, everything trained;
4. evaluation in the simulator, in-process (clamp_sim.evaluate.run_episode: rendered cameras ->
   clamp_perception views -> the exported policy via clamp_policy.inference.PolicyRunner), plus an
   offline action error on held-out demonstrations (a finer signal than success when success is rare);
5. OUT/results.md + results.json, success_vs_demos.png, finetune_curves.png, pretrain_curves.png.

Every stage is cached: episodes under CACHE/episodes/<key> (key = image size, camera rate and a hash
of the simulator / perception / conversion code), pretraining under CACHE/pretrain/<key>; finished
fine-tuning runs in OUT/runs/<arm>_n<N>_s<seed> are kept, so an interrupted experiment resumes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from clamp_core.config import ConfigError, deep_merge, read_yaml

DEFAULT_CONFIG: dict = {
    "out": "out/experiment",
    "cache": ".build/clamp_cache",  # shared with `make demo`
    "data": {
        "image_size": [96, 128],  # rendered camera size (H, W); views are always 5 x 224 x 224
        "camera_hz": 10.0,
        "pretrain_tasks": ["transfer_cube", "insertion"],
        "pretrain_episodes": 8,  # successful scripted demonstrations per pretraining task, seeds 0..
        "heldout_task": "place_cube",
        "heldout_seed": 1000,  # fine-tuning demonstrations: the first N successful from this seed
        "offline_seed": 3000,  # held-out demonstrations for the offline action error
        "offline_episodes": 3,
        "workers": 2,  # generation and conversion processes
        "require_success": True,  # train only on demonstrations the scripted demonstrator completed
    },
    # TrainConfig keys (clamp_training.config) for pretraining over the `clamp_small` preset; an
    # older `train:` mapping inside is read as top-level keys
    "pretrain": {"steps": 600, "batch_size": 32, "threads": 1, "val_fraction": 0.1},
    "finetune": {
        "demos": [5, 10, 25],
        "seeds": [0, 1],
        "arms": ["clamp", "scratch"],
        "train": {"steps": 200, "batch_size": 32, "lr": 3e-4, "threads": 1, "log_every": 10},
    },
    "evaluate": {
        "episodes": 5,
        "seed": 2000,
        "execute_steps": 10,
        "inference_steps": 5,
        "horizon": 0,  # control steps per episode; 0 = the task's scripted horizon
    },
    "offline": {"samples": 96, "inference_steps": 5},
    "threads": 1,  # torch CPU threads for evaluation (1 is fastest on a busy small CPU)
    "device": "auto",  # pretraining / fine-tuning device: auto = cuda when torch sees a GPU, else cpu
}
ARMS = ("clamp", "scratch")
RGB_SCALE = 1.0  # colour images kept at the rendered camera size (part of the episode cache key)


class ExperimentError(RuntimeError):
    """A configuration or stage problem; the message names it and the fix."""


# ------------------------------------------------------------------------------ config, hashing
def load_config(path: str | os.PathLike | None, overrides: dict | None = None) -> dict:
    user: dict = {}
    if path:
        try:
            user = read_yaml(path, "experiment config (see training/configs/experiment_*.yaml)")
        except ConfigError as exc:
            raise ExperimentError(str(exc)) from exc
    unknown = sorted(set(user) - set(DEFAULT_CONFIG))
    if unknown:
        raise ExperimentError(f"{path}: unknown section(s) {unknown}; sections are {sorted(DEFAULT_CONFIG)}")
    for section in ("data", "finetune", "evaluate", "offline"):
        bad = sorted(set(user.get(section) or {}) - set(DEFAULT_CONFIG[section]))
        if bad:
            known = sorted(DEFAULT_CONFIG[section])
            raise ExperimentError(f"{path}: unknown key(s) {bad} in {section}; known: {known}")
    cfg = deep_merge(deep_merge(DEFAULT_CONFIG, user), overrides)
    bad_arms = sorted(set(cfg["finetune"]["arms"]) - set(ARMS))
    if bad_arms:
        raise ExperimentError(f"finetune.arms {bad_arms} unknown; choose from {list(ARMS)}")
    d = cfg["data"]
    if d["heldout_task"] in d["pretrain_tasks"]:
        raise ExperimentError(f"data.heldout_task {d['heldout_task']!r} must not be one of data.pretrain_tasks")
    return cfg


def digest(*parts) -> str:
    """Short stable hash of JSON-able parts (cache keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _module_dir(name: str) -> Path:
    import importlib

    return Path(importlib.import_module(name).__file__).resolve().parent


def code_files(group: str) -> list[Path]:
    """Source files whose change invalidates a cached stage: `data` (simulator, perception,
    conversion) or `train` (training code and the policy models)."""
    sim, per, tr = _module_dir("clamp_sim"), _module_dir("clamp_perception"), _module_dir("clamp_training")
    if group == "data":
        from clamp_perception.pipeline import default_config_path

        files = [sim / f"{m}.py" for m in ("aloha_sim", "tasks", "scripted", "generate", "evaluate")]
        files += [per / f"{m}.py" for m in ("pipeline", "fusion", "render", "rig", "transforms", "episode_bag")]
        return [*files, default_config_path(), tr / "convert.py", tr / "dataset.py"]
    if group == "train":
        models = _module_dir("clamp_policy") / "models"
        modules = ("config", "train", "stages", "clamp_checkpoint", "contrastive_data", "prompts", "retrieval")
        files = [tr / f"{m}.py" for m in (*modules, "run_state", "export", "distributed")]
        return files + sorted(models.glob("*.py"))
    raise ValueError(group)


@functools.cache  # once per process: a running experiment keeps its keys
def code_digest(group: str) -> str:
    h = hashlib.sha256()
    for f in code_files(group):
        h.update(f.name.encode())
        h.update(f.read_bytes() if f.is_file() else b"<missing>")
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------------------- timing
class Stages:
    """Prints a banner per stage and records its wall time (seconds) in `times`."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.times: dict[str, float] = {}
        self.cached: dict[str, bool] = {}

    @contextlib.contextmanager
    def stage(self, name: str, what: str = ""):
        print(f"{self.prefix}== {name}{': ' + what if what else ''}", flush=True)
        t0 = time.perf_counter()
        info = {"cached": False}
        yield info
        dt = time.perf_counter() - t0
        self.times[name] = self.times.get(name, 0.0) + dt
        self.cached[name] = bool(info["cached"])
        print(f"{self.prefix}== {name} done in {dt:.1f} s{' (cached)' if info['cached'] else ''}", flush=True)


# ------------------------------------------------------------------------------------ episodes
def _bag_status(bag: Path) -> dict | None:
    import yaml

    f = bag / "episode.yaml"
    if not f.is_file():
        return None
    doc = yaml.safe_load(f.read_text()) or {}
    return doc if doc.get("status") == "complete" else None


def _convert_one(args: tuple[str, str, bool]) -> str:
    from .convert import ConvertOptions, convert

    bag, out, views = args
    tmp = Path(out + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # colour at the rendered size: the fine-tuned policy's RGB encoder reads cam_high + a wrist camera
    convert([bag], tmp, ConvertOptions(views=views, rgb_scale=RGB_SCALE), workers=1, progress=False)
    os.replace(tmp, out)  # a dataset dir exists only when complete
    return out


def episode_datasets(
    task: str,
    count: int,
    first_seed: int,
    image_size: Iterable[int],
    camera_hz: float,
    cache: str | os.PathLike,
    workers: int = 2,
    progress: bool = True,
    require_success: bool = True,
    views: bool = True,
) -> list[Path]:
    """`count` successful scripted demonstrations of `task` (seeds from `first_seed`, failed ones
    skipped), each converted into its own dataset dir; generated and converted only once.
    views=False converts without the CLAMP views (colour, state and actions only: ~10x faster), into
    its own dataset dirs beside the bags."""
    from clamp_sim.demonstrations import generate

    image_size = tuple(int(v) for v in image_size)
    key = digest("episodes", image_size, float(camera_hz), RGB_SCALE, code_digest("data"))
    root = Path(cache) / "episodes" / key
    bags, datasets = root / "bags", root / ("datasets" if views else "datasets_rgb")
    bags.mkdir(parents=True, exist_ok=True)
    datasets.mkdir(parents=True, exist_ok=True)
    (root / "key.json").write_text(json.dumps({"image_size": image_size, "camera_hz": camera_hz}) + "\n")
    chosen: list[str] = []
    seed = first_seed
    while len(chosen) < count:
        if seed > first_seed + 3 * count + 10:
            raise ExperimentError(
                f"the scripted {task} demonstrator failed too often (seeds {first_seed}..{seed}); "
                "check clamp_sim.scripted for this task"
            )
        need = count - len(chosen)
        batch = [s for s in range(seed, seed + need)]
        missing = [s for s in batch if _bag_status(bags / f"{task}_seed{s:04d}") is None]
        # contiguous runs of missing seeds: one simulator per run
        runs: list[list[int]] = []
        for s in missing:
            if runs and runs[-1][-1] == s - 1:
                runs[-1].append(s)
            else:
                runs.append([s])
        for run in runs:
            for s in run:  # a half-written bag from an interrupted run
                shutil.rmtree(bags / f"{task}_seed{s:04d}", ignore_errors=True)
            generate(
                task,
                len(run),
                run[0],
                bags,
                image_size=image_size,
                camera_hz=camera_hz,
                progress=progress,
                workers=workers,
            )
        for s in batch:
            st = _bag_status(bags / f"{task}_seed{s:04d}")
            if st and (st.get("success") or not require_success):
                chosen.append(f"{task}_seed{s:04d}")
        seed += need
    todo = [(str(bags / n), str(datasets / n), views) for n in chosen if not (datasets / n / "dataset.json").is_file()]
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"convert {task}", unit="ep", disable=not progress)
        if workers > 1 and len(todo) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_convert_one, todo):
                    bar.update()
        else:
            for t in todo:
                _convert_one(t)
                bar.update()
        bar.close()
    return [datasets / n for n in chosen]


# ------------------------------------------------------------------------------------ training
def torch_device(name: str = "auto") -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def train_doc(section: dict | None) -> dict:
    """TrainConfig keys from an experiment section: its own keys, a `train:` mapping (the older
    layout) flattened into them, `cache_bytes` as `cache_gb`."""
    section = dict(section or {})
    doc = {**section, **(section.pop("train", None) or {})}
    doc.pop("train", None)
    if "cache_bytes" in doc:
        doc["cache_gb"] = float(doc.pop("cache_bytes")) / 1e9
    return doc


def pretrain_config(pre_cfg: dict, device: str = "auto"):
    from .train import build_config

    return build_config(None, None, {**train_doc(pre_cfg), "stage": "pretrain", "device": device})


def pretrain_stage(
    pre_cfg: dict, data: list[Path], cache, progress: bool = True, device: str = "auto"
) -> tuple[Path, bool]:
    """CLAMP pretraining run dir (cached by config, data and training code); (run, was_cached)."""
    from .train import train

    cfg = pretrain_config(pre_cfg, device)
    key = digest("pretrain", cfg.to_dict(), sorted(str(d) for d in data), code_digest("train"))
    run = Path(cache) / "pretrain" / key
    if (run / "summary.json").is_file() and (run / "policy" / "config.json").is_file():
        return run, True
    tmp = run.with_name(key + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    train(cfg, [str(d) for d in data], tmp, resume=False, progress=progress)
    shutil.rmtree(run, ignore_errors=True)
    os.replace(tmp, run)
    return run, False


def random_init(pre_cfg: dict, data: list[Path], out: Path, seed: int) -> Path:
    """The pretraining architecture, randomly initialised, normalised for `data`, saved as a policy."""
    import torch
    from clamp_policy.models.checkpoint import save_policy

    from .clamp_checkpoint import build_clamp_model
    from .dataset import dataset_stats, policy_stats

    torch.manual_seed(seed)
    model, _ = build_clamp_model(pretrain_config(pre_cfg))
    model.policy.set_normalization(policy_stats(dataset_stats([str(d) for d in data])))
    return save_policy(model.policy, out, metadata={"init": "random", "seed": seed})


def finetune_stage(
    init: Path, data: list[Path], out: Path, train: dict, unfreeze: bool, progress: bool = True, device: str = "auto"
) -> dict:
    """Fine-tune into `out` (kept when its summary exists for the same inputs); returns the summary."""
    from .train import build_config
    from .train import train as run_training

    finetune = {"clamp_checkpoint": str(init), "freeze_encoders": not unfreeze}
    cfg = build_config(None, None, {**train_doc(train), "stage": "finetune", "finetune": finetune, "device": device})
    key = digest("finetune", str(init), sorted(str(d) for d in data), cfg.to_dict(), code_digest("train"))
    done = out / "stage.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key and (out / "policy").is_dir():
        return {**json.loads((out / "summary.json").read_text()), "cached": True}
    shutil.rmtree(out, ignore_errors=True)
    summary = run_training(cfg, [str(d) for d in data], out, resume=False, progress=progress)
    done.write_text(json.dumps({"key": key}) + "\n")
    return summary


# ---------------------------------------------------------------------------------- evaluation
class ViewsPolicy:
    """clamp_sim.evaluate policy: rendered cameras -> clamp_perception views -> exported policy.

    The same computation as the robot's perception and inference nodes (and as the conversion that
    made the training views): depth in mm through PerceptionPipeline, wrist views at the grippers'
    ee_gripper_link poses, tiled as on /clamp/views, then PolicyRunner.
    """

    needs_images = True

    def __init__(self, policy_dir, task: str, inference_steps: int = 5, seed: int = 0, horizon: int = 0):
        from clamp_perception.pipeline import PerceptionPipeline
        from clamp_policy.inference import PolicyRunner
        from clamp_policy.models.checkpoint import load_policy
        from clamp_sim.scripted import make_scripted_policy

        self.pipeline = PerceptionPipeline.from_config()
        self.runner = PolicyRunner(load_policy(policy_dir), inference_steps, seed=seed)
        self.horizon = int(horizon) or make_scripted_policy(task).horizon
        self.perception_ms: list[float] = []

    def __call__(self, obs: dict) -> np.ndarray:
        from clamp_perception.fusion import DepthFrame
        from clamp_policy.inference import Observation

        views = None
        if self.runner.needs_views:
            if not obs["frames"]:
                raise ExperimentError("the policy needs camera frames; run the episode with rendering")
            t0 = time.perf_counter()
            frames = {c: DepthFrame(f.depth_mm, f.K, f.T_world_cam, name=c) for c, f in obs["frames"].items()}
            v, _ = self.pipeline.process(frames, obs["gripper_poses"])
            views = self.pipeline.tile(v)
            self.perception_ms.append(1e3 * (time.perf_counter() - t0))
        rgb = None
        if self.runner.cfg.rgb.cameras:
            if not obs["frames"]:
                raise ExperimentError("the policy needs camera frames; run the episode with rendering")
            rgb = {c: obs["frames"][c].rgb for c in self.runner.cfg.rgb.cameras}
        o = Observation(stamp=float(obs["time"]), state=obs["state"], views=views, task=obs["task"], rgb=rgb)
        if self.runner.history_length:
            o.action_history = np.repeat(np.asarray(obs["state"])[None], self.runner.history_length, 0)
        return self.runner.infer(o).chunk


def evaluate_policy(
    policy_dir, task: str, episodes: int, seed: int, ev: dict, image_size, out: Path | None, progress=True
) -> dict:
    """Seeded in-process episodes with clamp_sim.evaluate.run_episode; the views are rendered only
    when the policy is asked (every execute_steps), as a 50 Hz robot with 10 Hz cameras would see them."""
    from clamp_sim.aloha_sim import AlohaSim
    from clamp_sim.evaluation import run_episode, save_strip, write_report
    from tqdm import tqdm

    policy = ViewsPolicy(policy_dir, task, int(ev["inference_steps"]), seed=seed, horizon=int(ev["horizon"]))
    k = int(ev["execute_steps"])
    results = []
    with AlohaSim(task, image_size=tuple(int(v) for v in image_size)) as sim:
        for i in tqdm(range(episodes), desc=f"evaluate {task}", unit="ep", disable=not progress, leave=False):
            r = run_episode(sim, policy, seed + i, policy.horizon, k, render_every=k, strip_every=policy.horizon // 6)
            results.append(r)
            if out is not None:
                (out / "strips").mkdir(parents=True, exist_ok=True)
                save_strip(r, out / "strips" / f"{task}_seed{r.seed}.png")
    summary = write_report(results, out, str(policy_dir))[task] if out is not None else {}
    return {
        "episodes": episodes,
        "success_rate": float(np.mean([r.success for r in results])),
        "successes": int(sum(r.success for r in results)),
        "mean_progress": float(np.mean([r.progress for r in results])),
        "policy_ms": float(np.mean([r.policy_ms for r in results])),
        "perception_ms": float(np.mean(policy.perception_ms)) if policy.perception_ms else None,
        "per_episode": [
            {"seed": r.seed, "success": bool(r.success), "progress": float(r.progress), "steps": r.steps}
            for r in results
        ],
        **({"report": summary} if summary else {}),
    }


def offline_error(policy_dir, data: list[Path], samples: int, inference_steps: int, seed: int = 0) -> dict:
    """Mean absolute error (rig units: rad, gripper 0..1) of sampled chunks against the demonstrated
    actions on held-out demonstrations; arm joints and grippers separately."""
    import torch
    from clamp_policy.models.checkpoint import load_policy

    from .contrastive_data import collate, open_clamp_data

    policy = load_policy(policy_dir)
    cfg = policy.cfg
    base = open_clamp_data([str(d) for d in data], cfg.chunk_length, cfg.action_history, cfg.image_encoder.view_size)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(base), size=min(samples, len(base)), replace=False)
    batch = collate([base[int(i)] for i in idx])
    obs = {k: batch[k] for k in policy.required_obs_keys()}
    with torch.inference_mode():
        pred = policy.sample(obs, inference_steps, generator=torch.Generator().manual_seed(seed))
    err = (pred - batch["actions"]).abs().numpy()
    grip = [6, 13]
    arm = [j for j in range(err.shape[-1]) if j not in grip]
    return {
        "samples": len(idx),
        "mae_arm_rad": float(err[..., arm].mean()),
        "mae_gripper": float(err[..., grip].mean()),
        "mae_first10_arm_rad": float(err[:, :10][..., arm].mean()),
    }


# -------------------------------------------------------------------------------------- report
def _mean_sd(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std()) if len(a) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[dict]:
    out = []
    for arm in ARMS:
        for n in sorted({r["demos"] for r in rows}):
            rs = [r for r in rows if r["arm"] == arm and r["demos"] == n]
            if not rs:
                continue
            s, p = _mean_sd([r["eval"]["success_rate"] for r in rs]), _mean_sd([r["eval"]["mean_progress"] for r in rs])
            e = _mean_sd([r["offline"]["mae_arm_rad"] for r in rs])
            out.append(
                {
                    "arm": arm,
                    "demos": n,
                    "seeds": len(rs),
                    "episodes": int(sum(r["eval"]["episodes"] for r in rs)),
                    "successes": int(sum(r["eval"]["successes"] for r in rs)),
                    "success_mean": s[0],
                    "success_sd": s[1],
                    "progress_mean": p[0],
                    "progress_sd": p[1],
                    "offline_mae_arm_mean": e[0],
                    "offline_mae_arm_sd": e[1],
                    "final_loss_mean": float(np.mean([r["finetune"]["final_loss"] for r in rs])),
                }
            )
    return out


def write_results(cfg: dict, rows: list[dict], pre: dict, stages: Stages, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    d = cfg["data"]
    doc = {
        "config": cfg,
        "pretrain": pre,
        "aggregate": agg,
        "runs": rows,
        "stage_seconds": {k: round(v, 1) for k, v in stages.times.items()},
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    ev = cfg["evaluate"]
    lines = [
        "# CLAMP few-demonstration experiment (clamp_sim)",
        "",
        f"Pretraining: CLAMP on {d['pretrain_episodes']} scripted demonstrations each of "
        f"{', '.join(d['pretrain_tasks'])} ({train_doc(cfg['pretrain']).get('steps', '?')} steps). "
        f"Held-out task: **{d['heldout_task']}**, fine-tuned on N demonstrations "
        f"({cfg['finetune']['train'].get('steps')} steps), seeds {cfg['finetune']['seeds']}.",
        "`clamp` = CLAMP-pretrained policy, encoders frozen; `scratch` = same architecture, random init, all trained.",
        f"Success: {ev['episodes']} simulated episodes per run (seeds from {ev['seed']}); progress = the task's "
        "progress in [0, 1] at the end; offline MAE = sampled chunk vs demonstrated actions on "
        f"{d['offline_episodes']} held-out demonstrations (arm joints, rad).",
        "",
        "| arm | N demos | seeds | success (mean ± sd) | successes / episodes | progress (mean ± sd) "
        "| offline MAE arm rad (mean ± sd) | final fine-tune loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in agg:
        lines.append(
            f"| {a['arm']} | {a['demos']} | {a['seeds']} | {a['success_mean']:.0%} ± {a['success_sd']:.0%} | "
            f"{a['successes']} / {a['episodes']} | {a['progress_mean']:.2f} ± {a['progress_sd']:.2f} | "
            f"{a['offline_mae_arm_mean']:.3f} ± {a['offline_mae_arm_sd']:.3f} | {a['final_loss_mean']:.3f} |"
        )
    lines += ["", "Per run:", "", "| run | success | progress | offline MAE arm | fine-tune s | eval s |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['eval']['successes']}/{r['eval']['episodes']} | {r['eval']['mean_progress']:.2f} | "
            f"{r['offline']['mae_arm_rad']:.3f} | {r['seconds']['finetune']:.0f} | {r['seconds']['evaluate']:.0f} |"
        )
    if pre.get("retrieval"):
        ret = pre["retrieval"]
        lines += [
            "",
            f"Pretraining retrieval on held-out pretraining episodes: image->action top-1 "
            f"{ret.get('image_to_action_top1', 0):.2f} (chance {ret.get('chance_top1', 0):.3f}), image->text top-1 "
            f"{ret.get('image_to_text_top1', 0):.2f} (chance {ret.get('text_chance_top1', 0):.2f}).",
        ]
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.times.items())]
    lines += ["", "![success](success_vs_demos.png)", "", "![curves](finetune_curves.png)", ""]
    (out / "results.md").write_text("\n".join(lines) + "\n")

    # success / progress / offline error vs number of demonstrations
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for arm, colour in zip(ARMS, ("tab:blue", "tab:orange"), strict=True):
        rs = [a for a in agg if a["arm"] == arm]
        if not rs:
            continue
        x = [a["demos"] for a in rs]
        for ax, key in zip(axes, ("success", "progress", "offline_mae_arm"), strict=True):
            ax.errorbar(
                x, [a[f"{key}_mean"] for a in rs], yerr=[a[f"{key}_sd"] for a in rs], marker="o", capsize=3,
                label=arm, color=colour,
            )  # fmt: skip
    for ax, title in zip(
        axes, ("success rate", "task progress at the end", "offline action MAE (arm, rad)"), strict=True
    ):
        ax.set_xlabel(f"{d['heldout_task']} demonstrations")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].set_ylim(-0.05, 1.05)
    fig.tight_layout()
    fig.savefig(out / "success_vs_demos.png", dpi=100)
    plt.close(fig)

    # fine-tuning curves
    demos = sorted({r["demos"] for r in rows})
    fig, axes = plt.subplots(1, len(demos), figsize=(4 * len(demos), 3.2), squeeze=False)
    for ax, n in zip(axes[0], demos, strict=True):
        for r in [r for r in rows if r["demos"] == n]:
            import csv

            metrics = list(csv.DictReader(open(Path(r["run"], "log.csv"))))
            ax.plot(
                [int(m["step"]) for m in metrics],
                [float(m["loss"]) for m in metrics],
                color="tab:blue" if r["arm"] == "clamp" else "tab:orange",
                alpha=0.8,
                label=f"{r['arm']} s{r['seed']}",
            )
        ax.set_title(f"N = {n}")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("diffusion loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "finetune_curves.png", dpi=100)
    plt.close(fig)
    return doc


# ------------------------------------------------------------------------------------------ main
def run_experiment(cfg: dict, progress: bool = True) -> dict:
    import torch

    torch.set_num_threads(max(1, int(cfg["threads"])))
    out, cache = Path(cfg["out"]), Path(cfg["cache"])
    out.mkdir(parents=True, exist_ok=True)
    d, ft, ev = cfg["data"], cfg["finetune"], cfg["evaluate"]
    stages = Stages()
    t_start = time.perf_counter()

    with stages.stage("demonstrations", f"scripted episodes of {d['pretrain_tasks']} + {d['heldout_task']}"):
        common = dict(
            image_size=d["image_size"],
            camera_hz=d["camera_hz"],
            cache=cache,
            workers=int(d["workers"]),
            require_success=bool(d["require_success"]),
        )
        pre_data = []
        for task in d["pretrain_tasks"]:
            pre_data += episode_datasets(task, int(d["pretrain_episodes"]), 0, progress=progress, **common)
        held_task = d["heldout_task"]
        held = episode_datasets(held_task, max(ft["demos"]), int(d["heldout_seed"]), progress=progress, **common)
        offline = episode_datasets(
            d["heldout_task"], int(d["offline_episodes"]), int(d["offline_seed"]), progress=progress, **common
        )
    with stages.stage("pretrain", f"CLAMP on {len(pre_data)} episodes") as info:
        pre_run, info["cached"] = pretrain_stage(cfg["pretrain"], pre_data, cache, progress, cfg["device"])
    pre_summary = json.loads((pre_run / "summary.json").read_text())
    shutil.copy(pre_run / "loss.png", out / "pretrain_curves.png")

    rows = []
    runs = [(n, s, a) for n in ft["demos"] for s in ft["seeds"] for a in ft["arms"]]
    for i, (n, seed, arm) in enumerate(runs):
        name = f"{arm}_n{n}_s{seed}"
        run = out / "runs" / name
        result_file = run / "result.json"
        data = held[:n]
        train = {**ft["train"], "seed": int(seed)}
        t0 = time.perf_counter()
        with stages.stage("finetune", f"[{i + 1}/{len(runs)}] {name}"):
            if arm == "clamp":
                init = pre_run
            else:
                init = random_init(cfg["pretrain"], data, out / "runs" / f"init_{name}", int(seed))
            summary = finetune_stage(init, data, run, train, arm == "scratch", progress, cfg["device"])
        t1 = time.perf_counter()
        key = digest((run / "stage.json").read_text(), ev, cfg["offline"], d["image_size"])
        if result_file.is_file() and json.loads(result_file.read_text()).get("key") == key:
            rows.append(json.loads(result_file.read_text()))
            continue
        with stages.stage("evaluate", f"{name}: {ev['episodes']} episodes of {d['heldout_task']}"):
            result = evaluate_policy(
                run / "policy", d["heldout_task"], int(ev["episodes"]), int(ev["seed"]), ev, d["image_size"],
                run / "eval", progress,
            )  # fmt: skip
            off_cfg = cfg["offline"]
            off = offline_error(run / "policy", offline, int(off_cfg["samples"]), int(off_cfg["inference_steps"]))
        row = {
            "name": name,
            "arm": arm,
            "demos": n,
            "seed": seed,
            "run": str(run),
            "finetune": summary,
            "eval": result,
            "offline": off,
            "seconds": {"finetune": t1 - t0, "evaluate": time.perf_counter() - t1},
            "key": key,
        }
        result_file.write_text(json.dumps(row, indent=1, default=str) + "\n")
        rows.append(row)
        print(
            f"   {name}: success {result['successes']}/{result['episodes']}, progress {result['mean_progress']:.2f}, "
            f"offline MAE {off['mae_arm_rad']:.3f} rad",
            flush=True,
        )
    doc = write_results(cfg, rows, pre_summary, stages, out)
    doc["total_seconds"] = time.perf_counter() - t_start
    return doc


def main(argv: list[str] | None = None) -> int:
    """Kept for callers of `clamp_training.experiment.main`: the command is clamp_training.commands.experiment."""
    from .__main__ import main as dispatch

    return dispatch(["experiment", *(argv if argv is not None else sys.argv[1:])])
