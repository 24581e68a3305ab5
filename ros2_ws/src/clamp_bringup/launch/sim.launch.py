"""Simulated ALOHA (clamp_sim) with the clamp nodes; mode:=teleop|record|arms selects another graph.

Thin on purpose: the node graph comes from clamp_bringup.graph (tested), the same description that
`python -m clamp_bringup.run` starts in-process. Arguments: profile:=sim mode:=policy.
"""

from clamp_bringup.graph import launch_description


def generate_launch_description():
    return launch_description("sim", "policy")
