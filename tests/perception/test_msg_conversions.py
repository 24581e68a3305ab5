"""ROS message <-> numpy conversions: round trips, padding, endianness, bad input, and a real DDS hop."""

from __future__ import annotations

import array

import numpy as np
import pytest
from clamp_core.geometry import look_at, make_transform, quat_to_matrix
from clamp_core.msg_conversions import (
    camera_info_intrinsics,
    camera_info_to_K,
    cloud_to_points,
    image_to_numpy,
    make_camera_info,
    matrix_to_transform,
    ns_to_stamp,
    numpy_to_image,
    points_to_cloud,
    stamp_to_ns,
    transform_to_matrix,
)
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("encoding", "shape", "dtype"),
    [
        ("rgb8", (5, 7, 3), np.uint8),
        ("bgr8", (5, 7, 3), np.uint8),
        ("mono8", (5, 7), np.uint8),
        ("16UC1", (5, 7), np.uint16),
        ("32FC1", (5, 7), np.float32),
        ("32FC4", (5, 7, 4), np.float32),
    ],
)
def test_image_round_trip(encoding, shape, dtype):
    if np.issubdtype(dtype, np.integer):
        arr = RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    else:
        arr = RNG.normal(size=shape).astype(dtype)
    msg = numpy_to_image(arr, encoding, stamp=1_500_000_123, frame_id="cam")
    assert isinstance(msg.data, array.array)
    assert (msg.height, msg.width, msg.encoding) == (shape[0], shape[1], encoding)
    assert msg.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    assert stamp_to_ns(msg.header) == 1_500_000_123 and msg.header.frame_id == "cam"
    back = image_to_numpy(msg)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, arr)


def test_image_honours_step_padding_and_big_endian():
    depth = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000 + 7
    padded = np.zeros((3, 12), dtype=np.uint8)  # 8 B of pixels + 4 B padding per row
    padded[:, :8] = depth.astype(">u2").view(np.uint8).reshape(3, 8)
    padded[:, 8:] = 0xEE
    msg = Image(height=3, width=4, encoding="16UC1", is_bigendian=1, step=12)
    msg.data = array.array("B", padded.tobytes())
    out = image_to_numpy(msg)
    assert out.dtype == np.uint16 and out.dtype.byteorder in "=<|"
    np.testing.assert_array_equal(out, depth)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(height=2, width=2, encoding="yuv422", step=4, data=[0] * 8), "unsupported image encoding 'yuv422'"),
        (dict(height=2, width=2, encoding="16UC1", step=4, data=[0] * 6), "rows x step"),
        (dict(height=2, width=3, encoding="16UC1", step=4, data=[0] * 12), "step 4 B is smaller"),
    ],
)
def test_image_bad_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        image_to_numpy(Image(**kwargs))


def test_numpy_to_image_refuses_mismatched_arrays():
    with pytest.raises(ValueError, match=r"needs \(H, W, 3\)"):
        numpy_to_image(np.zeros((4, 4), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="does not match encoding '16UC1'"):
        numpy_to_image(np.zeros((4, 4), np.float32), "16UC1")
    # float64 depth in metres converts to 32FC1 without fuss
    assert image_to_numpy(numpy_to_image(np.full((2, 2), 0.5), "32FC1")).dtype == np.float32


def test_camera_info_K_and_size():
    K = np.array([[600.0, 0, 320.5], [0, 601.0, 240.5], [0, 0, 1]])
    info = make_camera_info(K, 480, 640, frame_id="cam_high_color_optical_frame", stamp=5)
    k, (h, w) = camera_info_to_K(info)
    np.testing.assert_array_equal(k, K)
    assert (h, w) == (480, 640)
    intr = camera_info_intrinsics(info)
    assert intr.distortion_model == "plumb_bob" and not intr.D.any()
    with pytest.raises(ValueError, match="has not published a calibration"):
        camera_info_to_K(CameraInfo(height=480, width=640))


def test_transform_round_trip():
    T = look_at([0.3, -0.5, 0.8], [0.0, 0.1, 0.05])
    msg = matrix_to_transform(T, "world", "cam_high_color_optical_frame", stamp=42)
    assert isinstance(msg, TransformStamped)
    assert msg.header.frame_id == "world" and msg.child_frame_id == "cam_high_color_optical_frame"
    assert stamp_to_ns(msg.header.stamp) == 42
    np.testing.assert_allclose(transform_to_matrix(msg), T, atol=1e-12)
    np.testing.assert_allclose(transform_to_matrix(msg.transform), T, atol=1e-12)
    # a quaternion of any sign/scale gives the same matrix
    q = np.array([0.1, -0.4, 0.3, 0.8])
    np.testing.assert_allclose(quat_to_matrix(q), quat_to_matrix(-3 * q), atol=1e-12)
    with pytest.raises(ValueError, match="4x4"):
        matrix_to_transform(np.eye(3))


def test_cloud_round_trip_with_rgb_and_nans():
    pts = RNG.uniform(-1, 1, (100, 3)).astype(np.float32)
    pts[3] = np.nan
    rgb = RNG.integers(0, 256, (100, 3), dtype=np.uint8)
    msg = points_to_cloud(pts, "world", 7, rgb=rgb)
    assert msg.point_step == 16 and [f.name for f in msg.fields] == ["x", "y", "z", "rgb"] and not msg.is_dense
    out, col = cloud_to_points(msg)
    keep = np.isfinite(pts).all(1)
    np.testing.assert_array_equal(out, pts[keep])
    np.testing.assert_array_equal(col, rgb[keep])
    out_all, _ = cloud_to_points(msg, remove_nans=False)
    assert out_all.shape == (100, 3)


def test_cloud_reads_foreign_layouts():
    # an organised, padded, big-endian cloud with float64 xyz and an extra intensity field
    h, w = 2, 3
    pts = RNG.normal(size=(h * w, 3))
    point_step, row_step = 32, 32 * w + 8
    buf = np.zeros((h, row_step), np.uint8)
    for r in range(h):
        rec = np.zeros(w, dtype=np.dtype({"names": list("xyz"), "formats": [">f8"] * 3, "itemsize": 32}))
        for i, a in enumerate("xyz"):
            rec[a] = pts[r * w : (r + 1) * w, i]
        buf[r, : point_step * w] = rec.view(np.uint8)
    msg = PointCloud2(height=h, width=w, is_bigendian=True, point_step=point_step, row_step=row_step)
    msg.fields = [PointField(name=a, offset=8 * i, datatype=PointField.FLOAT64, count=1) for i, a in enumerate("xyz")]
    msg.fields.append(PointField(name="intensity", offset=24, datatype=PointField.FLOAT32, count=1))
    msg.data = array.array("B", buf.tobytes())
    out, col = cloud_to_points(msg)
    assert col is None
    np.testing.assert_allclose(out, pts.astype(np.float32))
    msg.fields = msg.fields[:2]
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['z'\]"):
        cloud_to_points(msg)


def test_stamps():
    assert stamp_to_ns(ns_to_stamp(1_700_000_000_123_456_789)) == 1_700_000_000_123_456_789
    with pytest.raises(ValueError, match="negative"):
        ns_to_stamp(-1)
    assert np.allclose(make_transform(translation=[1, 2, 3])[:3, 3], [1, 2, 3])


def test_conversions_survive_a_real_dds_hop(ros):
    """Messages built here and read back after Fast DDS (de)serialisation (data arrives as array('B'))."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    depth = RNG.integers(0, 5000, (48, 64), dtype=np.uint16)
    pub = ros.publisher(Image, "/perception_test/depth", qos)
    cloud_pub = ros.publisher(PointCloud2, "/perception_test/cloud", qos)
    import threading

    stop = threading.Event()
    pts = RNG.normal(size=(50, 3)).astype(np.float32)

    def spam():
        while not stop.is_set():
            pub.publish(numpy_to_image(depth, "16UC1", stamp=99, frame_id="cam"))
            cloud_pub.publish(points_to_cloud(pts, "world", 99))
            stop.wait(0.05)

    t = threading.Thread(target=spam, daemon=True)
    t.start()
    try:
        img = ros.wait_for_message("/perception_test/depth", Image, timeout=10.0, qos=qos)
        cloud = ros.wait_for_message("/perception_test/cloud", PointCloud2, timeout=10.0, qos=qos)
    finally:
        stop.set()
        t.join()
    np.testing.assert_array_equal(image_to_numpy(img), depth)
    np.testing.assert_array_equal(cloud_to_points(cloud)[0], pts)
    assert stamp_to_ns(img.header.stamp) == 99
