"""clamp_sim's SimNode (MuJoCo ALOHA, real rendering) -> PerceptionNode over real DDS -> /clamp/views."""

from __future__ import annotations

import numpy as np
import pytest
from clamp_core import rig
from clamp_core.msg_conversions import image_to_numpy
from clamp_perception.perception_node import PerceptionNode
from clamp_perception.render import untile
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

clamp_sim_node = pytest.importorskip("clamp_sim.sim_node", reason="clamp_sim (MuJoCo) not importable")


@pytest.mark.slow
def test_views_from_the_simulated_aloha(ros):
    sim = clamp_sim_node.SimNode(
        context=ros.context,
        parameter_overrides=[
            Parameter("image_height", value=120),
            Parameter("image_width", value=160),
            Parameter("camera_hz", value=10.0),
        ],
    )
    ros.add(sim)
    node = ros.add(
        PerceptionNode(
            context=ros.context,
            parameter_overrides=[Parameter("use_sim_time", value=True), Parameter("image_qos", value="reliable")],
        )
    )
    qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
    msgs = ros.wait_for_messages(rig.VIEWS_TOPIC, Image, count=2, timeout=90.0, qos=qos)
    views = untile(image_to_numpy(msgs[-1]), len(rig.VIEW_NAMES))
    filled = (views[..., 0] > 0).mean(axis=(1, 2))
    assert np.all(filled > 0.1), dict(zip(rig.VIEW_NAMES, filled.round(3), strict=True))
    top = views[rig.VIEW_NAMES.index("overhead")]
    z = top[..., 3][top[..., 0] > 0]
    # most of what the overhead view sees is gym-aloha's table top at z = 0
    assert np.mean(np.abs(z) < 0.01) > 0.5, np.percentile(z, [5, 50, 95])
    assert msgs[-1].header.stamp.sec < 1000  # sim time, not wall time
    assert node.published >= 2 and not node.skipped.get("missing_tf")
