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


def test_profile_sections_configure_the_nodes_and_typos_are_named(ros, tmp_path):
    from clamp_core.profile import resolve_profile_path
    from rclpy.parameter import Parameter

    prof = yaml.safe_load(resolve_profile_path("sim").read_text())
    prof["limits"] = {"velocity": 1.0}
    prof["policy"] = {"executor": {"blend_s": 0.05, "velocity_scale": 0.5}, "inference": {"replan_every": 10}}
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(prof))
    node = ChunkExecutorNode(context=ros.context, parameter_overrides=[Parameter("profile", value=str(path))])
    try:
        assert node.config.blend_s == 0.05
        assert node.core.limiter.limits.velocity.max() == pytest.approx(0.5)  # profile limit x velocity_scale
    finally:
        node.close()
        node.destroy_node()
    inf = InferenceNode(
        policy=DiffusionPolicy(tiny_config()),
        context=ros.context,
        parameter_overrides=[Parameter("profile", value=str(path))],
    )
    try:
        assert inf.replan_period == pytest.approx(10 / 50)
    finally:
        inf.close()
        inf.destroy_node()
    prof["policy"] = {"executor": {"blend": 0.05}}
    path.write_text(yaml.safe_dump(prof))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['blend'\] for ExecutorConfig"):
        ChunkExecutorNode(context=ros.context, parameter_overrides=[Parameter("profile", value=str(path))])
