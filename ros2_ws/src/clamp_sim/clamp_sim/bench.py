"""Benchmark: physics steps/s, render ms per camera, and a full control step with 4 RGB-D cameras
at 240x424 and 480x640, with render_quality "fast" (no shadows/MSAA) and "gym" (gym-aloha's
settings), against gym-aloha's own `env.step` (joint-space transfer_cube, 480x640 'top' camera)
in the same run. Prints one JSON line.

    python -m clamp_sim.bench [--repeats N]
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
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
