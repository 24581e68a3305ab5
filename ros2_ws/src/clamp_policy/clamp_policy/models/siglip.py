"""Sigmoid (SigLIP-style) pairwise contrastive loss with learned temperature and bias, DDP-correct.

For embeddings x_i, y_j (L2-normalised) the loss is (Zhai et al. 2023, "Sigmoid Loss for Language
Image Pre-Training")

    L = -1/B * sum_i sum_j log sigmoid(z_ij * (t * <x_i, y_j> + b)),   t = exp(t'),

with z_ij = +1 for matching pairs and -1 otherwise; t' is initialised to log 10 and b to -10 (the
paper's values: the many negatives dominate at the start, the bias keeps their initial loss small).

Under DDP each rank holds B_r rows. Every rank gathers y from all ranks (with gradient, see
`gather_with_grad`) and scores its own x against the global y: each (i, j) pair of the global batch is
scored exactly once. Normalising by the LOCAL batch size makes the ranks' loss mean equal the
single-process loss over the global batch, and DDP's gradient averaging then gives exactly the
single-process gradient (tested with two gloo processes).

`positive_ids`: robot data has duplicates that a plain diagonal would call negatives (two samples of the
same task at the same progress share one prompt). Samples with equal ids are counted as positives.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient w.r.t. this rank's shard."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device))
        sizes = [int(s.item()) for s in sizes]
        if len(set(sizes)) != 1:
            raise ValueError(
                f"per-rank batch sizes differ {sizes}; use drop_last=True in the DistributedSampler/DataLoader"
            )
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's loss touches every shard
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


_LOCAL = [False]  # inside `local_only()`: losses use this process's batch alone


def distributed() -> bool:
    return not _LOCAL[0] and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def local_only():
    """No cross-rank gathering inside (e.g. a validation loss computed by rank 0 alone under DDP,
    which would otherwise wait forever for the other ranks' embeddings)."""
    old, _LOCAL[0] = _LOCAL[0], True
    try:
        yield
    finally:
        _LOCAL[0] = old


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (B_r, ...) over ranks along dim 0; identity without DDP."""
    return _GatherWithGrad.apply(tensor) if distributed() else tensor


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    if not distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def sigmoid_pair_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    log_temperature: torch.Tensor,
    bias: torch.Tensor,
    positive_ids: torch.Tensor | None = None,
    row_offset: int = 0,
    y_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """-1/B_x sum_ij log sigmoid(z_ij (exp(t') x_i.y_j + b)) for rows x (B_x, D) against columns y (B_y, D).

    Without ids, row i matches column row_offset + i. With ids, row i matches every column j with
    y_ids[j] == positive_ids[i]. x and y should already be L2-normalised.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected embeddings (B, D) with equal D, got {tuple(x.shape)} and {tuple(y.shape)}")
    logits = x @ y.t() * log_temperature.exp() + bias
    if positive_ids is None:
        labels = -torch.ones_like(logits)
        idx = torch.arange(x.shape[0], device=x.device)
        labels[idx, idx + row_offset] = 1.0
    else:
        cols = positive_ids if y_ids is None else y_ids
        labels = (positive_ids[:, None] == cols[None, :]).to(logits.dtype) * 2.0 - 1.0
    return -F.logsigmoid(labels * logits).sum() / x.shape[0]


class SigLIPLoss(nn.Module):
    """One modality pair's sigmoid loss with its own learned temperature t' and bias b."""

    def __init__(self, init_temperature: float = 10.0, init_bias: float = -10.0):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    def logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x @ y.t() * self.log_temperature.exp() + self.bias

    def forward(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """x, y: (B_local, D) L2-normalised; ids: optional (B_local,) int64 (equal ids = positives)."""
        if x.shape != y.shape:
            raise ValueError(f"paired embeddings must have equal shapes, got {tuple(x.shape)} vs {tuple(y.shape)}")
        y_all = gather_with_grad(y)
        offset = dist.get_rank() * x.shape[0] if distributed() else 0
        y_ids = gather_no_grad(ids) if ids is not None else None
        return sigmoid_pair_loss(x, y_all, self.log_temperature, self.bias, ids, offset, y_ids)


PAIRS = ("image_action", "image_text", "action_text")


class TriModalSigLIP(nn.Module):
    """The three CLAMP pairs image-action, image-text, action-text, each with its own t' and b.

    `forward(embeddings, text_ids)` returns {pair: loss} for the pairs whose two modalities are present
    (real data may lack object positions but still has a task text; a dataset without text trains
    image-action only). text_ids mark duplicate prompts as positives in the text pairs.
    """

    def __init__(self, init_temperature: float = 10.0, init_bias: float = -10.0, weights: dict | None = None):
        super().__init__()
        self.pairs = nn.ModuleDict({p: SigLIPLoss(init_temperature, init_bias) for p in PAIRS})
        self.weights = {p: 1.0 for p in PAIRS}
        if weights:
            unknown = set(weights) - set(PAIRS)
            if unknown:
                raise ValueError(f"unknown loss pair(s) {sorted(unknown)}; the pairs are {PAIRS}")
            self.weights.update({k: float(v) for k, v in weights.items()})

    def forward(self, emb: dict, text_ids: torch.Tensor | None = None) -> dict:
        out = {}
        for pair in PAIRS:
            a, b = pair.split("_")
            if self.weights[pair] == 0.0 or emb.get(a) is None or emb.get(b) is None:
                continue
            ids = text_ids if "text" in pair else None
            out[pair] = self.pairs[pair](emb[a], emb[b], ids)
        return out

    def total(self, losses: dict) -> torch.Tensor:
        return sum(self.weights[k] * v for k, v in losses.items())
