"""Export -> load round-trips bit-exactly; anything that does not match is refused with a clear error."""

from __future__ import annotations

import json

import pytest
import torch
from clamp_policy.models import CheckpointError, DiffusionPolicy, load_policy, save_policy, tiny_config


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(0)
    policy = DiffusionPolicy(tiny_config(task_conditioning="vocab", task_vocab=["a", "b"])).eval()
    with torch.no_grad():
        policy.action_min.fill_(-1.5)  # normalisation travels with the weights
    out = save_policy(policy, tmp_path / "policy", {"note": "test"})
    return policy, out


def test_round_trip_is_bit_exact(exported):
    policy, out = exported
    loaded = load_policy(out)
    ref = policy.state_dict()
    assert set(loaded.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    assert float(loaded.action_min[0]) == -1.5
    obs = {"views": torch.rand(1, 5, 4, 32, 32), "state": torch.rand(1, 14), "task": ["b"]}
    a = policy.sample(obs, generator=torch.Generator().manual_seed(3))
    b = loaded.sample(obs, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    doc = json.loads((out / "config.json").read_text())
    assert doc["format"] == "clamp_policy" and doc["metadata"] == {"note": "test"}
    assert (out / "model.safetensors.sha256").read_text().split()[0] == doc["weights_sha256"]
    assert b"pickle" not in (out / "model.safetensors").read_bytes()[:200]


def test_modified_weights_fail_the_checksum(exported):
    _, out = exported
    w = out / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch.*re-export"):
        load_policy(out)


def test_config_that_does_not_match_the_weights_is_refused(exported):
    _, out = exported
    doc = json.loads((out / "config.json").read_text())
    doc["policy_config"]["d_model"] = 64
    doc["policy_config"]["nhead"] = 2
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="shape mismatches.*different models"):
        load_policy(out)


def test_unknown_config_keys_and_missing_files_are_named(exported, tmp_path):
    _, out = exported
    doc = json.loads((out / "config.json").read_text())
    doc["policy_config"]["mystery_knob"] = 1
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="mystery_knob"):
        load_policy(out)
    with pytest.raises(CheckpointError, match="not an exported policy"):
        load_policy(tmp_path / "nowhere")
    doc["policy_config"].pop("mystery_knob")
    doc["format_version"] = 99
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_policy(out)


def test_weights_of_another_architecture_are_refused(exported, tmp_path):
    _, out = exported
    other = save_policy(DiffusionPolicy(tiny_config(action_history=2)), tmp_path / "other")
    # weights of `other` with the config (and checksum) of `out`: tensors missing/unexpected
    doc = json.loads((out / "config.json").read_text())
    (other / "config.json").write_text(
        json.dumps({**doc, "weights_sha256": json.loads((other / "config.json").read_text())["weights_sha256"]})
    )
    with pytest.raises(CheckpointError, match="unexpected tensors.*history"):
        load_policy(other)
