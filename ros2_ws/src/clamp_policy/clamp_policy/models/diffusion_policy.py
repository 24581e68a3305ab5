"""ALOHA-Unleashed-style diffusion policy: transformer encoder over observation tokens, transformer
decoder that denoises a 50 x 14 action chunk with cross-attention.

Observation dict (`obs`) for `DiffusionPolicy.sample(obs)` / `.loss(obs, actions)`; torch tensors or
numpy arrays, batch first:

- "views": float (B, V, 4, S, S): the CLAMP virtual views in `rig.VIEW_NAMES` order (V = 5), channels
  `rig.VIEW_CHANNELS` (depth, world x, y, z; metres). S is usually `rig.VIEW_SIZE` (224); views of
  another size are pooled (mean of valid pixels) to `cfg.image_encoder.view_size` inside the model, so the robot
  feeds full-size views whatever the model's resolution. Non-finite pixels (empty) count as 0.
  The tiled /clamp/views image (S, V*S, 4) converts with `untile_views`.
- "state": float (B, 14): follower state, `rig.state_from_joint_states` layout (gripper 0..1).
- "task": list of B strings, when `cfg.task_conditioning == "vocab"` (unknown strings are refused).
- "task_embedding": float (B, cfg.text_dim), when `cfg.task_conditioning == "embedding"`.
- "action_history": float (B, H, 14), oldest first, when `cfg.action_history = H > 0`.
- "rgb": uint8 or float 0..255 (B, C, 3, H, W), the colour images of `cfg.rgb.cameras` in that order,
  when that list is not empty (any size; resized to `cfg.rgb.size` inside the model).
- "image_tokens": float (B, N, D), optional, training only: the image encoder's output for the views,
  computed beforehand (a frozen encoder's tokens, once per camera frame); when present it is used
  instead of running the encoder on "views". The robot always passes "views".

`sample` returns float32 (B, cfg.chunk_length, 14) in rig units (rad, gripper 0 closed..1 open):
the joint targets for the observation time and the following steps, 1 / rig.CONTROL_HZ apart.

Normalisation (state mean/std, action min/max -> [-1, 1], per-channel view mean/std) lives in
buffers, so it is saved in model.safetensors with the weights; set it with `set_normalization`.
Training uses diffusers' DDPMScheduler, inference DDIMScheduler (`cfg.inference_steps`, default 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from clamp_core.safety import ARM_INDICES
from torch import nn

from .config import PolicyConfig
from .image_encoders import build_image_encoder
from .views import masked_pool_views

NORM_KEYS = ("state_mean", "state_std", "action_min", "action_max", "view_mean", "view_std")


def untile_views(tiled: np.ndarray | torch.Tensor, num_views: int) -> torch.Tensor:
    """(S, V*S, C) or (B, S, V*S, C) tiled views (as on /clamp/views) -> (B, V, C, S, S)."""
    x = torch.as_tensor(tiled)
    if x.ndim == 3:
        x = x[None]
    b, s, w, c = x.shape
    if w != num_views * s:
        raise ValueError(f"tiled views are {s}x{w}; expected height S and width {num_views}*S")
    return x.reshape(b, s, num_views, s, c).permute(0, 2, 4, 1, 3).contiguous()


def _sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


def diffused_length(cfg: PolicyConfig) -> int:
    """Rows of the diffused chunk: its knots, or every step."""
    return cfg.action_knots or cfg.chunk_length


def knot_basis(length: int, knots: int) -> torch.Tensor:
    """(length, knots) piecewise-linear interpolation weights: step i of the chunk from the knots,
    which sit evenly from the first step to the last."""
    pos = torch.linspace(0, knots - 1, length)
    lo = pos.floor().clamp(max=knots - 2).long()
    frac = pos - lo
    basis = torch.zeros(length, knots)
    basis[torch.arange(length), lo] = 1 - frac
    basis[torch.arange(length), lo + 1] = frac
    return basis


class MlpDenoiser(nn.Module):
    """The chunk denoiser as a residual MLP: (noisy chunk, timestep embedding, observation tokens)
    -> prediction. Learned queries pool the observation tokens (any number) to a fixed-size vector."""

    POOL_QUERIES = 8

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        d, w = cfg.d_model, cfg.head_width
        self.shape = (diffused_length(cfg), cfg.action_dim)
        self.queries = nn.Parameter(torch.randn(1, self.POOL_QUERIES, d) * 0.02)
        self.pool = nn.MultiheadAttention(d, cfg.nhead, batch_first=True)
        chunk = diffused_length(cfg) * cfg.action_dim
        self.inp = nn.Linear(chunk + (self.POOL_QUERIES + 1) * d, w)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.Mish(), nn.Dropout(cfg.dropout), nn.Linear(2 * w, w))
            for _ in range(cfg.head_blocks)
        )
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, chunk))

    def forward(self, noisy: torch.Tensor, temb: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        b = noisy.shape[0]
        pooled, _ = self.pool(self.queries.expand(b, -1, -1), memory, memory, need_weights=False)
        h = self.inp(torch.cat([noisy.flatten(1), pooled.flatten(1), temb], dim=-1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).reshape(b, *self.shape)


class DiffusionPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        d = cfg.d_model
        self.image_encoder = build_image_encoder(cfg.image_encoder)
        img_dim = self.image_encoder.out_dim
        self.image_proj = nn.Linear(img_dim, d) if img_dim and img_dim != d else nn.Identity()
        self.state_proj = nn.Linear(cfg.state_dim, d)
        if cfg.task_conditioning == "vocab":
            self.task_embed = nn.Embedding(len(cfg.task_vocab), d)
        elif cfg.task_conditioning == "embedding":
            self.task_embed = nn.Linear(cfg.text_dim, d)
        if cfg.action_history > 0:
            self.history_proj = nn.Linear(cfg.action_dim, d)
            self.history_pos = nn.Parameter(torch.zeros(1, cfg.action_history, d))
        if cfg.rgb.cameras:
            from .rgb_encoder import RgbEncoder

            self.rgb_encoder = RgbEncoder(cfg.rgb, d)
            self.rgb_embed = nn.Parameter(torch.zeros(1, len(cfg.rgb.cameras), d))
        if cfg.state_dropout > 0:  # a learned stand-in for the state token when training drops it
            self.state_mask = nn.Parameter(torch.zeros(d))
        # token types: 0 image, 1 state, 2 task, 3 history
        self.type_embed = nn.Parameter(torch.zeros(4, d))
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, cfg.nhead, cfg.ff_dim, cfg.dropout, batch_first=True, norm_first=True),
            cfg.encoder_layers,
            enable_nested_tensor=False,
        )
        self.encoder_norm = nn.LayerNorm(d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d * 2), nn.Mish(), nn.Linear(d * 2, d))
        if cfg.action_knots:  # knots -> chunk steps (L, M) and its least-squares inverse (M, L)
            basis = knot_basis(cfg.chunk_length, cfg.action_knots)
            self.register_buffer("knot_basis", basis, persistent=False)
            self.register_buffer("knot_fit", torch.linalg.pinv(basis), persistent=False)
        if cfg.head == "transformer":
            self.action_pos = nn.Parameter(torch.zeros(1, diffused_length(cfg), d))
            self.action_in = nn.Linear(cfg.action_dim, d)
            self.decoder = nn.TransformerDecoder(
                nn.TransformerDecoderLayer(d, cfg.nhead, cfg.ff_dim, cfg.dropout, batch_first=True, norm_first=True),
                cfg.decoder_layers,
            )
            self.decoder_norm = nn.LayerNorm(d)
            self.action_out = nn.Linear(d, cfg.action_dim)
        else:
            self.mlp_head = MlpDenoiser(cfg)
        nn.init.trunc_normal_(self.type_embed, std=0.02)
        if cfg.head == "transformer":
            nn.init.trunc_normal_(self.action_pos, std=0.02)
        self._task_index = {t: i for i, t in enumerate(cfg.task_vocab)}
        # normalisation buffers (saved with the weights); identity until set_normalization
        a, s, c = cfg.action_dim, cfg.state_dim, cfg.image_encoder.in_channels
        self.register_buffer("state_mean", torch.zeros(s))
        self.register_buffer("state_std", torch.ones(s))
        self.register_buffer("action_min", -torch.ones(a))
        self.register_buffer("action_max", torch.ones(a))
        self.register_buffer("view_mean", torch.zeros(c))
        self.register_buffer("view_std", torch.ones(c))
        self._schedulers = None

    # ------------------------------------------------------------------------------ normalisation
    def set_normalization(self, stats: dict[str, np.ndarray | Sequence[float]]) -> None:
        """stats: state_mean/state_std (14), action_min/action_max (14), view_mean/view_std (4)."""
        missing = [k for k in NORM_KEYS if k not in stats]
        if missing:
            raise KeyError(f"normalisation stats lack {missing}; expected {NORM_KEYS}")
        for key in NORM_KEYS:
            value = torch.as_tensor(np.asarray(stats[key], dtype=np.float32))
            buf = getattr(self, key)
            if value.shape != buf.shape:
                raise ValueError(f"normalisation {key} has shape {tuple(value.shape)}; expected {tuple(buf.shape)}")
            buf.copy_(value)

    def normalization(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in NORM_KEYS}

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        centre, half = self._action_affine()
        return (action - centre) / half

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        centre, half = self._action_affine()
        return action * half + centre

    def _action_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        centre = (self.action_max + self.action_min) / 2
        half = ((self.action_max - self.action_min) / 2).clamp_min(1e-3)  # constant joints stay finite
        return centre, half

    def _relative_mask(self) -> torch.Tensor:
        """(A,) 1 where the chunk is diffused relative to the state (arm joints), else 0."""
        mask = torch.zeros(self.cfg.action_dim, device=self._device())
        if self.cfg.action_frame == "relative":
            mask[list(ARM_INDICES)] = 1.0
        return mask

    def chunk_to_model(self, actions: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Rig-unit chunk (B, L, A) -> the normalised frame the denoiser works in: [-1, 1] over the
        action range, or, for relative joints, the offset from the state over the same half-range
        (a one-second chunk moves a joint a fraction of its range, so offsets stay well inside)."""
        centre, half = self._action_affine()
        rel = self._relative_mask()
        origin = rel * state[:, None] + (1 - rel) * centre
        return (actions - origin) / half

    def chunk_from_model(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        centre, half = self._action_affine()
        rel = self._relative_mask()
        return x * half + rel * state[:, None] + (1 - rel) * centre

    # ---------------------------------------------------------------------------------- encoder
    def _device(self) -> torch.device:
        return self.type_embed.device

    def _tensor(self, obs: dict, key: str, ndim: int) -> torch.Tensor:
        if key not in obs:
            raise KeyError(f"observation lacks {key!r}; this policy needs {sorted(self.required_obs_keys())}")
        x = torch.as_tensor(obs[key], device=self._device())
        if x.ndim != ndim:
            raise ValueError(f"obs[{key!r}] has shape {tuple(x.shape)}; expected {ndim} dims (batch first)")
        return x.float()

    def required_obs_keys(self) -> set[str]:
        keys = {"state"}
        if self.cfg.image_encoder.type != "none":
            keys.add("views")
        if self.cfg.task_conditioning == "vocab":
            keys.add("task")
        elif self.cfg.task_conditioning == "embedding":
            keys.add("task_embedding")
        if self.cfg.action_history > 0:
            keys.add("action_history")
        if self.cfg.rgb.cameras:
            keys.add("rgb")
        return keys

    def prepare_views(self, views: torch.Tensor) -> torch.Tensor:
        """Raw views (B, V, C, S, S) in metres -> pooled to the encoder's size, standardised per
        channel (except for the 3D-aware CLAMP encoder, which needs metric world coordinates)."""
        size = self.cfg.image_encoder.view_size
        # valid pixels only: plain averaging would blend empty pixels into points that do not exist
        views = masked_pool_views(views, size)
        if self.cfg.image_encoder.type == "clamp_vit3d":
            return views
        return (views - self.view_mean[:, None, None]) / self.view_std[:, None, None].clamp_min(1e-6)

    def encode(self, obs: dict) -> torch.Tensor:
        """Observation -> encoder memory (B, N, d_model)."""
        cfg = self.cfg
        state = self._tensor(obs, "state", 2)
        if self.training and cfg.state_noise_rad > 0:
            state = state + cfg.state_noise_rad * torch.randn_like(state)
        state = (state - self.state_mean) / self.state_std.clamp_min(1e-6)
        if self.training and cfg.state_noise > 0:
            state = state + cfg.state_noise * torch.randn_like(state)
        state_tok = self.state_proj(state)
        if self.training and cfg.state_dropout > 0:
            drop = torch.rand(state.shape[0], 1, device=state.device) < cfg.state_dropout
            state_tok = torch.where(drop, self.state_mask.expand_as(state_tok), state_tok)
        tokens = [state_tok[:, None] + self.type_embed[1]]
        if cfg.rgb.cameras:
            rgb = torch.as_tensor(obs["rgb"], device=self._device()) if "rgb" in obs else None
            if rgb is None or rgb.ndim != 5:
                raise KeyError(
                    f"observation lacks 'rgb' (B, {len(cfg.rgb.cameras)}, 3, H, W) for cameras {cfg.rgb.cameras}"
                )
            tokens.append(self.rgb_encoder(rgb, augment=self.training) + self.rgb_embed + self.type_embed[0])
        if cfg.image_encoder.type != "none":
            if "image_tokens" in obs:  # precomputed by a frozen encoder (see the module doc)
                enc = self._tensor(obs, "image_tokens", 3)
            else:
                enc = self.image_encoder(self.prepare_views(self._tensor(obs, "views", 5)))
            img = self.image_proj(enc)
            tokens.append(img + self.type_embed[0])
        if cfg.task_conditioning == "vocab":
            if "task" not in obs:
                raise KeyError("observation lacks 'task' (list of task strings); this policy is task-conditioned")
            tasks = [obs["task"]] if isinstance(obs["task"], str) else list(obs["task"])
            unknown = sorted({t for t in tasks if t not in self._task_index})
            if unknown:
                raise KeyError(f"task(s) {unknown} were not in training; this policy knows {cfg.task_vocab}")
            idx = torch.tensor([self._task_index[t] for t in tasks], device=self._device())
            tokens.append(self.task_embed(idx)[:, None] + self.type_embed[2])
        elif cfg.task_conditioning == "embedding":
            tokens.append(self.task_embed(self._tensor(obs, "task_embedding", 2))[:, None] + self.type_embed[2])
        if cfg.action_history > 0:
            hist = self.normalize_action(self._tensor(obs, "action_history", 3))
            tokens.append(self.history_proj(hist) + self.history_pos + self.type_embed[3])
        x = torch.cat(tokens, dim=1)
        return self.encoder_norm(self.encoder(x))

    # ---------------------------------------------------------------------------------- decoder
    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Predict the noise (prediction_type 'epsilon') or the clean chunk ('sample')."""
        temb = self.time_mlp(_sinusoid(timesteps, self.cfg.d_model))[:, None]
        if self.cfg.head == "mlp":
            return self.mlp_head(noisy, temb[:, 0], memory)
        x = self.action_in(noisy) + self.action_pos + temb
        mem = torch.cat([memory, temb], dim=1)  # the decoder also attends to the timestep token
        return self.action_out(self.decoder_norm(self.decoder(x, mem)))

    # -------------------------------------------------------------------------------- diffusion
    def schedulers(self):
        if self._schedulers is None:
            from diffusers import DDIMScheduler, DDPMScheduler  # heavy import, only when needed

            kw = dict(
                num_train_timesteps=self.cfg.train_timesteps,
                beta_schedule=self.cfg.beta_schedule,
                clip_sample=True,
                prediction_type=self.cfg.prediction_type,
            )
            # "trailing": the first DDIM step starts at t = T-1 (pure noise); the default "leading"
            # spacing starts 5 steps of 50 at t = 40, where the sample still holds ~28% signal
            ddim = DDIMScheduler(**kw, timestep_spacing="trailing")
            self._schedulers = (DDPMScheduler(**kw), ddim)
        return self._schedulers

    def forward(self, obs: dict, actions: torch.Tensor, **kwargs) -> torch.Tensor:
        """The training loss (so DistributedDataParallel's forward hooks see it); see `loss`."""
        return self.loss(obs, actions, **kwargs)

    def loss(
        self,
        obs: dict,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """DDPM training loss on a batch: actions (B, chunk_length, 14) in rig units. `noise`
        (B*K, M, 14) and `timesteps` (B*K,) may be given to make a step reproducible (M =
        cfg.action_knots or chunk_length; K = cfg.noise_samples in training mode, else 1; the copies
        of sample i are rows i*K ... i*K+K-1)."""
        ddpm, _ = self.schedulers()
        actions = torch.as_tensor(actions, device=self._device()).float()
        if actions.shape[1:] != (self.cfg.chunk_length, self.cfg.action_dim):
            raise ValueError(
                f"actions have shape {tuple(actions.shape)}; expected (B, {self.cfg.chunk_length}, "
                f"{self.cfg.action_dim})"
            )
        memory = self.encode(obs)
        x0 = self.chunk_to_model(actions, self._tensor(obs, "state", 2))
        if self.cfg.action_knots:
            x0 = self.knot_fit @ x0  # (B, M, A): the knots whose curve fits the chunk best
        k = self.cfg.noise_samples if self.training else 1
        if k > 1:  # several noised copies of each chunk share one encoding of the observation
            x0, memory = x0.repeat_interleave(k, 0), memory.repeat_interleave(k, 0)
        b = x0.shape[0]
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        t = timesteps
        if t is None:
            t = torch.randint(0, ddpm.config.num_train_timesteps, (b,), generator=generator, device=x0.device)
        noise, t = noise.to(x0.device), t.to(x0.device)
        if noise.shape != x0.shape or t.shape != (b,):
            raise ValueError(
                f"noise {tuple(noise.shape)} / timesteps {tuple(t.shape)} must be {tuple(x0.shape)} / ({b},): "
                f"noise_samples={k} draws per observation"
            )
        noisy = ddpm.add_noise(x0, noise, t)
        pred = self.denoise(noisy, t, memory)
        target = noise if self.cfg.prediction_type == "epsilon" else x0
        return F.mse_loss(pred, target)

    @torch.no_grad()
    def sample(
        self,
        obs: dict,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        num_samples: int = 1,
    ) -> torch.Tensor:
        """DDIM sampling of an action chunk (B, chunk_length, 14) in rig units; see module doc.

        `num_samples` > 1 draws that many chunks per observation from one encoding and returns their
        mean: an estimate of the expected chunk with less sample-to-sample scatter (the same reason the
        executor averages overlapping chunks), for a few % more time with the small heads.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        _, ddim = self.schedulers()
        memory = self.encode(obs).repeat_interleave(num_samples, 0)
        b = memory.shape[0]
        ddim.set_timesteps(num_inference_steps or self.cfg.inference_steps)
        shape = (b, diffused_length(self.cfg), self.cfg.action_dim)
        x = torch.randn(shape, generator=generator, device=memory.device)
        for t in ddim.timesteps:
            ts = torch.full((b,), int(t), device=memory.device, dtype=torch.long)
            x = ddim.step(self.denoise(x, ts, memory), t, x).prev_sample
        if self.cfg.action_knots:
            x = self.knot_basis @ x
        state = self._tensor(obs, "state", 2).repeat_interleave(num_samples, 0)
        chunk = self.chunk_from_model(x.clamp(-1.0, 1.0), state)
        if self.cfg.action_frame == "relative":  # offsets from an arm at its limit must not leave the range
            chunk = torch.maximum(torch.minimum(chunk, self.action_max), self.action_min)
        return chunk.reshape(-1, num_samples, *chunk.shape[1:]).mean(1) if num_samples > 1 else chunk
