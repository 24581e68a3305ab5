"""ALOHA: xs_sdk per arm, realsense2_camera per D405, static TF, and the clamp nodes.

xs_sdk comes with robot_state_publisher per arm (interbotix_xsarm_control); static TF places the
follower bases and the calibrated camera mounts; the clamp nodes are perception, inference, the
chunk executor and the arm driver.

Thin on purpose: the node graph comes from clamp_bringup.graph (tested), the same description that
`python -m clamp_bringup.run` starts in-process. Arguments: profile:=aloha mode:=policy.
"""

from clamp_bringup.graph import launch_description


def generate_launch_description():
    return launch_description("aloha", "policy")
