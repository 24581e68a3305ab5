"""ROS message <-> numpy conversions (imports message packages only; no node code, no cv_bridge).

Image <-> ndarray, CameraInfo -> K, Transform(Stamped) <-> 4x4, PointCloud2 <-> points, stamps <-> ns.
Shared by the perception node, the simulator, the recorder, the policy and training.
"""

from __future__ import annotations

import array
import sys
from typing import NamedTuple

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from clamp_core.geometry import make_transform, matrix_to_quat

_NATIVE_BIG_ENDIAN = sys.byteorder == "big"

# encoding -> (numpy dtype, channels); names follow sensor_msgs/image_encodings.hpp
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "32FC3": (np.dtype(np.float32), 3),
    "32FC4": (np.dtype(np.float32), 4),
}


def _to_bytes_array(buf: np.ndarray) -> array.array:
    # rclpy's uint8[] setter takes array('B') without a per-element Python check (bytes would be
    # iterated element by element: ~100 ms for a 640x480 depth image).
    return array.array("B", np.ascontiguousarray(buf).tobytes())


# ------------------------------------------------------------------------------------------ stamps
def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or a Header) -> integer nanoseconds."""
    stamp = getattr(stamp, "stamp", stamp)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (negative times are refused: ROS stamps are unsigned)."""
    ns = int(ns)
    if ns < 0:
        raise ValueError(f"cannot make a ROS stamp from negative time {ns} ns")
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# ------------------------------------------------------------------------------------------ images
def image_to_numpy(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array in native byte order (a copy; safe to modify).

    Honours `step` (row padding) and `is_bigendian`. Colour stays in the message's channel order
    (bgr8 stays BGR). Raises ValueError naming the problem for unknown encodings or short data.
    """
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ValueError(
            f"unsupported image encoding {msg.encoding!r} (frame {msg.header.frame_id!r}); "
            f"supported: {sorted(IMAGE_ENCODINGS)}"
        )
    dtype, channels = IMAGE_ENCODINGS[msg.encoding]
    h, w = int(msg.height), int(msg.width)
    row_bytes = w * channels * dtype.itemsize
    step = int(msg.step) if msg.step else row_bytes
    if step < row_bytes:
        raise ValueError(
            f"image step {step} B is smaller than width {w} x {channels} ch x {dtype.itemsize} B = {row_bytes} B "
            f"for encoding {msg.encoding!r}; fix the publisher's step"
        )
    raw = np.frombuffer(msg.data, dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    if raw.size < step * h:
        raise ValueError(
            f"image data has {raw.size} B but {h} rows x step {step} B = {step * h} B are needed "
            f"({msg.encoding}, {w}x{h}); height/width/step do not match the data"
        )
    rows = raw[: step * h].reshape(h, step)[:, :row_bytes]
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    out = np.ascontiguousarray(rows).view(wire).astype(dtype, copy=True)
    return out.reshape(h, w) if channels == 1 else out.reshape(h, w, channels)


def numpy_to_image(arr: np.ndarray, encoding: str, stamp: Time | int | None = None, frame_id: str = "") -> Image:
    """(H, W[, C]) array -> sensor_msgs/Image (little-endian, no row padding). `stamp` may be ns or Time."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(arr)
    shape_ok = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if not shape_ok:
        raise ValueError(
            f"array of shape {arr.shape} does not fit encoding {encoding!r}, which needs "
            f"{'(H, W)' if channels == 1 else f'(H, W, {channels})'}"
        )
    if arr.dtype != dtype:
        if not np.can_cast(arr.dtype, dtype, casting="same_kind") or arr.dtype.kind != dtype.kind:
            raise ValueError(
                f"array dtype {arr.dtype} does not match encoding {encoding!r} ({dtype}); convert it explicitly first"
            )
        arr = arr.astype(dtype)
    arr = arr.astype(dtype.newbyteorder("<"), copy=False)
    msg = Image()
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * dtype.itemsize
    msg.data = _to_bytes_array(arr)
    if stamp is not None:
        msg.header.stamp = ns_to_stamp(stamp) if isinstance(stamp, (int, np.integer)) else stamp
    msg.header.frame_id = frame_id
    return msg


# ------------------------------------------------------------------------------------- camera info
class Intrinsics(NamedTuple):
    K: np.ndarray  # (3, 3) float64 pinhole matrix
    height: int
    width: int
    distortion_model: str
    D: np.ndarray  # distortion coefficients (may be empty)


def camera_info_to_K(info: CameraInfo) -> tuple[np.ndarray, tuple[int, int]]:
    """CameraInfo -> (K 3x3 float64, (H, W)). Raises ValueError on an unset (all-zero) K."""
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(
            f"camera_info for frame {info.header.frame_id!r} has focal lengths fx={k[0, 0]}, fy={k[1, 1]}; "
            "the camera driver has not published a calibration (K must have fx, fy > 0)"
        )
    if info.height <= 0 or info.width <= 0:
        raise ValueError(f"camera_info for frame {info.header.frame_id!r} has size {info.width}x{info.height}")
    return k, (int(info.height), int(info.width))


def camera_info_intrinsics(info: CameraInfo) -> Intrinsics:
    """CameraInfo -> Intrinsics (K, size, distortion model and coefficients)."""
    k, (h, w) = camera_info_to_K(info)
    return Intrinsics(k, h, w, info.distortion_model, np.asarray(info.d, dtype=np.float64))


def make_camera_info(
    K: np.ndarray,
    height: int,
    width: int,
    frame_id: str = "",
    stamp: Time | int | None = None,
    distortion_model: str = "plumb_bob",
    D: np.ndarray | None = None,
) -> CameraInfo:
    """Pinhole CameraInfo (R = I, P = [K | 0]) as realsense2_camera publishes for rectified streams."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    info = CameraInfo()
    info.height, info.width = int(height), int(width)
    info.distortion_model = distortion_model
    info.d = [float(v) for v in (np.zeros(5) if D is None else np.asarray(D, dtype=np.float64))]
    info.k = [float(v) for v in K.ravel()]
    info.r = [float(v) for v in np.eye(3).ravel()]
    p = np.zeros((3, 4))
    p[:, :3] = K
    info.p = [float(v) for v in p.ravel()]
    info.header.frame_id = frame_id
    if stamp is not None:
        info.header.stamp = ns_to_stamp(stamp) if isinstance(stamp, (int, np.integer)) else stamp
    return info


# -------------------------------------------------------------------------------------- transforms
def transform_to_matrix(tf: Transform | TransformStamped) -> np.ndarray:
    """geometry_msgs Transform or TransformStamped -> 4x4 float64 (maps child-frame points into the parent)."""
    tf = getattr(tf, "transform", tf)
    t, q = tf.translation, tf.rotation
    return make_transform(np.array([q.x, q.y, q.z, q.w]), np.array([t.x, t.y, t.z]))


def matrix_to_transform(
    T: np.ndarray, parent: str | None = None, child: str | None = None, stamp: Time | int | None = None
) -> Transform | TransformStamped:
    """4x4 -> geometry_msgs Transform; a TransformStamped when `parent`/`child` frames are given."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"expected a 4x4 homogeneous transform, got shape {T.shape}")
    q = matrix_to_quat(T[:3, :3])
    tf = Transform(
        translation=Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )
    if parent is None and child is None:
        return tf
    out = TransformStamped(transform=tf)
    out.header.frame_id = parent or ""
    out.child_frame_id = child or ""
    if stamp is not None:
        out.header.stamp = ns_to_stamp(stamp) if isinstance(stamp, (int, np.integer)) else stamp
    return out


# ------------------------------------------------------------------------------------ point clouds
_FIELD_DTYPES = {
    PointField.INT8: np.int8,
    PointField.UINT8: np.uint8,
    PointField.INT16: np.int16,
    PointField.UINT16: np.uint16,
    PointField.INT32: np.int32,
    PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32,
    PointField.FLOAT64: np.float64,
}


def points_to_cloud(
    points: np.ndarray, frame_id: str = "", stamp: Time | int | None = None, rgb: np.ndarray | None = None
) -> PointCloud2:
    """(N, 3) xyz (+ optional (N, 3) uint8 colours) -> unordered PointCloud2, float32 x, y, z[, rgb].

    `rgb` is packed the way PCL/RViz read it: one FLOAT32 field holding 0x00RRGGBB bits.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    n = points.shape[0]
    names = ["x", "y", "z"]
    formats = ["<f4", "<f4", "<f4"]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (n, 3):
            raise ValueError(f"rgb must have shape ({n}, 3) like the points, got {rgb.shape}")
        names.append("rgb")
        formats.append("<u4")
    rec = np.empty(n, dtype=np.dtype({"names": names, "formats": formats}))
    rec["x"], rec["y"], rec["z"] = points[:, 0], points[:, 1], points[:, 2]
    if rgb is not None:
        c = rgb.astype(np.uint32)
        rec["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    msg = PointCloud2()
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, name in enumerate(names)
    ]
    msg.is_bigendian = False
    msg.point_step = 4 * len(names)
    msg.row_step = msg.point_step * n
    msg.is_dense = bool(np.isfinite(points).all())
    msg.data = _to_bytes_array(rec)
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = ns_to_stamp(stamp) if isinstance(stamp, (int, np.integer)) else stamp
    return msg


def cloud_to_points(msg: PointCloud2, remove_nans: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 -> ((N, 3) float32 xyz, (N, 3) uint8 rgb or None). Reads any field layout/padding.

    Points with a non-finite coordinate are dropped when `remove_nans` (organised clouds mark holes so).
    """
    fields = {f.name: f for f in msg.fields}
    missing = [a for a in "xyz" if a not in fields]
    if missing:
        raise ValueError(f"PointCloud2 lacks field(s) {missing}; has {sorted(fields)}")
    endian = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for name in ("x", "y", "z", "rgb", "rgba"):
        if name in fields:
            f = fields[name]
            if f.datatype not in _FIELD_DTYPES:
                raise ValueError(f"PointCloud2 field {name!r} has unknown datatype {f.datatype}")
            base = np.dtype(_FIELD_DTYPES[f.datatype])
            if name in ("rgb", "rgba"):
                base = np.dtype(np.uint32)  # packed colour bits regardless of the declared float32
            names.append(name)
            formats.append(base.newbyteorder(endian))
            offsets.append(f.offset)
    point_step = int(msg.point_step)
    n_rows, n_cols = int(msg.height), int(msg.width)
    row_step = int(msg.row_step) or point_step * n_cols
    need = row_step * (n_rows - 1) + point_step * n_cols if n_rows else 0
    field_end = max(o + np.dtype(f).itemsize for o, f in zip(offsets, formats, strict=True))
    if len(msg.data) < need or field_end > point_step:
        raise ValueError(
            f"PointCloud2 data ({len(msg.data)} B) does not fit {n_cols}x{n_rows} points of "
            f"step {point_step} B (row_step {row_step} B); header and data disagree"
        )
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if row_step == point_step * n_cols:
        rec = raw[: point_step * n_cols * n_rows].view(dt)
    else:  # padded rows: gather them
        rows = [raw[r * row_step : r * row_step + point_step * n_cols] for r in range(n_rows)]
        rec = np.concatenate(rows).view(dt)
    pts = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float32)
    colour = None
    cname = "rgb" if "rgb" in names else ("rgba" if "rgba" in names else None)
    if cname is not None:
        packed = rec[cname].astype(np.uint32)
        colour = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)
    if remove_nans:
        keep = np.isfinite(pts).all(axis=1)
        if not keep.all():
            pts = pts[keep]
            colour = colour[keep] if colour is not None else None
    return pts, colour
