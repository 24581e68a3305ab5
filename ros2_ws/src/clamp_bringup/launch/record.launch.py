"""ALOHA demonstration recording: everything in teleop.launch.py plus the episode recorder.

Thin on purpose: the node graph comes from clamp_bringup.graph (tested), the same description that
`python -m clamp_bringup.run` starts in-process. Arguments: profile:=aloha mode:=record.
"""

from clamp_bringup.graph import launch_description


def generate_launch_description():
    return launch_description("aloha", "record")
