"""Policy inference for the robot (ROS-free: numpy + torch). The node (inference_node.py) adapts topics.

- `configure_torch_threads`: leave a core to the 50 Hz executor and the ROS callbacks.
- `PolicyRunner`: wraps a loaded `DiffusionPolicy` (`clamp_policy.models.checkpoint.load_policy`):
  checks that the policy fits the rig (chunk length, action/state dim, views), builds its observation
  dict from the live inputs, warms up, samples a chunk with a configurable number of DDIM steps and
  times it.
- `InferenceWorker`: one background thread that runs the newest requested observation (older
  requests are replaced, never queued) and hands chunks to a callback, so no ROS callback blocks.
- `ActionHistory`: the last H commanded 14-D targets, for policies with `action_history > 0`.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from clamp_core import rig


class PolicyMismatchError(ValueError):
    """The loaded policy does not fit this robot or runtime (dimensions, chunk length, views)."""


def configure_torch_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads: `requested`, or (0) all cores but one, at least one.

    On the robot's CPU the executor's tick thread and the ROS callbacks need a core; oversubscribing
    both cores makes inference itself several times slower under contention (measured here:
    ~105 ms with 1 thread vs ~670 ms median with 2 threads on a busy 2-core machine).
    """
    import torch

    n = int(requested) if requested and requested > 0 else max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)  # only allowed before the first parallel op
    except RuntimeError:
        pass
    return n


@dataclass
class Observation:
    """Live inputs for one inference; `stamp` is the observation time (the views' stamp)."""

    stamp: float
    state: np.ndarray  # (14,) rig layout
    views: np.ndarray | None = None  # (S, V*S, 4) tiled as on /clamp/views, float32
    task: str = ""
    action_history: np.ndarray | None = None  # (H, 14), oldest first
    rgb: dict | None = None  # camera name -> (h, w, 3) uint8 colour image, for policies with rgb.cameras


@dataclass
class InferenceResult:
    stamp: float  # observation time (the chunk's header.stamp)
    chunk: np.ndarray  # (chunk_length, 14) float64, rig units
    latency_ms: float  # model time
    started: float  # time.monotonic() when inference started
    obs_age_s: float | None = None  # filled by the caller


class PolicyRunner:
    """A loaded diffusion policy ready for real-time use."""

    def __init__(
        self,
        policy,
        num_inference_steps: int = 10,
        seed: int | None = 0,
        task_embedder: Callable[[str], np.ndarray] | None = None,
        num_samples: int = 1,
    ) -> None:
        import torch

        self.policy = policy.eval()
        self.cfg = policy.cfg
        self.num_inference_steps = int(num_inference_steps)
        if not 1 <= self.num_inference_steps <= self.cfg.train_timesteps:
            raise PolicyMismatchError(
                f"num_inference_steps={num_inference_steps} must be in [1, {self.cfg.train_timesteps}] "
                "(the policy's train_timesteps)"
            )
        self.num_samples = int(num_samples)  # chunks drawn per observation and averaged
        if self.num_samples < 1:
            raise PolicyMismatchError(f"num_samples={num_samples} must be >= 1")
        self.required = set(policy.required_obs_keys())
        self._check_rig()
        # With a seed, every chunk starts from the same noise: the chunk is then a function of the
        # observation, so consecutive chunks of similar observations agree instead of each drawing
        # its own sample (measured: 0.5-1.4 rad jumps between replans with fresh noise each time).
        self._seed = seed
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._task_embedder = task_embedder
        self._task_cache: dict[str, np.ndarray] = {}
        self.latencies_ms: deque[float] = deque(maxlen=500)
        self.ready = False

    def _check_rig(self) -> None:
        cfg, problems = self.cfg, []
        if cfg.action_dim != rig.ACTION_DIM or cfg.state_dim != rig.ACTION_DIM:
            problems.append(f"action/state dim {cfg.action_dim}/{cfg.state_dim}, the rig has {rig.ACTION_DIM}")
        if cfg.chunk_length < 2:
            problems.append(f"chunk_length {cfg.chunk_length} < 2")
        enc = cfg.image_encoder
        if enc.type != "none":
            if enc.num_views != len(rig.VIEW_NAMES):
                problems.append(f"{enc.num_views} views, the perception node renders {len(rig.VIEW_NAMES)}")
            if enc.in_channels != len(rig.VIEW_CHANNELS):
                problems.append(f"{enc.in_channels} view channels, /clamp/views has {len(rig.VIEW_CHANNELS)}")
        if problems:
            raise PolicyMismatchError(
                "the policy does not fit this rig: " + "; ".join(problems) + ". Export a policy trained for "
                "the ALOHA rig (clamp_core.rig), or fix its config.json."
            )

    @property
    def needs_views(self) -> bool:
        return "views" in self.required

    @property
    def history_length(self) -> int:
        return int(self.cfg.action_history)

    @property
    def horizon_s(self) -> float:
        return self.cfg.chunk_length / rig.CONTROL_HZ

    def task_embedding(self, task: str) -> np.ndarray:
        if task not in self._task_cache:
            if self._task_embedder is None:
                self._task_embedder = default_task_embedder()
            emb = np.asarray(self._task_embedder(task), dtype=np.float32).reshape(-1)
            if emb.shape != (self.cfg.text_dim,):
                raise PolicyMismatchError(
                    f"task embedding has {emb.size} values; the policy expects text_dim={self.cfg.text_dim}"
                )
            self._task_cache[task] = emb
        return self._task_cache[task]

    def make_obs(self, obs: Observation) -> dict:
        """The policy's observation dict (batch of one) from live inputs; clear errors when one is missing."""
        import torch

        from .models.diffusion_policy import untile_views

        state = np.asarray(obs.state, dtype=np.float32)
        if state.shape != (rig.ACTION_DIM,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state must be 14 finite values (rig layout), got {state}")
        out = {"state": torch.from_numpy(state)[None]}
        if self.needs_views:
            if obs.views is None:
                raise ValueError("this policy needs /clamp/views and none has arrived")
            v = np.asarray(obs.views, dtype=np.float32)
            n = self.cfg.image_encoder.num_views
            if v.ndim != 3 or v.shape[2] != len(rig.VIEW_CHANNELS) or v.shape[1] != n * v.shape[0]:
                raise ValueError(
                    f"views are {v.shape}; expected (S, {n}*S, {len(rig.VIEW_CHANNELS)}) tiled as on /clamp/views"
                )
            out["views"] = untile_views(torch.from_numpy(v), n)
        if "task" in self.required:
            if not obs.task:
                raise ValueError(f"this policy is task-conditioned (knows {self.cfg.task_vocab}); no /clamp/task yet")
            if obs.task not in self.cfg.task_vocab:
                raise ValueError(f"task {obs.task!r} was not in training; this policy knows {self.cfg.task_vocab}")
            out["task"] = [obs.task]
        if "task_embedding" in self.required:
            if not obs.task:
                raise ValueError("this policy is conditioned on a task embedding; no /clamp/task yet")
            out["task_embedding"] = torch.from_numpy(self.task_embedding(obs.task))[None]
        if "rgb" in self.required:
            cams = list(self.cfg.rgb.cameras)
            missing = [c for c in cams if not obs.rgb or c not in obs.rgb]
            if missing:
                raise ValueError(f"this policy needs colour images of {cams}; missing {missing}")
            imgs = [np.asarray(obs.rgb[c])[..., :3] for c in cams]
            if len({i.shape for i in imgs}) != 1 or imgs[0].ndim != 3:
                raise ValueError(f"colour images must be (h, w, 3) of one size; got {[i.shape for i in imgs]}")
            out["rgb"] = torch.from_numpy(np.stack(imgs).transpose(0, 3, 1, 2).copy())[None]
        if "action_history" in self.required:
            h = np.asarray(obs.action_history, dtype=np.float32)
            if h.shape != (self.history_length, rig.ACTION_DIM):
                raise ValueError(f"action history is {h.shape}; expected ({self.history_length}, 14)")
            out["action_history"] = torch.from_numpy(h)[None]
        return out

    def infer(self, obs: Observation) -> InferenceResult:
        import torch

        batch = self.make_obs(obs)
        started = time.monotonic()
        t0 = time.perf_counter()
        with torch.inference_mode():
            if self._seed is not None:
                self._generator.manual_seed(self._seed)
            chunk = self.policy.sample(
                batch, self.num_inference_steps, generator=self._generator, num_samples=self.num_samples
            )
        ms = (time.perf_counter() - t0) * 1e3
        self.latencies_ms.append(ms)
        out = chunk[0].double().cpu().numpy()
        if out.shape != (self.cfg.chunk_length, rig.ACTION_DIM):
            raise PolicyMismatchError(f"policy returned a chunk of shape {out.shape}")
        return InferenceResult(obs.stamp, out, ms, started)

    def dummy_observation(self, task: str = "") -> Observation:
        s = rig.VIEW_SIZE
        n = self.cfg.image_encoder.num_views
        if not task and "task" in self.required:
            task = self.cfg.task_vocab[0]
        return Observation(
            stamp=0.0,
            state=np.zeros(rig.ACTION_DIM),
            views=np.zeros((s, n * s, len(rig.VIEW_CHANNELS)), np.float32) if self.needs_views else None,
            task=task or "warm up",
            action_history=np.zeros((self.history_length, rig.ACTION_DIM)),
            rgb={c: np.zeros((*self.cfg.rgb.size, 3), np.uint8) for c in self.cfg.rgb.cameras} or None,
        )

    def warmup(self, runs: int = 2, task: str = "") -> list[float]:
        """Run the full pipeline on a dummy observation (allocations, lazy imports, kernels)."""
        times = [self.infer(self.dummy_observation(task)).latency_ms for _ in range(max(1, runs))]
        self.latencies_ms.clear()
        self.ready = True
        return times

    def latency_stats(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        if lat is None:
            return {"inference_ms_median": None, "inference_ms_p95": None, "inferences": 0}
        return {
            "inference_ms_median": float(np.median(lat)),
            "inference_ms_p95": float(np.percentile(lat, 95)),
            "inferences": len(lat),
        }


def default_task_embedder() -> Callable[[str], np.ndarray]:
    """all-MiniLM-L6-v2 sentence features (384-d), as CLAMP's text encoder uses them."""
    from .models.clamp_encoders import TextEncoder

    encoder = TextEncoder()  # only its frozen MiniLM backbone is used here (features, not the projection)

    def embed(text: str) -> np.ndarray:
        return encoder.sentence_features([text])[0].detach().cpu().numpy()

    return embed


class ActionHistory:
    """The last `length` commanded 14-D targets (oldest first), padded with the oldest known value."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._buf: deque[np.ndarray] = deque(maxlen=max(1, length))
        self._lock = threading.Lock()

    def push(self, action) -> None:
        with self._lock:
            self._buf.append(np.asarray(action, dtype=np.float64))

    def get(self, fallback: np.ndarray) -> np.ndarray:
        with self._lock:
            items = list(self._buf)
        if not items:
            items = [np.asarray(fallback, dtype=np.float64)]
        pad = [items[0]] * (self.length - len(items))
        return np.array(pad + items)[-self.length :] if self.length else np.zeros((0, rig.ACTION_DIM))


class InferenceWorker:
    """A single background inference thread fed with the newest observation (latest wins)."""

    def __init__(
        self,
        runner: PolicyRunner,
        on_result: Callable[[InferenceResult], None],
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.runner = runner
        self.on_result = on_result
        self.on_error = on_error
        self._cond = threading.Condition()
        self._pending: Observation | None = None
        self._busy = False
        self._stop = False
        self.replaced = 0  # requests overwritten before they ran (inference slower than requests)
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="clamp-inference", daemon=True)

    def start(self) -> InferenceWorker:
        self._thread.start()
        return self

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._pending is not None

    def submit(self, obs: Observation) -> None:
        with self._cond:
            if self._pending is not None:
                self.replaced += 1
            self._pending = obs
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                obs, self._pending = self._pending, None
                self._busy = True
            try:
                result = self.runner.infer(obs)
            except Exception as exc:  # a bad observation must not kill the worker
                self.errors += 1
                if self.on_error is not None:
                    self.on_error(exc)
                result = None
            finally:
                with self._cond:
                    self._busy = False
            if result is not None:
                self.on_result(result)
