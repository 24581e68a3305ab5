"""The shipped CLAMP checkpoint (models/clamp_cpu, made by `make pretrained`) loads with the current code
and computes what it computed when it was made: fails when code and checkpoint disagree.

- every tensor of clamp/ and policy/ present with its shape (strict loads), every config key known;
- the sha256 in MODEL_CARD.md and SHA256SUMS are those of the files; at most 20 MB in all;
- the image, action and text embeddings and a seeded DDIM chunk on the held-out samples stored in
  reference.safetensors equal the outputs stored beside them (written by the pretrain command's --ship).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "clamp_cpu"
MAX_BYTES = 20 * 1024 * 1024
ATOL = 1e-4


@pytest.fixture(scope="module")
def shipped():
    from clamp_training.clamp_checkpoint import load_clamp

    model, cfg, meta = load_clamp(SHIPPED)  # checksum in config.json verified, state dict loaded strictly
    return model, cfg, meta


def _sha256(path: Path) -> str:
    from clamp_policy.models.checkpoint import sha256_file

    return sha256_file(path)


def _restricted(value, like):
    """`value` with only the (nested) keys of `like`."""
    if isinstance(like, dict) and isinstance(value, dict):
        return {k: _restricted(value.get(k), v) for k, v in like.items()}
    return value


def test_size_and_sha256_of_every_file_match_the_card():
    files = sorted(p for p in SHIPPED.rglob("*") if p.is_file())
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES
    sums = dict(reversed(line.split("  ", 1)) for line in (SHIPPED / "SHA256SUMS").read_text().splitlines())
    card = (SHIPPED / "MODEL_CARD.md").read_text()
    in_card = dict(re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \|$", card, flags=re.M))
    listed = {p.relative_to(SHIPPED).as_posix() for p in files} - {"SHA256SUMS", "MODEL_CARD.md"}
    assert set(sums) == listed
    assert in_card == sums
    for name, digest in sums.items():
        assert _sha256(SHIPPED / name) == digest, f"{name} changed after the card was written"


def test_loads_strictly_with_known_config_keys(shipped):
    from clamp_policy.models.checkpoint import load_policy
    from clamp_training.config import TrainConfig
    from safetensors import safe_open

    model, cfg, _ = shipped
    with safe_open(str(SHIPPED / "clamp" / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    doc = json.loads((SHIPPED / "clamp" / "config.json").read_text())
    # an unknown key raises; every saved value survives (keys the code added since keep their defaults)
    assert _restricted(TrainConfig.from_dict(doc["config"]).to_dict(), doc["config"]) == doc["config"]
    assert cfg.stage == "pretrain"
    policy = load_policy(SHIPPED / "policy")  # strict, checksum verified
    # the shipped policy is the CLAMP model's own (what fine-tuning starts from)
    own = model.policy.state_dict()
    for k, v in policy.state_dict().items():
        assert torch.equal(v, own[k]), k
    assert set(policy.state_dict()) == set(own)


def test_outputs_match_the_reference(shipped):
    from clamp_training.commands.pretrain import REFERENCE, reference_outputs
    from safetensors import safe_open

    model, _, _ = shipped
    with safe_open(str(SHIPPED / REFERENCE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        strings = json.loads(f.metadata()["strings"])
    batch = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("input.")}
    batch.update(strings)
    expected = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("output.")}
    assert set(expected) == {"image_embedding", "action_embedding", "text_embedding", "policy_chunk"}
    got = reference_outputs(model, batch)
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].shape == v.shape, k
        err = float((got[k].float() - v).abs().max())
        assert err <= ATOL, f"{k}: max abs difference {err:.2e} from the shipped reference"


def test_the_config_says_what_the_shipped_checkpoint_was_trained_with(shipped, tmp_path):
    """training/configs/pretrain_cpu.yaml (what `make pretrained` runs) made this checkpoint: same
    training keys, and its data are `episodes` demonstrations of each of its tasks, none of place_cube."""
    from clamp_training.commands.pretrain import _split_demonstrations
    from clamp_training.config import build_config

    config = SHIPPED.parents[1] / "training" / "configs" / "pretrain_cpu.yaml"
    demos, rest = _split_demonstrations(str(config), tmp_path)
    cfg = build_config(None, rest, {"stage": "pretrain"})
    _, shipped_cfg, meta = shipped
    for key in ("steps", "batch_size", "lr", "warmup_steps", "ema_decay", "val_episodes", "val_fraction", "seed"):
        assert getattr(cfg, key) == getattr(shipped_cfg, key), key
    assert cfg.clamp == shipped_cfg.clamp
    names = sorted(Path(p).name for p in meta["data"])
    expected = sorted(
        f"{t}_seed{s:04d}" for t in demos["tasks"] for s in range(demos["first_seed"], demos["first_seed"] + 50)
    )
    assert set(names) <= set(expected)
    for task in demos["tasks"]:
        assert sum(n.rsplit("_seed", 1)[0] == task for n in names) == demos["episodes"], task
    assert "place_cube" not in demos["tasks"]
