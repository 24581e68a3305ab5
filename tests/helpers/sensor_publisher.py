"""Separate-process publisher for the DDS test: a 640x480 rgb8 Image and a PointCloud2 at 20 Hz.

Content is a deterministic function of the sequence number (see `expected_*`) so the receiving
process can check every byte arrived intact.
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image, PointCloud2, PointField

HEIGHT, WIDTH, N_POINTS = 480, 640, 5000


def expected_image(seq: int) -> np.ndarray:
    rows = np.arange(HEIGHT, dtype=np.uint32)[:, None, None]
    cols = np.arange(WIDTH, dtype=np.uint32)[None, :, None]
    chan = np.arange(3, dtype=np.uint32)[None, None, :]
    return ((rows * 3 + cols * 7 + chan * 11 + seq) % 251).astype(np.uint8)


def expected_points(seq: int) -> np.ndarray:
    return np.random.default_rng(seq).uniform(-1.0, 1.0, (N_POINTS, 3)).astype(np.float32)


class SensorPublisher(Node):
    def __init__(self) -> None:
        super().__init__("sensor_publisher")
        self.image_pub = self.create_publisher(Image, "/test/image", 10)
        self.cloud_pub = self.create_publisher(PointCloud2, "/test/cloud", 10)
        self.seq = 0
        self.create_timer(0.05, self.tick)

    def tick(self) -> None:
        stamp = self.get_clock().now().to_msg()
        image = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
        image.header.stamp, image.header.frame_id = stamp, f"seq_{self.seq}"
        image.data = expected_image(self.seq).tobytes()
        cloud = PointCloud2(height=1, width=N_POINTS, is_dense=True, point_step=12, row_step=12 * N_POINTS)
        cloud.header.stamp, cloud.header.frame_id = stamp, f"seq_{self.seq}"
        cloud.fields = [
            PointField(name=axis, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, axis in enumerate("xyz")
        ]
        cloud.data = expected_points(self.seq).tobytes()
        self.image_pub.publish(image)
        self.cloud_pub.publish(cloud)
        self.seq += 1


def main() -> None:
    rclpy.init(args=sys.argv)
    node = SensorPublisher()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
