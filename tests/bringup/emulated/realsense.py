"""An emulated realsense2_camera (4.51+, the pinned release's interface) for one D405.

Node `<camera_name>` in namespace `<camera_namespace>`; its parameters have the release's types
(serial_no is a *string*: an integer override is refused, as rclcpp refuses it; the "_" prefix that
realsense-ros documents for digit-only serials is stripped) and the serial must be one of the
attached devices. Topics (before remapping) ~/color/image_rect_raw (rgb8), ~/color/camera_info,
~/aligned_depth_to_color/image_raw (16UC1, millimetres, 0 = no return), its camera_info, reliable
QoS; TF <camera_name>_link -> <camera_name>_color_optical_frame on /tf_static (publish_tf).

Images show the emulated world: `pose_fn(stamp_ns)` gives the optical frame's pose in `world`
(the bench computes it from the profile's mount and the arms' forward kinematics, which is what the
perception node must recover from TF); depth is a ray cast against the table top (clamp_core.world)
and the floor 0.75 m below it, on a 4x-decimated grid (planes are smooth; it keeps the CPU low).
"""

from __future__ import annotations

import numpy as np
from clamp_core import world
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

# camera_link (x forward, y left, z up) -> optical (z forward, x right, y down)
R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
FLOOR = -0.75
D405_MIN, D405_MAX = 0.07, 2.0

PARAMS = {  # name -> default (its type is the parameter's type)
    "serial_no": "",
    "usb_port_id": "",
    "device_type": "",
    "camera_name": "camera",
    "camera_namespace": "camera",
    "enable_color": True,
    "enable_depth": True,
    "enable_infra1": False,
    "enable_infra2": False,
    "align_depth.enable": False,
    "pointcloud.enable": False,
    "publish_tf": True,
    "depth_module.depth_profile": "0,0,0",
    "depth_module.color_profile": "0,0,0",
    "rgb_camera.color_profile": "0,0,0",
}


class DeviceError(RuntimeError):
    pass


def parse_profile(text: str) -> tuple[int, int, int]:
    parts = text.replace("x", ",").split(",")
    w, h, fps = (int(p) for p in parts)
    return w, h, fps


class RealSenseEmulator(Node):
    def __init__(self, node_name: str, namespace: str, devices, pose_fn, fps_cap: float = 5.0, **kwargs) -> None:
        super().__init__(node_name, namespace=namespace, **kwargs)
        for name, default in PARAMS.items():
            self.declare_parameter(name, default)  # a wrong type raises, as in the real node
        get = lambda n: self.get_parameter(n).value  # noqa: E731
        serial = str(get("serial_no"))
        serial = serial[1:] if serial.startswith("_") else serial
        if serial and serial not in devices:
            raise DeviceError(f"The requested device with serial number {serial} is NOT found (attached: {devices})")
        if not get("align_depth.enable"):
            raise DeviceError("the bench emulates aligned depth only (align_depth.enable: true)")
        self.serial = serial
        self.camera_name = str(get("camera_name"))
        w, h, fps = parse_profile(str(get("depth_module.color_profile")))
        self.size, self.fps = (h, w), float(fps)
        self.pose_fn = pose_fn
        self.frame = f"{self.camera_name}_color_optical_frame"
        fx = fy = 0.6 * w  # ~80 deg horizontal field of view
        self.K = np.array([[fx, 0.0, (w - 1) / 2], [0.0, fy, (h - 1) / 2], [0.0, 0.0, 1.0]])
        s = 4
        us, vs = np.meshgrid(np.arange(0, w, s) + (s - 1) / 2, np.arange(0, h, s) + (s - 1) / 2)
        self._rays = np.stack([(us - self.K[0, 2]) / fx, (vs - self.K[1, 2]) / fy, np.ones_like(us)], -1)
        self._s = s
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {
            "color": self.create_publisher(Image, "~/color/image_rect_raw", qos),
            "color_info": self.create_publisher(CameraInfo, "~/color/camera_info", qos),
            "depth": self.create_publisher(Image, "~/aligned_depth_to_color/image_raw", qos),
            "depth_info": self.create_publisher(CameraInfo, "~/aligned_depth_to_color/camera_info", qos),
        }
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.tf_static = self.create_publisher(TFMessage, "/tf_static", latched)
        if get("publish_tf"):
            t = TransformStamped()
            t.header.stamp = self.get_clock().now().to_msg()
            t.header.frame_id, t.child_frame_id = f"{self.camera_name}_link", self.frame
            from clamp_core.geometry import matrix_to_quat

            x, y, z, qw = matrix_to_quat(R_LINK_OPTICAL)
            t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = (
                float(x),
                float(y),
                float(z),
                float(qw),
            )
            self.tf_static.publish(TFMessage(transforms=[t]))
        self.frames = 0
        # the real camera streams at `fps`; on a shared 2-core VM the bench renders at most fps_cap
        self.period_ns = int(1e9 / min(self.fps, fps_cap))
        self.create_timer(self.period_ns * 1e-9, self._on_frame)

    def _on_frame(self) -> None:
        # frames stamped on a common grid, as D405s streaming at one rate expose within a frame of each
        # other (the perception node groups frames by stamp within sync.tolerance_ms)
        from rclpy.time import Time

        now = Time(nanoseconds=(self.get_clock().now().nanoseconds // self.period_ns) * self.period_ns)
        T = self.pose_fn(now.nanoseconds)
        if T is None:
            return
        d = self._rays @ T[:3, :3].T  # world directions per pixel (optical z = 1)
        o = T[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_table = (world.TABLE_HEIGHT - o[2]) / d[..., 2]
            hit = o + t_table[..., None] * d
            on_table = (
                (t_table > 0)
                & (hit[..., 0] >= world.TABLE_X[0])
                & (hit[..., 0] <= world.TABLE_X[1])
                & (hit[..., 1] >= world.TABLE_Y[0])
                & (hit[..., 1] <= world.TABLE_Y[1])
            )
            t_floor = (FLOOR - o[2]) / d[..., 2]
        depth = np.where(on_table, t_table, np.where(t_floor > 0, t_floor, np.inf))
        depth = np.where((depth >= D405_MIN) & (depth <= D405_MAX), depth, 0.0)
        mm = np.kron(np.round(depth * 1000.0).astype(np.uint16), np.ones((self._s, self._s), np.uint16))
        mm = mm[: self.size[0], : self.size[1]]
        rgb = np.zeros((*mm.shape, 3), np.uint8)
        table = np.kron(on_table, np.ones((self._s, self._s), bool))[: self.size[0], : self.size[1]]
        rgb[table] = (150, 140, 120)
        rgb[~table & (mm > 0)] = (60, 60, 70)
        stamp = now.to_msg()
        info = self._info(stamp)
        self.pubs["color"].publish(self._image(rgb, "rgb8", 3, stamp))
        self.pubs["color_info"].publish(info)
        self.pubs["depth"].publish(self._image(mm, "16UC1", 2, stamp))
        self.pubs["depth_info"].publish(info)
        self.frames += 1

    def _image(self, arr, encoding, bytes_per_px, stamp) -> Image:
        msg = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=0)
        msg.step = arr.shape[1] * bytes_per_px
        msg.data = np.ascontiguousarray(arr).tobytes()
        msg.header.stamp, msg.header.frame_id = stamp, self.frame
        return msg

    def _info(self, stamp) -> CameraInfo:
        info = CameraInfo(height=self.size[0], width=self.size[1], distortion_model="plumb_bob")
        info.d = [0.0] * 5
        info.k = self.K.ravel().tolist()
        info.r = np.eye(3).ravel().tolist()
        info.p = np.c_[self.K, np.zeros(3)].ravel().tolist()
        info.header.stamp, info.header.frame_id = stamp, self.frame
        return info
