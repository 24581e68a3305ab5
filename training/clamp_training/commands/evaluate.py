"""`python -m clamp_training evaluate --policy DIR --task TASK --episodes N --seed S [--out DIR]`

Closed-loop episodes in clamp_sim executed like the robot (ChunkExecutor + the profile's limits,
chunks stamped with the observation time and delivered after the inference latency), with the
grounding diagnostics of clamp_training.evaluation, and the linear probe to the task's objects from
the frozen CLAMP tokens and the colour keypoints on `--probe-scenes` rendered start scenes
(clamp_training.grounding.probe_scenes). The last output line is one JSON object with at least
{"task", "episodes", "successes"}.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from clamp_training.evaluation import EvalOptions, evaluate
    from clamp_training.grounding import PROBE_SCENES, PROBE_SEED

    d = EvalOptions()
    ap = argparse.ArgumentParser(prog="python -m clamp_training evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="exported policy dir (model.safetensors + config.json)")
    ap.add_argument("--task", required=True, help="clamp_sim task (place_cube, transfer_cube, insertion)")
    ap.add_argument("--episodes", type=int, default=d.episodes)
    ap.add_argument("--seed", type=int, default=d.seed, help="first episode seed (unseen by training: >= 5000)")
    ap.add_argument("--execute-steps", type=int, default=d.execute_steps, help="ticks between inferences")
    ap.add_argument("--inference-steps", type=int, default=d.inference_steps, help="DDIM steps")
    ap.add_argument(
        "--samples", type=int, default=d.samples, help="chunks drawn per inference and averaged (0: the profile's)"
    )
    ap.add_argument("--image-size", type=int, nargs=2, default=list(d.image_size), metavar=("H", "W"))
    ap.add_argument(
        "--horizon", type=int, default=d.horizon, help="control steps per episode (0: the task's scripted horizon)"
    )
    ap.add_argument("--profile", default=d.profile, help="robot profile for executor settings and limits")
    ap.add_argument(
        "--latency-ms",
        type=float,
        default=d.latency_ms,
        help="observation -> chunk at the executor (inference + DDS); -1: each inference's measured wall time",
    )
    ap.add_argument(
        "--data",
        nargs="+",
        default=[],
        help="converted demonstrations (clamp_sim's, held out): adds the reliance and linear-probe diagnostics "
        "(probe: from the colour keypoints; probe_clamp: from the frozen CLAMP encoder, data with views)",
    )
    ap.add_argument(
        "--probe-scenes",
        type=int,
        default=PROBE_SCENES,
        help="start scenes for the linear probe from the frozen CLAMP tokens and the colour keypoints to the "
        "objects (a fifth held out; ~0.05 s each); 0: no probe",
    )
    ap.add_argument("--probe-seed", type=int, default=PROBE_SEED, help="the probe scenes' first seed")
    ap.add_argument("--out", default=None, help="report dir: report.md, strips, joint plots, summary.json")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.probe_scenes != 0 and a.probe_scenes < 5:
        ap.error(
            f"--probe-scenes {a.probe_scenes}: the probe needs at least 5 scenes (4 fitted, 1 held out); 0 skips it"
        )
    import torch

    torch.set_num_threads(1)  # fastest for one small model on a shared CPU
    opts = EvalOptions(
        episodes=a.episodes,
        seed=a.seed,
        execute_steps=a.execute_steps,
        inference_steps=a.inference_steps,
        samples=a.samples,
        image_size=tuple(a.image_size),
        profile=a.profile,
        horizon=a.horizon,
        latency_ms=a.latency_ms,
    )
    from clamp_policy.models.checkpoint import CheckpointError

    try:
        summary = evaluate(a.policy, a.task, opts, a.out, progress=not a.no_progress)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.data:
        from clamp_training.grounding import grounding_report

        summary.update(grounding_report(a.policy, a.data))  # reliance, probe, probe_clamp
    if a.probe_scenes:
        from clamp_training.grounding import probe_scenes

        summary["probe_scenes"] = probe_scenes(
            a.policy, a.task, a.probe_scenes, a.probe_seed, image_size=tuple(a.image_size), progress=not a.no_progress
        )
    if a.out and (a.data or a.probe_scenes):  # the diagnostics came after the report: into its summary.json too
        from pathlib import Path

        Path(a.out, "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    per = summary.pop("per_episode")
    for e in per:
        print(json.dumps(e))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
