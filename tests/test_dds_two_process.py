"""Two OS processes exchange camera-sized messages over real DDS (Fast DDS, loopback)."""

import numpy as np
from helpers import sensor_publisher as sp
from sensor_msgs.msg import Image, PointCloud2


def _seq(msg) -> int:
    return int(msg.header.frame_id.removeprefix("seq_"))


def test_image_and_cloud_cross_process(ros, ros_process, repo_root):
    publisher = ros_process([str(repo_root / "tests/helpers/sensor_publisher.py")])
    try:
        images = ros.wait_for_messages("/test/image", Image, count=3, timeout=20)
        clouds = ros.wait_for_messages("/test/cloud", PointCloud2, count=3, timeout=10)
    except AssertionError as err:
        raise AssertionError(f"{err}\npublisher output:\n{publisher.stop()}") from None

    for img in images:
        assert (img.height, img.width, img.encoding) == (480, 640, "rgb8")
        pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(480, 640, 3)
        np.testing.assert_array_equal(pixels, sp.expected_image(_seq(img)))
    for cloud in clouds:
        assert cloud.width == sp.N_POINTS and [f.name for f in cloud.fields] == ["x", "y", "z"]
        points = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 3)
        np.testing.assert_array_equal(points, sp.expected_points(_seq(cloud)))
    # consecutive sequence numbers: nothing dropped between the first and the third image
    seqs = [_seq(m) for m in images]
    assert seqs == list(range(seqs[0], seqs[0] + 3)), seqs
    assert publisher.proc.poll() is None, "publisher process died"
