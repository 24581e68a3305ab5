"""Benchmark: physics steps/s, render ms per camera, and a full control step with 4 RGB-D cameras
at 240x424 and 480x640, with render_quality "fast" (no shadows/MSAA) and "gym" (gym-aloha's
settings), against gym-aloha's own `env.step` (joint-space transfer_cube, 480x640 'top' camera)
in the same run. Prints one JSON line.

    python -m clamp_sim.bench [--repeats N]

`--timing-leak TASK` instead measures how well the arm state tells *when* the gripper will close in
the scripted demonstrations, with and without their seeded variation: for each state before the
right gripper closes, the nearest state (Euclidean, 14-D) of the other episodes predicts the steps
left until it closes (leave one episode out). Prints the mean absolute error in steps for the
nominal timetable and for the varied demonstrations, and the spread of the closing step.

    python -m clamp_sim.bench --timing-leak place_cube --episodes 20
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from clamp_core import rig

from clamp_sim.aloha_sim import AlohaSim


def _timeit(fn, repeats: int) -> float:
    fn()  # warm-up (GL context, caches)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def gym_aloha_step_s(repeats: int) -> float:
    import gym_aloha  # noqa: F401  registers gym_aloha/AlohaTransferCube-v0
    import gymnasium as gym

    env = gym.make("gym_aloha/AlohaTransferCube-v0", obs_type="pixels", render_mode="rgb_array")
    env.reset(seed=0)
    action = np.zeros(14)
    action[:6] = action[7:13] = [0.0, -0.96, 1.16, 0.0, -0.3, 0.0]
    s = _timeit(lambda: env.step(action), repeats)
    env.close()
    return s


def _close_countdown(task: str, episodes: int, vary: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per episode: (states before the right gripper is commanded closed, steps left until then)."""
    from clamp_sim.evaluation import run_episode
    from clamp_sim.scripted import POLICIES

    policy = POLICIES[task](task, vary=vary)
    out = []
    with AlohaSim(task, image_size=(48, 64)) as sim:
        for seed in range(episodes):
            states, grip = [], []

            def record(s, t, a, f, states=states, grip=grip):
                states.append(s.state())
                grip.append(a[13])

            run_episode(sim, policy, seed, policy.horizon, render_every=None, on_step=record, stop_on_success=True)
            close = int(np.argmax(np.array(grip) < 0.5))
            out.append((np.array(states[:close]), close - np.arange(close)))
    return out


def timing_leak(task: str, episodes: int) -> dict:
    res: dict = {"bench": "clamp_sim.timing_leak", "task": task, "episodes": episodes}
    for name, vary in (("nominal", False), ("varied", True)):
        eps = _close_countdown(task, episodes, vary)
        errors = []
        for i, (x, y) in enumerate(eps):
            others_x = np.concatenate([e[0] for j, e in enumerate(eps) if j != i])
            others_y = np.concatenate([e[1] for j, e in enumerate(eps) if j != i])
            d = ((x[:, None, :] - others_x[None]) ** 2).sum(-1)
            errors.append(np.abs(others_y[d.argmin(1)] - y))
        res[f"{name}_countdown_mae_steps"] = round(float(np.concatenate(errors).mean()), 1)
        closes = [len(e[1]) for e in eps]
        res[f"{name}_close_step_mean"] = round(float(np.mean(closes)), 1)
        res[f"{name}_close_step_std"] = round(float(np.std(closes)), 1)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--timing-leak", metavar="TASK", help="measure how well the state tells the time (see above)")
    ap.add_argument("--episodes", type=int, default=20, help="episodes per setting for --timing-leak")
    args = ap.parse_args(argv)
    if args.timing_leak:
        print(json.dumps(timing_leak(args.timing_leak, args.episodes)))
        return
    out: dict = {"bench": "clamp_sim"}
    with AlohaSim("transfer_cube", image_size=(480, 640)) as sim:
        n = 2000
        t0 = time.perf_counter()
        sim.step_physics(n * sim.model.opt.timestep)
        out["physics_steps_per_s"] = round(n / (time.perf_counter() - t0))
        out["control_steps_per_s_no_render"] = round(1.0 / _timeit(sim.step, 50))
    for quality in ("fast", "gym"):
        for h, w in ((240, 424), (480, 640)):
            with AlohaSim("transfer_cube", image_size=(h, w), render_quality=quality) as sim:
                action = sim.state()
                per_cam = _timeit(lambda sim=sim: sim.render(("cam_high",)), args.repeats)

                def full_step(sim=sim, action=action):
                    sim.render(rig.CAMERAS)
                    sim.apply_action(action)
                    sim.step()

                full = _timeit(full_step, args.repeats)
            key = f"{h}x{w}_{quality}"
            out[f"render_ms_per_camera_{key}"] = round(1e3 * per_cam, 1)
            out[f"step_ms_4cams_{key}"] = round(1e3 * full, 1)
            out[f"steps_per_s_4cams_{key}"] = round(1.0 / full, 2)
    try:
        base = gym_aloha_step_s(args.repeats)
        out["gym_aloha_env_step_ms"] = round(1e3 * base, 1)
        # gym-aloha's step renders its one 'top' camera (RGB only) with shadows + MSAA; ours render
        # four RGB-D cameras. ratio < 1: a full 4-camera step is cheaper than one gym-aloha step.
        for quality in ("fast", "gym"):
            out[f"ratio_4cams_480x640_{quality}_vs_gym_aloha_step"] = round(
                out[f"step_ms_4cams_480x640_{quality}"] / (1e3 * base), 2
            )
    except Exception as exc:  # the baseline is optional; say why it is missing
        out["gym_aloha_env_step_ms"] = None
        out["baseline_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
