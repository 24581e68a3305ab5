"""config/policy.yaml documents the nodes' real parameters and defaults: keep them in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from clamp_policy.executor_node import ChunkExecutorNode
from clamp_policy.inference_node import InferenceNode
from clamp_policy.models import DiffusionPolicy, tiny_config

CONFIG = Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / "clamp_policy" / "config" / "policy.yaml"
BUILTIN = {"use_sim_time", "profile", "start_type_description_service"}  # not ours to document


def _declared(node) -> dict:
    return {name: p.value for name, p in node._parameters.items() if name not in BUILTIN}


@pytest.mark.parametrize("name", ["chunk_executor", "clamp_inference"])
def test_policy_yaml_matches_the_node_defaults(ros, name):
    doc = yaml.safe_load(CONFIG.read_text())
    documented = doc[name]["ros__parameters"]
    if name == "chunk_executor":
        node = ChunkExecutorNode(context=ros.context)
    else:
        node = InferenceNode(policy=DiffusionPolicy(tiny_config()), context=ros.context)
    try:
        assert node.get_name() == name
        declared = _declared(node)
        assert set(documented) == set(declared), (
            f"undocumented {set(declared) - set(documented)}, stale {set(documented) - set(declared)}"
        )
        for key, value in documented.items():
            assert declared[key] == pytest.approx(value) if isinstance(value, float) else declared[key] == value, key
    finally:
        node.close()
        node.destroy_node()
