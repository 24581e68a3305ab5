"""ALOHA teleoperation: xs_sdk for all four arms, cameras, arm driver, teleop (leaders -> followers).

Thin on purpose: the node graph comes from clamp_bringup.graph (tested), the same description that
`python -m clamp_bringup.run` starts in-process. Arguments: profile:=aloha mode:=teleop.
"""

from clamp_bringup.graph import launch_description


def generate_launch_description():
    return launch_description("aloha", "teleop")
