"""`python -m clamp_bringup.calibrate`: camera extrinsics of the rig from a ChArUco board, over the live graph.

    python -m clamp_bringup.calibrate --profile aloha      # on the robot: `mode:=calibrate` running, board placed
    python -m clamp_bringup.calibrate --sim                # starts clamp_sim + the arm driver itself
    python -m clamp_bringup.calibrate --print-board board.png

Reads the cameras' colour, aligned depth and camera_info, /tf and /tf_static and the followers'
joint states; moves the followers only through the arm driver's command path
(rig.JOINT_COMMAND_TOPIC, once the driver is "ready"), slowly (calibration.speed_scale of the
velocity limits) and within the profile's joint limits. Fixed cameras: PnP against the board at its
marked pose; wrist cameras: eye-in-hand over >= 10 planned poses (clamp_bringup.calibration).
Residuals per view are checked; on success the mounts go into a dated copy of the profile (the
original is kept) and a before/after picture of the fused cloud is saved; on failure nothing is
written and the views to drop or retake are named. With --sim the last line is one JSON object of
the errors against the simulator's true camera poses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from clamp_core import profile as profiles
from clamp_core import rig
from clamp_core.msg_conversions import camera_info_intrinsics, image_to_numpy, stamp_to_ns
from clamp_core.ros import latched_subscriber_qos, positions_by_name, state14
from clamp_perception.transforms import TransformBuffer, TransformError
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

from clamp_bringup import calibration as C

# header.frame_id of our commands; the driver of a mode with one owner must name this source
COMMAND_SOURCE = getattr(rig, "COMMAND_SOURCE_CALIBRATION", "calibration")
FIXED_CAMERAS = ("cam_high", "cam_low")
WRIST = {"cam_left_wrist": "follower_left", "cam_right_wrist": "follower_right"}
SETTLE_TOLERANCE = 0.08  # rad: arms within this of the target and still count as arrived
LIMIT_MARGIN = 0.05  # rad: planned poses stay this far inside the joint limits


class CalibrationNode(Node):
    """The ROS side: latest images/info/TF/joint states in, a slow 50 Hz command stream out."""

    def __init__(self, profile: dict, **kwargs) -> None:
        super().__init__("clamp_calibrate", **kwargs)
        self.profile = profile
        self.cameras = tuple(c for c in rig.CAMERAS if c in profile["cameras"])
        self.followers = profiles.followers(profile)
        self.gripper = profiles.gripper_calibration(profile, "follower")
        self.limits = profiles.safety_limits(profile)
        self.lock = threading.Lock()
        self.tf = TransformBuffer(cache_time_s=30.0, extrapolation_tolerance_s=1.0)
        self.frames: dict[str, dict] = {c: {} for c in self.cameras}
        self.joints: dict[str, dict[str, float]] = {}
        self.velocity: dict[str, float] = {}
        self.driver_state = ""
        self.motion: tuple[float, float, np.ndarray, np.ndarray] | None = None  # t0, duration, q0, q1
        self.hold: np.ndarray | None = None
        for cam in self.cameras:
            ct, dt_ = rig.color_topic(cam), rig.depth_topic(cam)
            for key, typ, topic in (
                ("color", Image, ct),
                ("info", CameraInfo, rig.camera_info_topic(ct)),
                ("depth", Image, dt_),
            ):
                self.create_subscription(typ, topic, lambda m, c=cam, k=key: self._store(c, k, m), 2)
        for arm in self.followers:
            self.create_subscription(JointState, rig.joint_states_topic(arm), lambda m, a=arm: self._on_js(a, m), 10)
        self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), 50)
        self.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), latched_subscriber_qos())
        self.create_subscription(String, rig.DRIVER_STATE_TOPIC, self._on_driver, latched_subscriber_qos())
        self.cmd_pub = self.create_publisher(JointState, rig.JOINT_COMMAND_TOPIC, 10)
        self.create_timer(1.0 / rig.CONTROL_HZ, self._tick)

    # ------------------------------------------------------------------------------- inputs
    def _store(self, cam, key, msg) -> None:
        with self.lock:
            self.frames[cam][key] = msg

    def _on_js(self, arm, msg) -> None:
        with self.lock:
            self.joints[arm] = positions_by_name(msg)
            self.velocity[arm] = float(np.max(np.abs(msg.velocity[:6]))) if len(msg.velocity) >= 6 else 0.0

    def _on_tf(self, msg, static) -> None:
        with self.lock:
            self.tf.add_message(msg, static=static)

    def _on_driver(self, msg) -> None:
        self.driver_state = msg.data

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def measured(self) -> np.ndarray | None:
        with self.lock:
            return state14(self.joints, self.followers, self.gripper)

    def lookup(self, target: str, source: str) -> np.ndarray:
        with self.lock:
            return self.tf.lookup(target, source)

    # ------------------------------------------------------------------------------ command
    def _target(self, t: float) -> np.ndarray | None:
        if self.motion is None:
            return self.hold
        t0, dur, q0, q1 = self.motion
        s = min(max((t - t0) / dur, 0.0), 1.0)
        s = 10 * s**3 - 15 * s**4 + 6 * s**5  # minimum jerk
        return q0 + s * (q1 - q0)

    def _tick(self) -> None:
        q = self._target(self.now())
        if q is None:
            return
        msg = JointState(name=list(rig.ACTION_NAMES), position=[float(v) for v in q])
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = COMMAND_SOURCE
        self.cmd_pub.publish(msg)


class Calibrator:
    """The procedure; `node` is spun elsewhere. Times are the node's clock (sim time in clamp_sim)."""

    def __init__(self, node: CalibrationNode, cfg: dict, log=print, timeout_s: float = 60.0) -> None:
        self.node, self.cfg, self.log, self.timeout = node, cfg, log, timeout_s
        self.board = C.Board(cfg["board"])
        self.speed = float(cfg["speed_scale"]) * node.limits.velocity
        self.moving_s = 0.0
        self.K: dict[str, np.ndarray] = {}

    # -------------------------------------------------------------------------------- waits
    def wait(self, what: str, cond, timeout: float | None = None, fix: str = "") -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not cond():
            if time.monotonic() > deadline:
                raise C.CalibrationError(f"timed out waiting for {what}. {fix}".strip())
            time.sleep(0.05)

    def wait_ready(self) -> None:
        n = self.node
        self.wait(
            f"joint states of {n.followers}",
            lambda: n.measured() is not None,
            fix="Start the calibration graph (`ros2 launch clamp_bringup aloha.launch.py mode:=calibrate`).",
        )
        self.wait(
            f"the arm driver to be ready on {rig.DRIVER_STATE_TOPIC} (now {n.driver_state!r})",
            lambda: n.driver_state == "ready",
            fix="Start the arm driver; it must be ready (at its start pose) before calibration moves the arms.",
        )
        for cam in n.cameras:
            self.wait(
                f"{cam}'s colour, aligned depth and camera_info",
                lambda c=cam: all(k in n.frames[c] for k in ("color", "depth", "info")),
                fix=f"Check that {cam} streams on {rig.color_topic(cam)} (realsense2_camera / clamp_sim).",
            )
        n.hold = np.clip(n.measured(), n.limits.lower, n.limits.upper)  # every command inside the limits

    # ------------------------------------------------------------------------------- motion
    def move_to(self, goal14: np.ndarray) -> None:
        """Minimum-jerk move to `goal14` at calibration speed, then wait until the arms are still."""
        n = self.node
        goal = np.asarray(goal14, float)
        bad = [rig.ACTION_NAMES[i] for i in np.flatnonzero((goal < n.limits.lower) | (goal > n.limits.upper))]
        if bad:
            raise C.CalibrationError(f"refusing a calibration move outside the joint limits for {bad}")
        start = n._target(n.now())
        dur = max(1.0, 1.875 * float(np.max(np.abs(goal - start) / self.speed)))  # peak speed of min-jerk
        t0 = n.now()
        n.motion = (t0, dur, start, goal)
        self.wait("the move to finish", lambda: n.now() >= t0 + dur, timeout=dur * 50 + 30)
        n.hold, n.motion = goal, None

        still_since = [None]

        def still():
            # servo steady-state error under gravity is a few 0.01 rad: "reached" is loose, "still" is
            # strict (the hand-eye uses the measured TF, not the command)
            q = n.measured()
            with n.lock:
                v = max(n.velocity.values(), default=0.0)
            arm_err = np.abs(q - goal)[[0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]].max() if q is not None else np.inf
            if arm_err > SETTLE_TOLERANCE or v > 0.01:
                still_since[0] = None
                return False
            still_since[0] = still_since[0] or n.now()
            return n.now() - still_since[0] >= 0.3

        try:
            self.wait("the arms to settle at the target", still, timeout=60.0)
        except C.CalibrationError:
            q = n.measured()
            err = np.abs(q - goal) if q is not None else np.full(14, np.nan)
            j = int(np.nanargmax(err))
            raise C.CalibrationError(
                f"the followers do not reach the commanded pose ({rig.ACTION_NAMES[j]} is {err[j]:.3f} off, joint "
                f"speed {max(n.velocity.values(), default=0.0):.3f} rad/s): check the driver's diagnostics "
                f"(rejections: is it taking commands from {COMMAND_SOURCE!r}?) and the motors' torque"
            ) from None
        self.moving_s += n.now() - t0

    def fresh_frames(self, cams, after_s: float) -> dict[str, dict]:
        """Colour/depth/info of `cams` stamped after `after_s` (the arms were still by then)."""
        n = self.node
        after = int(after_s * 1e9)

        def ok():
            with n.lock:
                return all(
                    stamp_to_ns(n.frames[c]["color"].header.stamp) >= after
                    and stamp_to_ns(n.frames[c]["depth"].header.stamp) >= after
                    for c in cams
                )

        self.wait(f"new images from {list(cams)}", ok, timeout=60.0)
        with n.lock:
            return {c: dict(n.frames[c]) for c in cams}

    def own_side(self, arm: str):
        """The midplane between the followers' bases: both arms keep 6 cm on their own side of it."""
        others = [a for a in self.node.followers if a != arm]
        if not others:
            return None
        mine = self.node.lookup(rig.WORLD_FRAME, f"{arm}/base_link")[:3, 3]
        other = self.node.lookup(rig.WORLD_FRAME, f"{others[0]}/base_link")[:3, 3]
        normal = (mine - other) * np.array([1.0, 1.0, 0.0])
        return (mine + other) / 2.0, normal / np.linalg.norm(normal), 0.06

    # ------------------------------------------------------------------------------- capture
    def observe(self, frame: dict):
        rgb = image_to_numpy(frame["color"])
        intr = camera_info_intrinsics(frame["info"])
        depth = image_to_numpy(frame["depth"]).astype(np.float32)
        if frame["depth"].encoding == "16UC1":
            depth *= float(self.node.profile["cameras"][frame["cam"]].get("depth_units_mm", 1.0)) / 1000.0
        det = C.detect(self.board, rgb[..., :3] if rgb.ndim == 3 else rgb)
        if det is not None:
            det = C.undistort_detection(det, intr.K, intr.D, intr.distortion_model, frame["cam"])
        return det, depth, intr

    def run(self, nominal: dict[str, np.ndarray], frames_per_fixed: int = 3) -> dict:
        """Calibrate every camera. `nominal`: camera -> current mount (parent frame of the result:
        world for fixed cameras, ee_gripper_link for wrist cameras), used to plan the wrist views."""
        n = self.node
        self.wait_ready()
        drv = n.profile["driver"]
        # where the arms are, inside the limits (a gripper reading 1.01 open is not a reason to stop)
        start14 = np.clip(n.measured(), n.limits.lower, n.limits.upper)
        t_begin = n.now()
        results, captures = {}, {}
        fixed = [c for c in FIXED_CAMERAS if c in n.cameras]
        wrists = [c for c in WRIST if c in n.cameras and WRIST[c] in n.followers]
        # 1. fixed cameras, with the arms folded out of the board's way (the sleep pose)
        if fixed:
            clear = np.array(drv["sleep_pose"], float)
            clear[[6, 13]] = start14[[6, 13]]  # grippers stay as they are
            self.log("moving the followers out of the way of the fixed cameras")
            self.move_to(clear)
            obs = {c: [] for c in fixed}
            for _ in range(frames_per_fixed):
                got = self.fresh_frames(fixed, n.now())
                for c in fixed:
                    obs[c].append(self.observe({**got[c], "cam": c}))
            captures["fixed_all"] = self.fresh_frames(n.cameras, n.now())
            captures["fixed_tf"] = {
                arm: self.node.lookup(rig.WORLD_FRAME, rig.gripper_frame(arm)) for arm in n.followers
            }
            for c in fixed:
                seen = [(d, depth, None) for d, depth, _ in obs[c] if d is not None]  # undistorted in observe
                if not seen:
                    raise C.CalibrationError(
                        f"{c} does not see the board: put it at its marked place (calibration.board in the profile), "
                        f"make sure nothing covers it and that {c} points at it; `--print-board` prints it"
                    )
                K = obs[c][0][2].K
                results[c] = C.calibrate_fixed(c, self.board, seen, K, use_depth=bool(self.cfg["fixed_use_depth"]))
                self.log(f"{c}: {len(seen)} frames, reprojection {max(v.rms_px for v in results[c].views):.3f} px")
        # 2. wrist cameras: plan for both followers, visit the poses pairwise (both arms move together)
        plans = {}
        lower = n.limits.lower + LIMIT_MARGIN
        upper = n.limits.upper - LIMIT_MARGIN
        for c in wrists:
            arm = WRIST[c]
            i = rig.FOLLOWERS.index(arm)
            sl = slice(7 * i, 7 * i + 6)
            T_world_base = n.lookup(rig.WORLD_FRAME, f"{arm}/base_link")
            with n.lock:
                info = n.frames[c]["info"]
            intr = camera_info_intrinsics(info)
            poses, skipped = C.plan_wrist_poses(
                self.board,
                T_world_base,
                nominal[c],
                intr.K,
                (intr.height, intr.width),
                lower[sl],
                upper[sl],
                np.asarray(drv["start_pose"], float)[sl],
                int(self.cfg["wrist_poses"]),
                own_side=self.own_side(arm),
            )
            self.log(
                f"{c}: {len(poses)} poses planned ({skipped} candidate views unreachable within the limits, skipped)"
            )
            if len(poses) < 10:
                raise C.CalibrationError(
                    f"{c}: only {len(poses)} reachable poses see the whole board (10 needed); move the board "
                    "closer to the arms' workspace or check calibration.board.xyz/rpy"
                )
            plans[c] = poses
        views = {c: ([], [], []) for c in wrists}
        if plans:
            base = np.array(drv["start_pose"], float)
            base[[6, 13]] = start14[[6, 13]]
            for k in range(max(len(p) for p in plans.values())):
                goal = base.copy()
                for c, poses in plans.items():
                    i = rig.FOLLOWERS.index(WRIST[c])
                    goal[7 * i : 7 * i + 6] = poses[min(k, len(poses) - 1)].q
                self.move_to(goal)
                got = self.fresh_frames(list(plans), n.now())
                for c in plans:
                    if k >= len(plans[c]):
                        continue
                    det, depth, intr = self.observe({**got[c], "cam": c})
                    if det is None:
                        self.log(f"{c}: pose {k}: board not detected, view skipped")
                        continue
                    stamp = stamp_to_ns(got[c]["color"].header.stamp)
                    with n.lock:
                        Tg = n.tf.lookup(rig.WORLD_FRAME, rig.gripper_frame(WRIST[c]), stamp)
                    views[c][0].append(Tg)
                    views[c][1].append(det)
                    views[c][2].append(depth)
                    self.K[c] = intr.K
                self.log(f"wrist pose {k + 1}/{max(len(p) for p in plans.values())}")
            self.log("returning the followers to the start pose")
            self.move_to(start14)
            for c in plans:
                Tg, dets, depths = views[c]
                K = self.K.get(c, np.eye(3))
                results[c] = C.calibrate_wrist(c, rig.gripper_frame(WRIST[c]), self.board, Tg, dets, depths, K)
                r = results[c]
                self.log(
                    f"{c}: {len(dets)} views, hand-eye best {r.extra['hand_eye_best']}, board through the arm "
                    f"{r.extra['board_from_arm_vs_marked']['mm']:.2f} mm from its marked pose"
                )
        elif fixed:
            self.move_to(start14)
        robot_time = n.now() - t_begin
        return {"results": results, "robot_time_s": robot_time, "captures": captures}


# ------------------------------------------------------------------------------ fused cloud
def fused_points(frames: dict, extrinsics: dict[str, np.ndarray], stride: int = 4) -> dict[str, np.ndarray]:
    """World points of each camera's depth image (every `stride`-th pixel) under `extrinsics`."""
    out = {}
    for cam, f in frames.items():
        depth = image_to_numpy(f["depth"]).astype(np.float32) / 1000.0
        K = camera_info_intrinsics(f["info"]).K
        v, u = np.mgrid[0 : depth.shape[0] : stride, 0 : depth.shape[1] : stride]
        z = depth[v, u]
        keep = z > 0
        u, v, z = u[keep], v[keep], z[keep]
        P = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z, np.ones_like(z)], 1)
        out[cam] = (P @ extrinsics[cam].T)[:, :3]
    return out


def save_cloud_picture(path: Path, before: dict, after: dict, truth: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    colours = dict(zip(rig.CAMERAS, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=False))
    for col, (title, clouds) in enumerate((("before (profile's mounts)", before), ("after calibration", after))):
        for cam, P in clouds.items():
            sel = P[(P[:, 2] > -0.05) & (P[:, 2] < 0.6) & (np.abs(P[:, 0]) < 0.8)][::3]
            axes[0, col].scatter(sel[:, 0], sel[:, 1], s=0.2, c=colours[cam], label=cam)
            axes[1, col].scatter(sel[:, 1], sel[:, 2], s=0.2, c=colours[cam], label=cam)
        axes[0, col].set_title(f"{title}: top view (x, y)")
        axes[1, col].set_title(f"{title}: side view (y, z)")
        for ax in axes[:, col]:
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
        axes[0, col].legend(markerscale=20, loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main
def _spin(node):
    from clamp_core.ros import make_executor

    # the node's own executor (single-threaded: it has one callback group). A MultiThreadedExecutor's
    # spin_once in this loop busy-spun: 54 s of CPU per minute in this thread, and on an idle 2-core
    # machine the GIL it held between cores slowed the in-process clamp_sim to 0.12x real time (the
    # --sim procedure took 305 s of wall time instead of 36 s, which it took pinned to one core)
    ex = make_executor(node, node.context)
    ex.add_node(node)
    stop = threading.Event()

    def loop():
        while node.context.ok() and not stop.is_set():
            ex.spin_once(timeout_sec=0.05)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return ex, stop, th


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_bringup.calibrate", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=None, help="profile name or path (default: aloha; sim with --sim)")
    ap.add_argument("--sim", action="store_true", help="start clamp_sim with the board and the arm driver here")
    ap.add_argument("--out", default=None, help="report/picture directory (default ~/.clamp_calibration/<time>)")
    ap.add_argument("--profile-out", default=None, help="where the dated profile copy goes (default: next to it)")
    ap.add_argument("--no-write", action="store_true", help="measure and report only; write no profile")
    ap.add_argument("--seed", type=int, default=0, help="--sim: seed of the perturbed start values")
    ap.add_argument("--perturb-mm", type=float, default=20.0, help="--sim: start values off by this much")
    ap.add_argument("--perturb-deg", type=float, default=3.0, help="--sim: ... and this rotation")
    ap.add_argument("--print-board", metavar="PNG", help="write the profile's board as an image to print, and exit")
    a = ap.parse_args(argv)
    prof = profiles.load_profile(a.profile or ("sim" if a.sim else "aloha"))
    cfg = prof["calibration"]
    if a.print_board:
        import cv2

        board = C.Board(cfg["board"])
        cv2.imwrite(a.print_board, board.image())
        sq = cfg["board"]["square_m"] * 1000
        print(f"wrote {a.print_board}: print so that one square is {sq:.1f} mm, glue flat on a rigid plate")
        return 0
    out = Path(a.out or Path("~/.clamp_calibration").expanduser() / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)

    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    running = None
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    if a.sim:
        from clamp_bringup.graph import build_graph
        from clamp_bringup.runner import start_graph

        graph = build_graph(prof, "calibrate")
        print(f"starting {graph.names} (clamp_sim with the ChArUco board)", flush=True)
        running = start_graph(
            graph,
            context=context,
            overrides={
                # clamp_sim's arms start powered in position mode: no xs_sdk motor setup to do
                "arm_driver": {"motor_setup": False},
            },
        )
    node = CalibrationNode(
        prof, context=context, parameter_overrides=[Parameter("use_sim_time", value=bool(prof["use_sim_time"]))]
    )
    ex, stop, th = _spin(node)
    code = 1
    try:
        cal = Calibrator(node, cfg, log=lambda s: print(s, flush=True))
        cal.wait_ready()
        # current mounts (the start values): from TF, or in --sim the truth perturbed by 2 cm / 3 deg
        nominal, truth = {}, {}
        if a.sim:
            sim = running.nodes["sim"].sim
            rng = np.random.default_rng(a.seed)
            for cam in node.cameras:
                _, truth[cam] = sim.camera_mount(cam)
                nominal[cam] = C.perturb(truth[cam], a.perturb_mm, a.perturb_deg, rng)
        else:
            for cam in node.cameras:
                parent = rig.WORLD_FRAME if cam in FIXED_CAMERAS else rig.gripper_frame(WRIST[cam])
                try:
                    nominal[cam] = node.lookup(parent, rig.color_optical_frame(cam))
                except TransformError as exc:
                    raise C.CalibrationError(
                        f"no TF from {parent} to {rig.color_optical_frame(cam)} ({exc}); start the graph with the "
                        "profile's mounts (static TF) so the wrist views can be planned"
                    ) from exc
        t0 = time.monotonic()
        run = cal.run(nominal)
        results = run["results"]
        print(f"robot time {run['robot_time_s']:.1f} s (wall {time.monotonic() - t0:.0f} s)", flush=True)
        report = {"profile": prof.get("path"), "results": C.results_json(results), "robot_time_s": run["robot_time_s"]}
        problems = C.check_residuals(results, cfg)
        # fused cloud before/after, from the frames taken with the arms folded
        frames = run["captures"].get("fixed_all") or {}
        cloud = {}
        if frames and len(results) == len(node.cameras):
            Tg = run["captures"]["fixed_tf"]

            def world(ext, cam):
                return ext[cam] if cam in FIXED_CAMERAS else Tg[WRIST[cam]] @ ext[cam]

            after_ext = {c: world({k: r.T_parent_cam for k, r in results.items()}, c) for c in frames}
            before_ext = {c: world(nominal, c) for c in frames}
            before, after = fused_points(frames, before_ext), fused_points(frames, after_ext)
            save_cloud_picture(out / "fused_cloud_before_after.png", before, after)
            print(f"saved {out / 'fused_cloud_before_after.png'}", flush=True)
            if truth:  # displacement of every fused point from where the true poses put it
                true_ext = {c: world(truth, c) for c in frames}
                ref = fused_points(frames, true_ext)
                for name, pts in (("before", before), ("after", after)):
                    d = np.concatenate([np.linalg.norm(pts[c] - ref[c], axis=1) for c in frames])
                    cloud[name] = round(float(np.percentile(d, 95)) * 1000.0, 3)
                report["cloud_p95_mm"] = cloud
        (out / "calibration.json").write_text(json.dumps(report, indent=2))
        if problems:
            print("CALIBRATION REFUSED, nothing written:\n  " + "\n  ".join(problems), file=sys.stderr, flush=True)
        else:
            code = 0
            if not a.no_write and prof.get("path"):
                mounts = {}
                for cam, r in results.items():
                    mounts[cam] = mount_for_profile(node, prof, cam, r)
                dest = a.profile_out or (out if a.sim else None)
                path = C.write_profile(prof["path"], mounts, dest)
                print(f"wrote the calibrated mounts to {path} ({prof['path']} kept as it was)", flush=True)
        print(f"report: {out / 'calibration.json'}", flush=True)
        if a.sim:
            errors = {}
            for cam, r in results.items():
                mm, deg = C.pose_error(truth[cam], r.T_parent_cam)
                errors[cam] = {"mm": round(mm, 3), "deg": round(deg, 4)}
            for cam, r in results.items():
                if r.method_poses:  # each closed-form cv2.calibrateHandEye method against the truth
                    cmp = {k: C.pose_error(truth[cam], X) for k, X in r.method_poses.items()}
                    print(
                        f"{cam} hand-eye methods vs truth (before refinement): "
                        + ", ".join(f"{k} {mm:.2f} mm / {deg:.3f} deg" for k, (mm, deg) in cmp.items()),
                        flush=True,
                    )
            errors["cloud_p95_mm"] = cloud
            errors["robot_time_s"] = round(run["robot_time_s"], 1)
            print(json.dumps(errors), flush=True)
    except C.CalibrationError as exc:
        print(f"CALIBRATION FAILED, nothing written: {exc}", file=sys.stderr, flush=True)
    finally:
        node.hold = node.motion = None
        stop.set()
        th.join(timeout=2.0)
        ex.remove_node(node)
        node.destroy_node()
        if running is not None:
            running.stop()
        rclpy.shutdown(context=context)
    return code


def mount_for_profile(node: CalibrationNode, prof: dict, cam: str, r: C.CameraResult) -> dict:
    """The profile's mount entry: the `<camera_name>_link` frame in the profile's parent frame.

    realsense2_camera publishes link -> colour optical itself (factory extrinsics), so the optical
    pose is converted with that transform from TF when present (else the nominal REP 103 rotation).
    """
    spec = prof["cameras"][cam]
    parent = spec.get("mount", {}).get("parent", r.parent)
    T_parent_opt = r.T_parent_cam
    if parent != r.parent:
        T_parent_opt = node.lookup(parent, r.parent) @ T_parent_opt
    link = f"{spec['camera_name']}_link"
    try:
        T_link_opt = node.lookup(link, rig.color_optical_frame(cam))
    except TransformError:
        T_link_opt = C.realsense_link_from_optical()
    return C.mount_entry(parent, T_parent_opt @ np.linalg.inv(T_link_opt))


if __name__ == "__main__":
    raise SystemExit(main())
