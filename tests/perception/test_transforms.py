"""TransformBuffer: chaining, interpolation, static vs dynamic, errors that name the frames."""

from __future__ import annotations

import numpy as np
import pytest
from clamp_core.geometry import invert_transform, make_transform, matrix_to_quat, quat_to_matrix
from clamp_core.msg_conversions import matrix_to_transform
from clamp_perception.transforms import (
    ConnectivityError,
    ExtrapolationError,
    TransformBuffer,
    UnknownFrameError,
)
from tf2_msgs.msg import TFMessage


def rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


S = 1_000_000_000  # 1 s in ns


def test_chain_and_inverse():
    buf = TransformBuffer()
    T_w_b = make_transform(rot_z(90), [1, 0, 0])
    T_b_c = make_transform(rot_z(-30), [0, 2, 0.5])
    T_w_d = make_transform(rot_z(10), [0, 0, 1])
    buf.set_transform("world", "base", T_w_b, static=True)
    buf.set_transform("base", "cam", T_b_c, stamp_ns=5 * S)
    buf.set_transform("world", "other", T_w_d, static=True)
    np.testing.assert_allclose(buf.lookup("world", "cam", 5 * S), T_w_b @ T_b_c, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("cam", "world", 5 * S), invert_transform(T_w_b @ T_b_c), atol=1e-12)
    # across branches: other <- cam goes up to world and down again
    np.testing.assert_allclose(buf.lookup("other", "cam", 5 * S), invert_transform(T_w_d) @ T_w_b @ T_b_c, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("cam", "cam", 5 * S), np.eye(4))
    # a point: the camera origin in world is the translation of the chain
    p = buf.lookup("world", "cam") @ [0, 0, 0, 1]
    np.testing.assert_allclose(p[:3], (T_w_b @ T_b_c)[:3, 3], atol=1e-12)


def test_interpolation_lerp_and_slerp():
    buf = TransformBuffer()
    buf.set_transform("world", "gripper", make_transform(rot_z(0), [0, 0, 0]), 1 * S)
    buf.set_transform("world", "gripper", make_transform(rot_z(90), [1, 2, 3]), 2 * S)
    mid = buf.lookup("world", "gripper", 1 * S + S // 4)
    np.testing.assert_allclose(mid[:3, 3], [0.25, 0.5, 0.75], atol=1e-12)
    np.testing.assert_allclose(mid[:3, :3], rot_z(22.5), atol=1e-12)  # slerp: constant angular speed
    # out-of-order insert lands in place
    buf.set_transform("world", "gripper", make_transform(rot_z(45), [9, 9, 9]), 1 * S + S // 2)
    np.testing.assert_allclose(buf.lookup("world", "gripper", 1 * S + S // 2)[:3, 3], [9, 9, 9])
    # "latest" without a stamp
    np.testing.assert_allclose(buf.lookup("world", "gripper")[:3, 3], [1, 2, 3])
    assert buf.latest_stamp("gripper") == 2 * S


def test_slerp_takes_the_short_way_and_handles_sign_flips():
    buf = TransformBuffer()
    q0 = matrix_to_quat(rot_z(170))
    q1 = -matrix_to_quat(rot_z(-170))  # same rotation, opposite quaternion sign
    buf.set_transform("a", "b", (np.zeros(3), q0), 0)
    buf.set_transform("a", "b", (np.zeros(3), q1), S)
    mid = buf.lookup("a", "b", S // 2)[:3, :3]
    np.testing.assert_allclose(mid, rot_z(180), atol=1e-9)  # through 180, not through 0
    np.testing.assert_allclose(quat_to_matrix(q1), rot_z(-170), atol=1e-12)


def test_extrapolation_tolerance_and_errors():
    buf = TransformBuffer(extrapolation_tolerance_s=0.05)
    buf.set_transform("world", "g", make_transform(translation=[0, 0, 0]), 10 * S)
    buf.set_transform("world", "g", make_transform(translation=[1, 0, 0]), 11 * S)
    # within tolerance: clamps to the end sample
    np.testing.assert_allclose(buf.lookup("world", "g", 11 * S + 40_000_000)[:3, 3], [1, 0, 0])
    with pytest.raises(ExtrapolationError, match=r"'world' -> 'g' is only known from 10.000s to 11.000s"):
        buf.lookup("world", "g", 12 * S)
    with pytest.raises(ExtrapolationError):
        buf.lookup("world", "g", 9 * S)
    with pytest.raises(UnknownFrameError, match=r"frame 'nope' is unknown.*known frames: \[g, world\]"):
        buf.lookup("world", "nope")
    buf.set_transform("island", "rock", np.eye(4), static=True)
    with pytest.raises(ConnectivityError, match="not connected"):
        buf.lookup("world", "rock")
    assert not buf.can_transform("world", "rock") and buf.can_transform("world", "g", 10 * S)
    with pytest.raises(ValueError, match="NaN"):
        buf.set_transform("world", "g", np.full((4, 4), np.nan), 12 * S)
    with pytest.raises(ValueError, match="itself"):
        buf.set_transform("world", "world", np.eye(4))


def test_static_holds_at_all_times_and_cache_trims_history():
    buf = TransformBuffer(cache_time_s=1.0)
    buf.set_transform("world", "mount", make_transform(translation=[0, 0, 1]), 0, static=True)
    for k in range(30):
        buf.set_transform("mount", "arm", make_transform(translation=[k, 0, 0]), k * S // 10)
    assert buf.lookup("world", "mount", 123 * S)[2, 3] == 1.0
    np.testing.assert_allclose(buf.lookup("world", "arm", 29 * S // 10)[:3, 3], [29, 0, 1])
    with pytest.raises(ExtrapolationError):  # older than the 1 s cache
        buf.lookup("world", "arm", 0)
    assert len(buf._edges["arm"].stamps) <= 11


def test_feeds_from_tf2_messages():
    buf = TransformBuffer()
    T = make_transform(rot_z(33), [0.1, 0.2, 0.3])
    msg = TFMessage(transforms=[matrix_to_transform(T, "/world", "cam_high_color_optical_frame", stamp=7 * S)])
    assert buf.add_message(msg, static=True) == 1
    np.testing.assert_allclose(buf.lookup("world", "cam_high_color_optical_frame", 0), T, atol=1e-12)
