"""The CLAMP few-demonstration experiment, end to end on clamp_sim (and the cached pipeline stages
that `make demo` shares with it).

    python -m clamp_training experiment [--config training/configs/experiment_cpu.yaml] [--out DIR]

1. scripted demonstrations (clamp_sim.generate) of the pretraining tasks and of a held-out task,
   each episode converted (clamp_training.convert, i.e. the perception pipeline) into its own dataset;
2. CLAMP pretraining (clamp_training.train, stage pretrain) on the pretraining tasks only, or an
   existing pretraining run / the shipped checkpoint (`pretrained`) whose data left the held-out task out;
3. for each number of held-out demonstrations N, training seed and arm, fine-tuning (stage finetune,
   `finetune.init_policy`), the two arms alike in everything but the initial weights:
   `clamp`   = the CLAMP-pretrained policy, its 3D encoder frozen (the paper's recipe);
   `scratch` = the same architecture from a random initialisation (encoder random and frozen, so
               both arms cost the same per step and see the same data for the same steps);
4. evaluation through the robot-faithful evaluator (clamp_training.evaluation: ChunkExecutor with the
   profile's limits and workspace guard, the profile's samples per chunk, 60 ms latency);
5. OUT/results.md + results.json (success with 95 % Wilson intervals), success_vs_demos.png,
   finetune_curves.png, pretrain_curves.png.

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
    # a CLAMP pretraining run or checkpoint dir (e.g. models/clamp_cpu) to fine-tune from instead of
    # pretraining here; its pretraining data must not contain the held-out task
    "pretrained": "",
    "data": {
        "image_size": [96, 128],  # rendered camera size (H, W); views are always 5 x 224 x 224
        "camera_hz": 10.0,
        "pretrain_tasks": ["transfer_cube", "insertion"],
        "pretrain_episodes": 8,  # successful scripted demonstrations per pretraining task, seeds 0..
        "heldout_task": "place_cube",
        "heldout_seed": 1000,  # fine-tuning demonstrations: the first N successful from this seed
        "workers": 2,  # generation and conversion processes
        "require_success": True,  # train only on demonstrations the scripted demonstrator completed
    },
    # TrainConfig keys (clamp_training.config) for pretraining over the `clamp_small` preset; an
    # older `train:` mapping inside is read as top-level keys
    "pretrain": {"steps": 600, "batch_size": 32, "threads": 1, "val_fraction": 0.1},
    "finetune": {
        "demos": [5, 10, 20],
        "seeds": [0, 1, 2],
        "arms": ["clamp", "scratch"],
        # TrainConfig keys of the fine-tuning run; its policy is the pretrained one (init_policy)
        "train": {"epochs": 10, "batch_size": 64, "lr": 1e-3, "threads": 1, "log_every": 20},
    },
    # clamp_training.evaluation.EvalOptions: the robot-faithful evaluator
    "evaluate": {
        "episodes": 20,
        "seed": 5000,
        "execute_steps": 10,
        "inference_steps": 10,
        "samples": 0,  # chunks averaged per inference; 0 = the profile's
        "latency_ms": 60.0,
        "profile": "sim",
        "horizon": 0,  # control steps per episode; 0 = the task's scripted horizon
    },
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
    for section in ("data", "finetune", "evaluate"):
        bad = sorted(set(user.get(section) or {}) - set(DEFAULT_CONFIG[section]))
        if bad:
            known = sorted(DEFAULT_CONFIG[section])
            raise ExperimentError(f"{path}: unknown key(s) {bad} in {section}; known: {known}")
    cfg = deep_merge(deep_merge(DEFAULT_CONFIG, user), overrides)
    user_train = (user.get("finetune") or {}).get("train") or {}
    if "steps" in user_train and "epochs" not in user_train:  # the config's step count, not the default epochs
        cfg["finetune"]["train"]["epochs"] = 0
    demos = cfg["finetune"]["demos"]
    if not demos or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in demos):
        raise ExperimentError(f"finetune.demos {demos} must be positive whole numbers of demonstrations, e.g. [5, 10]")
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

        sim_modules = ("aloha_sim", "tasks", "scripted", "demonstrations", "evaluation", "generate")
        files = [sim / f"{m}.py" for m in sim_modules]
        files += [per / f"{m}.py" for m in ("pipeline", "fusion", "render", "transforms", "sync")]
        files += [_module_dir("clamp_core") / f"{m}.py" for m in ("rig", "episode_bag")]
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
        h.update(f.read_bytes())  # a listed file that is gone is an error here, not a silent constant
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


def pretrained_policy(path, heldout_task: str) -> Path:
    """The policy dir of an existing CLAMP pretraining run or checkpoint (`pretrained`), refused when its
    pretraining data contains the held-out task (then it is not held out)."""
    from clamp_policy.models.checkpoint import read_config

    from .stages import resolve_init

    policy = resolve_init(path)
    _, doc = read_config(policy)
    data = str((doc.get("metadata") or {}).get("datasets") or "")
    if f"/{heldout_task}_seed" in data or f"'{heldout_task}_seed" in data:
        raise ExperimentError(
            f"pretrained {path} was pretrained on {heldout_task} demonstrations: it is not held out. Pretrain "
            f"without it (data.pretrain_tasks, `pretrained: ''`) or hold out another task"
        )
    return policy


def random_init(init: Path, data: list[Path], out: Path, seed: int) -> Path:
    """The architecture of the policy at `init`, randomly initialised (torch seed `seed`), normalised
    for `data`, saved as a policy dir: the `scratch` arm's starting point."""
    import torch
    from clamp_policy.models import DiffusionPolicy
    from clamp_policy.models.checkpoint import read_config, save_policy

    from .dataset import dataset_stats, policy_stats

    cfg, _ = read_config(init)
    torch.manual_seed(seed)
    policy = DiffusionPolicy(cfg)
    policy.set_normalization(policy_stats(dataset_stats([str(d) for d in data])))
    return save_policy(policy, out, metadata={"init": "random", "seed": seed, "architecture_of": str(init)})


def finetune_stage(init: Path, data: list[Path], out: Path, train: dict, progress: bool = True, device="auto") -> dict:
    """Fine-tune the policy at `init` (encoder frozen, every weight from `init`) into `out`; kept when
    its summary exists for the same inputs. Returns the summary."""
    from clamp_policy.models.checkpoint import read_config

    from .train import build_config
    from .train import train as run_training

    policy, _ = read_config(init)
    doc = {
        **train_doc(train),
        "stage": "finetune",
        "policy": policy.to_dict(),  # init_policy needs the same architecture
        "task_conditioning": "none",  # as pretrained: the policy reads no task token
        "finetune": {"clamp_checkpoint": str(init), "freeze_encoders": True, "init_policy": True},
        "device": device,
    }
    cfg = build_config(None, None, doc)
    key = digest("finetune", str(init), sorted(str(d) for d in data), cfg.to_dict(), code_digest("train"))
    done = out / "stage.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key and (out / "policy").is_dir():
        return {**json.loads((out / "summary.json").read_text()), "cached": True}
    shutil.rmtree(out, ignore_errors=True)
    summary = run_training(cfg, [str(d) for d in data], out, resume=False, progress=progress)
    done.write_text(json.dumps({"key": key}) + "\n")
    return summary


def evaluate_run(policy_dir, task: str, ev: dict, image_size, out: Path | None, progress=True) -> dict:
    """`ev["episodes"]` seeded episodes through clamp_training.evaluation (the robot-faithful evaluator)."""
    from .evaluation import EvalOptions, evaluate

    opts = EvalOptions(**{**ev, "image_size": tuple(int(v) for v in image_size)})
    return evaluate(policy_dir, task, opts, out, progress)


# -------------------------------------------------------------------------------------- report
def _mean_sd(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std()) if len(a) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[dict]:
    """Per arm and N: successes pooled over training seeds with a 95 % Wilson interval, and the
    spread of the per-seed success rates."""
    from .evaluation import wilson_interval

    out = []
    for arm in ARMS:
        for n in sorted({r["demos"] for r in rows}):
            rs = [r for r in rows if r["arm"] == arm and r["demos"] == n]
            if not rs:
                continue
            episodes = int(sum(r["eval"]["episodes"] for r in rs))
            successes = int(sum(r["eval"]["successes"] for r in rs))
            s, p = _mean_sd([r["eval"]["success_rate"] for r in rs]), _mean_sd([r["eval"]["mean_progress"] for r in rs])
            reach = [r["eval"]["reach_error_m"] for r in rs if r["eval"].get("reach_error_m") is not None]
            out.append(
                {
                    "arm": arm,
                    "demos": n,
                    "seeds": len(rs),
                    "episodes": episodes,
                    "successes": successes,
                    "success_rate": successes / max(episodes, 1),
                    "success_ci95": list(wilson_interval(successes, episodes)),
                    "success_sd": s[1],
                    "progress_mean": p[0],
                    "progress_sd": p[1],
                    "reach_error_m": float(np.mean(reach)) if reach else None,
                    "steps": int(np.mean([r["finetune"]["step"] for r in rs])),
                    "finetune_s_mean": float(np.mean([r["seconds"]["finetune"] for r in rs])),
                    "final_loss_mean": float(np.mean([r["finetune"]["final_loss"] for r in rs])),
                }
            )
    return out


def write_results(cfg: dict, rows: list[dict], pre: dict, stages: Stages, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    d, ft, ev = cfg["data"], cfg["finetune"], cfg["evaluate"]
    doc = {
        "config": cfg,
        "pretrain": pre,
        "aggregate": agg,
        "runs": rows,
        "stage_seconds": {k: round(v, 1) for k, v in stages.times.items()},
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    source = cfg["pretrained"] or (
        f"CLAMP pretraining on {d['pretrain_episodes']} scripted demonstrations each of "
        f"{', '.join(d['pretrain_tasks'])} ({train_doc(cfg['pretrain']).get('steps', '?')} steps)"
    )
    lines = [
        "# CLAMP few-demonstration experiment (clamp_sim)",
        "",
        f"Pretrained: {source}. Held-out task: **{d['heldout_task']}**, fine-tuned on N scripted demonstrations "
        f"(seeds from {d['heldout_seed']}; training {train_doc(ft['train'])}), training seeds {ft['seeds']}.",
        "`clamp` = the CLAMP-pretrained policy, its 3D encoder frozen; `scratch` = the same architecture from a "
        "random initialisation (encoder random, frozen); equal data, steps and cost per pair.",
        f"Success: {ev['episodes']} episodes per run (seeds from {ev['seed']}) through the robot-faithful evaluator "
        "(ChunkExecutor, the profile's limits and workspace guard), judged on the settled end state; successes pooled "
        "over training seeds with a 95 % Wilson interval; sd = spread of the per-seed rates.",
        "",
        "| arm | N demos | steps | seeds | successes / episodes | success (95 % CI) | sd over seeds "
        "| progress | reach error (cm) | fine-tune s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in agg:
        lo, hi = a["success_ci95"]
        reach = f"{100 * a['reach_error_m']:.1f}" if a["reach_error_m"] is not None else "-"
        lines.append(
            f"| {a['arm']} | {a['demos']} | {a['steps']} | {a['seeds']} | {a['successes']} / {a['episodes']} | "
            f"{a['success_rate']:.0%} ({lo:.0%}-{hi:.0%}) | {a['success_sd']:.0%} | {a['progress_mean']:.2f} | "
            f"{reach} | {a['finetune_s_mean']:.0f} |"
        )
    lines += ["", "Per run:", "", "| run | success | progress | final loss | fine-tune s | eval s |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['eval']['successes']}/{r['eval']['episodes']} | {r['eval']['mean_progress']:.2f} | "
            f"{r['finetune']['final_loss']:.4f} | {r['seconds']['finetune']:.0f} | {r['seconds']['evaluate']:.0f} |"
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

    # success against demonstrations and against fine-tuning steps (the paper's Fig. 1 axes)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for arm, colour in zip(ARMS, ("tab:blue", "tab:orange"), strict=True):
        rs = [a for a in agg if a["arm"] == arm]
        if not rs:
            continue
        rate = np.array([a["success_rate"] for a in rs])
        ci = np.array([a["success_ci95"] for a in rs])
        err = [rate - ci[:, 0], ci[:, 1] - rate]
        for ax, x in zip(axes[:2], ([a["demos"] for a in rs], [a["steps"] for a in rs]), strict=True):
            ax.errorbar(x, rate, yerr=err, marker="o", capsize=3, label=arm, color=colour)
        axes[2].errorbar(
            [a["demos"] for a in rs], [a["progress_mean"] for a in rs], yerr=[a["progress_sd"] for a in rs],
            marker="o", capsize=3, label=arm, color=colour,
        )  # fmt: skip
    titles = ("success (95 % Wilson CI)", "success against fine-tuning steps", "task progress at the end (sd)")
    xlabels = (f"{d['heldout_task']} demonstrations", "fine-tuning steps", f"{d['heldout_task']} demonstrations")
    for ax, title, xl in zip(axes, titles, xlabels, strict=True):
        ax.set_xlabel(xl)
        ax.set_title(title)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "success_vs_demos.png", dpi=100)
    plt.close(fig)

    # fine-tuning curves
    import csv

    demos = sorted({r["demos"] for r in rows})
    fig, axes = plt.subplots(1, len(demos), figsize=(4 * len(demos), 3.2), squeeze=False)
    for ax, n in zip(axes[0], demos, strict=True):
        for r in [r for r in rows if r["demos"] == n]:
            with open(Path(r["run"], "log.csv")) as f:
                metrics = list(csv.DictReader(f))
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
    held_task = d["heldout_task"]
    if cfg["pretrained"]:  # refused before any work when it has seen the held-out task
        pre_policy = pretrained_policy(cfg["pretrained"], held_task)

    with stages.stage(
        "demonstrations",
        f"scripted episodes of {held_task}" + ("" if cfg["pretrained"] else f" + {d['pretrain_tasks']}"),
    ):
        common = dict(
            image_size=d["image_size"],
            camera_hz=d["camera_hz"],
            cache=cache,
            workers=int(d["workers"]),
            require_success=bool(d["require_success"]),
        )
        pre_data = []
        if not cfg["pretrained"]:
            for task in d["pretrain_tasks"]:
                pre_data += episode_datasets(task, int(d["pretrain_episodes"]), 0, progress=progress, **common)
        held = episode_datasets(held_task, max(ft["demos"]), int(d["heldout_seed"]), progress=progress, **common)
    if cfg["pretrained"]:
        pre_summary = {"pretrained": str(pre_policy)}
        retrieval = pre_policy.parent / "retrieval.json"
        if retrieval.is_file():
            pre_summary["retrieval"] = json.loads(retrieval.read_text())
        if (pre_policy.parent / "loss.png").is_file():
            shutil.copy(pre_policy.parent / "loss.png", out / "pretrain_curves.png")
    else:
        with stages.stage("pretrain", f"CLAMP on {len(pre_data)} episodes") as info:
            pre_run, info["cached"] = pretrain_stage(cfg["pretrain"], pre_data, cache, progress, cfg["device"])
        pre_policy = pre_run / "policy"
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
            init = pre_policy if arm == "clamp" else random_init(pre_policy, data, out / "runs" / f"init_{name}", seed)
            summary = finetune_stage(init, data, run, train, progress, cfg["device"])
        t1 = time.perf_counter()
        key = digest((run / "stage.json").read_text(), ev, d["image_size"])
        if result_file.is_file() and json.loads(result_file.read_text()).get("key") == key:
            rows.append(json.loads(result_file.read_text()))
            continue
        with stages.stage("evaluate", f"{name}: {ev['episodes']} episodes of {held_task}"):
            result = evaluate_run(run / "policy", held_task, ev, d["image_size"], run / "eval", progress)
        row = {
            "name": name,
            "arm": arm,
            "demos": n,
            "seed": seed,
            "run": str(run),
            "finetune": summary,
            "eval": result,
            "seconds": {"finetune": t1 - t0, "evaluate": time.perf_counter() - t1},
            "key": key,
        }
        result_file.write_text(json.dumps(row, indent=1, default=str) + "\n")
        rows.append(row)
        print(
            f"   {name}: success {result['successes']}/{result['episodes']}, progress {result['mean_progress']:.2f}",
            flush=True,
        )
    doc = write_results(cfg, rows, pre_summary, stages, out)
    doc["total_seconds"] = time.perf_counter() - t_start
    return doc


def main(argv: list[str] | None = None) -> int:
    """Kept for callers of `clamp_training.experiment.main`: the command is clamp_training.commands.experiment."""
    from .__main__ import main as dispatch

    return dispatch(["experiment", *(argv if argv is not None else sys.argv[1:])])
