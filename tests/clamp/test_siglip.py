"""SigLIP loss terms against a direct computation, and DDP (two gloo processes) against one process."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from clamp_policy.models.siglip import PAIRS, SigLIPLoss, TriModalSigLIP, sigmoid_pair_loss


def direct_loss(x, y, t, b, ids=None):
    """-1/B sum_ij log sigmoid(z_ij (t x_i.y_j + b)), written out with Python loops."""
    total = 0.0
    for i in range(len(x)):
        for j in range(len(y)):
            pos = (i == j) if ids is None else (ids[i] == ids[j])
            z = 1.0 if pos else -1.0
            logit = t * float(np.dot(x[i], y[j])) + b
            total += math.log(1.0 + math.exp(-z * logit))  # -log sigmoid(z * logit)
    return total / len(x)


def unit(rows):
    a = np.asarray(rows, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


X = unit([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
Y = unit([[1, 0.1, 0], [0, 1, 0.2], [1, 0, 1], [-1, 0, 1]])


def test_pair_loss_matches_direct_computation_and_known_value():
    t, b = 10.0, -10.0
    got = sigmoid_pair_loss(torch.tensor(X), torch.tensor(Y), torch.tensor(math.log(t)), torch.tensor(b))
    assert got.item() == pytest.approx(direct_loss(X, Y, t, b), rel=1e-9)
    # a perfectly aligned pair: positive logit 10*1-10 = 0 -> log 2; orthogonal negatives: log(1+e^-10)
    e = torch.eye(2, dtype=torch.float64)
    val = sigmoid_pair_loss(e, e, torch.tensor(math.log(t)), torch.tensor(b)).item()
    assert val == pytest.approx((2 * math.log(2) + 2 * math.log1p(math.exp(-10))) / 2, rel=1e-12)


def test_duplicate_ids_are_positives():
    ids = torch.tensor([7, 3, 7, 5])
    t, b = 4.0, -2.0
    got = sigmoid_pair_loss(torch.tensor(X), torch.tensor(Y), torch.tensor(math.log(t)), torch.tensor(b), ids)
    assert got.item() == pytest.approx(direct_loss(X, Y, t, b, ids.tolist()), rel=1e-9)
    plain = sigmoid_pair_loss(torch.tensor(X), torch.tensor(Y), torch.tensor(math.log(t)), torch.tensor(b))
    assert got.item() != pytest.approx(plain.item())  # the ids really change the labels


def test_trimodal_terms_each_match_direct_computation_with_their_own_t_and_b():
    loss = TriModalSigLIP().double()
    with torch.no_grad():
        for k, (t, b) in zip(PAIRS, [(5.0, -3.0), (12.0, -7.0), (2.0, 1.0)], strict=True):
            loss.pairs[k].log_temperature.fill_(math.log(t))
            loss.pairs[k].bias.fill_(b)
    Z = unit([[0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 1, -1]])
    emb = {"image": torch.tensor(X), "action": torch.tensor(Y), "text": torch.tensor(Z)}
    out = loss(emb)
    assert set(out) == set(PAIRS)
    assert out["image_action"].item() == pytest.approx(direct_loss(X, Y, 5.0, -3.0), rel=1e-9)
    assert out["image_text"].item() == pytest.approx(direct_loss(X, Z, 12.0, -7.0), rel=1e-9)
    assert out["action_text"].item() == pytest.approx(direct_loss(Y, Z, 2.0, 1.0), rel=1e-9)
    assert loss.total(out).item() == pytest.approx(sum(v.item() for v in out.values()))
    # without text only the image-action term exists
    assert set(loss({"image": emb["image"], "action": emb["action"]})) == {"image_action"}


def test_gradients_reach_temperature_and_bias():
    m = SigLIPLoss()
    x = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    m(x, x.flip(0)).backward()
    assert m.log_temperature.grad is not None and m.bias.grad is not None
    assert m.bias.grad.abs().item() > 0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="equal shapes"):
        SigLIPLoss()(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="unknown loss pair"):
        TriModalSigLIP(weights={"image_depth": 1.0})


# ---------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, x, y, ids, queue):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        m = SigLIPLoss(init_temperature=3.0, init_bias=-1.0).double()
        n = len(x) // world
        xs = x[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        ys = y[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        local_ids = ids[rank * n : (rank + 1) * n]
        loss = m(xs, ys, local_ids)
        loss.backward()
        # numpy, pickled by value: torch tensors would travel as shared-memory fds, gone once we exit
        grads = (xs.grad.numpy().copy(), ys.grad.numpy().copy())
        queue.put((rank, loss.item(), *grads, m.log_temperature.grad.item(), m.bias.grad.item()))
    finally:
        dist.destroy_process_group()


def test_ddp_loss_and_gradients_equal_single_process():
    world = 2
    gen = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(8, 5, generator=gen, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(8, 5, generator=gen, dtype=torch.float64), dim=-1)
    ids = torch.tensor([0, 1, 2, 3, 4, 1, 6, 7])  # a duplicate across the two ranks' halves
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, world, port, x, y, ids, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict((r[0], r[1:]) for r in (queue.get(timeout=120) for _ in range(world)))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    ref = SigLIPLoss(init_temperature=3.0, init_bias=-1.0).double()
    xr, yr = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    full = ref(xr, yr, ids)
    full.backward()
    # DDP averages parameter gradients over ranks: the ranks' mean loss is the global loss
    assert np.mean([results[r][0] for r in range(world)]) == pytest.approx(full.item(), rel=1e-10)
    assert np.mean([results[r][3] for r in range(world)]) == pytest.approx(ref.log_temperature.grad.item(), rel=1e-9)
    assert np.mean([results[r][4] for r in range(world)]) == pytest.approx(ref.bias.grad.item(), rel=1e-9)
    # embedding gradients (summed over ranks by the gather's backward) / world = the global gradient
    n = len(x) // world
    for r in range(world):
        np.testing.assert_allclose(results[r][1] / world, xr.grad[r * n : (r + 1) * n].numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(results[r][2] / world, yr.grad[r * n : (r + 1) * n].numpy(), rtol=1e-9, atol=1e-12)
