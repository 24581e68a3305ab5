"""Camera extrinsics from a ChArUco board: detection, PnP, hand-eye, depth check, residuals. No ROS.

Procedure (clamp_bringup.calibrate runs it on the live topics):

- The board lies at a marked place on the table (a printed A3 board on a 35-degree wedge whose
  footprint is drawn on the table), its pose in `world` in the profile's `calibration.board`. A
  jig at a marked place is what fixed-camera extrinsics rest on in the best systems (e.g. a
  fiducial at a known world pose); its placement is then verified by the robot itself: every wrist
  view gives the board's pose in world through the arm's kinematics and the hand-eye result, and
  the tool reports (and refuses beyond a threshold) how far that is from the marked pose.
- Fixed cameras: T_world_cam = T_world_board inv(T_cam_board), T_cam_board by PnP on the detected
  ChArUco corners with the camera_info intrinsics, over several frames.
- Wrist cameras: eye-in-hand with the board fixed on the table; each follower visits >= 10
  diverse poses (planned here with the ViperX 300 6DOF kinematics, within the joint limits);
  every closed-form solver of cv2.calibrateHandEye is run and compared by its residuals, the best
  then refined by least squares on the reprojection error of all corners of all views (mount and
  board pose together).
- Depth check: a plane fitted to the depth pixels on the board agrees with the board's pose from
  colour (catches a wrong depth scale and depth-to-colour misalignment).
- Residuals per view (reprojection RMS in px; for wrist views the board pose that view implies vs
  the consensus, mm and deg); views over the thresholds are named so they can be dropped/retaken.
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from clamp_core import world
from clamp_core.geometry import make_transform
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

HAND_EYE_METHODS = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
MIN_CORNERS = 8  # a view with fewer detected ChArUco corners is not used


class CalibrationError(RuntimeError):
    """The calibration cannot be trusted; the message names the cameras/views and what to do."""


# ------------------------------------------------------------------------------------ geometry
def rpy_matrix(rpy) -> np.ndarray:
    """ROS fixed-axis roll, pitch, yaw (static_transform_publisher) -> 3x3 rotation."""
    return Rotation.from_euler("xyz", np.asarray(rpy, float)).as_matrix()


def matrix_rpy(R: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(np.asarray(R)[:3, :3]).as_euler("xyz")


def pose_from_xyz_rpy(xyz, rpy) -> np.ndarray:
    return make_transform(rpy_matrix(rpy), np.asarray(xyz, float))


def pose_error(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(translation mm, rotation deg) between two 4x4 poses."""
    d = np.linalg.inv(T_a) @ T_b
    mm = 1000.0 * float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]))
    deg = float(np.degrees(Rotation.from_matrix(d[:3, :3]).magnitude()))
    return mm, deg


def perturb(T: np.ndarray, mm: float, deg: float, rng: np.random.Generator) -> np.ndarray:
    """T moved by exactly `mm` and rotated by exactly `deg` about random axes."""
    axis_t, axis_r = rng.normal(size=3), rng.normal(size=3)
    dT = make_transform(
        Rotation.from_rotvec(np.radians(deg) * axis_r / np.linalg.norm(axis_r)).as_matrix(),
        mm / 1000.0 * axis_t / np.linalg.norm(axis_t),
    )
    out = T.copy()
    out[:3, :3] = dT[:3, :3] @ T[:3, :3]
    out[:3, 3] = T[:3, 3] + dT[:3, 3]
    return out


def average_poses(poses: list[np.ndarray]) -> np.ndarray:
    """Mean translation and chordal-L2 mean rotation."""
    R = Rotation.from_matrix(np.stack([T[:3, :3] for T in poses])).mean().as_matrix()
    return make_transform(R, np.mean([T[:3, 3] for T in poses], axis=0))


def _to_vec(T: np.ndarray) -> np.ndarray:
    return np.concatenate([Rotation.from_matrix(T[:3, :3]).as_rotvec(), T[:3, 3]])


def _from_vec(v: np.ndarray) -> np.ndarray:
    return make_transform(Rotation.from_rotvec(v[:3]).as_matrix(), v[3:])


# ---------------------------------------------------------------------------------------- board
class Board:
    """The ChArUco board of a profile's `calibration.board` section and its detector."""

    def __init__(self, spec: dict) -> None:
        self.spec = dict(spec)
        name = str(spec["dictionary"])
        if not hasattr(cv2.aruco, name):
            raise CalibrationError(f"calibration.board.dictionary {name!r} is not an OpenCV aruco dictionary")
        self.dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
        sx, sy = (int(v) for v in spec["squares"])
        self.board = cv2.aruco.CharucoBoard((sx, sy), float(spec["square_m"]), float(spec["marker_m"]), self.dictionary)
        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        self.detector = cv2.aruco.CharucoDetector(self.board, cv2.aruco.CharucoParameters(), params)
        self.T_world_board = pose_from_xyz_rpy(spec["xyz"], spec["rpy"])
        self.corners = np.asarray(self.board.getChessboardCorners(), float)  # (N, 3) in the board frame
        self.extent = (sx * float(spec["square_m"]), sy * float(spec["square_m"]))

    @property
    def centre(self) -> np.ndarray:
        """Board centre in the board frame."""
        return np.array([self.extent[0] / 2, self.extent[1] / 2, 0.0])

    def outline(self) -> np.ndarray:
        w, h = self.extent
        return np.array([[0, 0, 0], [w, 0, 0], [w, h, 0], [0, h, 0]], float)

    def image(self, px_per_square: int = 200, margin_px: int = 40) -> np.ndarray:
        sx, sy = (int(v) for v in self.spec["squares"])
        return self.board.generateImage(
            (sx * px_per_square + 2 * margin_px, sy * px_per_square + 2 * margin_px), marginSize=margin_px
        )


@dataclass
class Detection:
    ids: np.ndarray  # (N,) ChArUco corner ids
    image_points: np.ndarray  # (N, 2) px
    object_points: np.ndarray  # (N, 3) board frame, metres


def detect(board: Board, rgb: np.ndarray) -> Detection | None:
    """ChArUco corners in an RGB (or grey) image; None when fewer than MIN_CORNERS are found."""
    gray = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    corners, ids, _, _ = board.detector.detectBoard(gray)
    if ids is None or len(ids) < MIN_CORNERS:
        return None
    ids = ids.ravel()
    return Detection(ids, corners.reshape(-1, 2).astype(float), board.corners[ids])


OPENCV_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "brown_conrady")


def undistort_detection(det: Detection, K: np.ndarray, D, model: str, camera: str = "") -> Detection:
    """Corners moved to the ideal pinhole image of K (so PnP, hand-eye and the depth check are pinhole).

    camera_info's distortion is applied with OpenCV's model; a model OpenCV does not implement with
    non-zero coefficients is refused rather than ignored.
    """
    D = np.asarray(D, float).ravel()
    if not D.size or not np.any(D):
        return det
    if model not in OPENCV_DISTORTION_MODELS:
        raise CalibrationError(
            f"{camera}: camera_info distortion model {model!r} with coefficients {D.tolist()} is not OpenCV's; "
            "publish rectified images (image_rect) or a plumb_bob model"
        )
    pts = cv2.undistortPoints(det.image_points.reshape(-1, 1, 2), K, D, P=K).reshape(-1, 2)
    return Detection(det.ids, pts.astype(float), det.object_points)


def solve_pnp(det: Detection, K: np.ndarray, dist: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """T_cam_board and the reprojection RMS (px): IPPE for a planar target, then Levenberg-Marquardt."""
    dist = np.zeros(5) if dist is None else np.asarray(dist, float)
    obj, img = det.object_points.astype(np.float64), det.image_points.astype(np.float64)
    ok, rvecs, tvecs, _ = cv2.solvePnPGeneric(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok or not len(rvecs):
        raise CalibrationError("PnP failed on the detected board corners")
    best = None
    for rv, tv in zip(rvecs, tvecs, strict=False):
        rv, tv = cv2.solvePnPRefineLM(obj, img, K, dist, rv.copy(), tv.copy())
        err = reprojection_rms(obj, img, K, dist, rv, tv)
        if best is None or err < best[0]:
            best = (err, rv, tv)
    err, rv, tv = best
    return make_transform(cv2.Rodrigues(rv)[0], tv.ravel()), float(err)


def clean_detection(det: Detection, K: np.ndarray, dist: np.ndarray | None = None, max_px: float = 1.0) -> Detection:
    """Drop corners PnP cannot explain (> max(max_px, 3 x median) px off): a corner next to an occluder
    (the gripper's own fingers in a wrist view) is interpolated from a half-seen marker and lands off."""
    T, _ = solve_pnp(det, K, dist)
    err = np.linalg.norm(project(T, det.object_points, K) - det.image_points, axis=1)
    keep = err <= max(max_px, 3.0 * float(np.median(err)))
    if keep.all() or keep.sum() < MIN_CORNERS:
        return det
    return Detection(det.ids[keep], det.image_points[keep], det.object_points[keep])


def project(T_cam_board: np.ndarray, obj: np.ndarray, K: np.ndarray) -> np.ndarray:
    P = obj @ T_cam_board[:3, :3].T + T_cam_board[:3, 3]
    uv = P @ K.T
    return uv[:, :2] / uv[:, 2:3]


def reprojection_rms(obj, img, K, dist, rv, tv) -> float:
    proj, _ = cv2.projectPoints(obj, rv, tv, K, dist)
    return float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))


# ---------------------------------------------------------------------------------- depth check
def board_depth_points(det: Detection, depth_m: np.ndarray, K: np.ndarray, radius_px: int = 7) -> np.ndarray:
    """Camera-frame points of the depth pixels around the detected corners (N, 3).

    Only pixels near corners that were seen are used: they lie on the board even when something (a
    wrist camera's own fingers) covers part of it.
    """
    mask = np.zeros(depth_m.shape, np.uint8)
    for u, v in np.round(det.image_points).astype(int):
        cv2.circle(mask, (int(u), int(v)), radius_px, 1, -1)
    v, u = np.nonzero(mask.astype(bool) & (depth_m > 0))
    z = depth_m[v, u].astype(float)
    return np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)


def depth_plane_check(
    board: Board, det: Detection, T_cam_board: np.ndarray, depth_m: np.ndarray, K: np.ndarray
) -> tuple[float, float, int]:
    """Board plane from depth vs from colour: (median offset mm along the normal, tilt deg, pixels used).

    A plane is fitted (SVD, one pass of outlier rejection) to the depth pixels around the detected
    corners; the offset is the median signed distance of those points to the colour pose's plane.
    """
    P = board_depth_points(det, depth_m, K)
    if len(P) < 50:
        raise CalibrationError("too few depth pixels on the board for the depth check (is depth aligned to colour?)")
    n_col, p_col = T_cam_board[:3, 2], T_cam_board[:3, 3]
    offset = float(np.median((P - p_col) @ n_col)) * 1000.0
    for _ in range(2):
        c = P.mean(axis=0)
        n_depth = np.linalg.svd(P - c, full_matrices=False)[2][2]
        d = np.abs((P - c) @ n_depth)
        keep = d <= max(3.0 * float(np.median(d)), 0.002)
        if keep.all():
            break
        P = P[keep]
    tilt = float(np.degrees(np.arccos(min(1.0, abs(float(n_depth @ n_col))))))
    return offset, tilt, int(len(P))


def refine_with_depth(
    det: Detection,
    T_cam_board: np.ndarray,
    depth_m: np.ndarray,
    K: np.ndarray,
    px_sigma: float = 0.5,
    depth_sigma: float = 0.002,
    max_points: int = 400,
) -> np.ndarray:
    """The board pose from colour and depth together: corner reprojection (px) plus point-to-plane
    distances of depth pixels on the board (m), robust loss. At a fixed camera's distance (~1 m) the
    board's tilt is the weak part of PnP; thousands of depth pixels pin the plane down."""
    P = board_depth_points(det, depth_m, K)
    if len(P) > max_points:
        P = P[np.linspace(0, len(P) - 1, max_points).astype(int)]

    def residuals(v):
        T = _from_vec(v)
        r_px = (project(T, det.object_points, K) - det.image_points).ravel() / px_sigma
        r_d = ((P - T[:3, 3]) @ T[:3, 2]) / depth_sigma
        return np.concatenate([r_px, r_d])

    sol = least_squares(residuals, _to_vec(T_cam_board), loss="soft_l1", x_scale="jac")
    return _from_vec(sol.x)


# ------------------------------------------------------------------------------- fixed cameras
@dataclass
class ViewResult:
    name: str
    rms_px: float
    n_corners: int
    consistency_mm: float = 0.0
    consistency_deg: float = 0.0
    depth_mm: float | None = None
    depth_deg: float | None = None

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class CameraResult:
    camera: str
    parent: str
    T_parent_cam: np.ndarray
    views: list[ViewResult]
    extra: dict = field(default_factory=dict)
    method_poses: dict = field(default_factory=dict)  # hand-eye method -> its closed-form mount (not refined)

    def as_dict(self) -> dict:
        return {
            "parent": self.parent,
            "xyz": self.T_parent_cam[:3, 3].round(6).tolist(),
            "rpy": matrix_rpy(self.T_parent_cam).round(6).tolist(),
            "views": [v.as_dict() for v in self.views],
            **self.extra,
        }


def calibrate_fixed(
    camera: str,
    board: Board,
    frames: list[tuple[Detection, np.ndarray, np.ndarray | None]],
    K: np.ndarray,
    use_depth: bool = True,
) -> CameraResult:
    """A world-fixed camera from frames (detection, depth_m or None, distortion or None).

    T_world_cam = T_world_board inv(T_cam_board) per frame, averaged; with `use_depth` the board pose
    of each frame is refined with its depth after the depth check (refine_with_depth).
    """
    poses, views = [], []
    for i, (det, depth, dist) in enumerate(frames):
        det = clean_detection(det, K, dist)
        T_cam_board, rms = solve_pnp(det, K, dist)
        view = ViewResult(f"{camera}#{i}", rms, len(det.ids))
        if depth is not None:  # the check uses the colour-only pose: depth and colour are compared
            view.depth_mm, view.depth_deg, _ = depth_plane_check(board, det, T_cam_board, depth, K)
            if use_depth:
                T_cam_board = refine_with_depth(det, T_cam_board, depth, K)
                view.rms_px = float(
                    np.sqrt(np.mean(np.sum((project(T_cam_board, det.object_points, K) - det.image_points) ** 2, 1)))
                )
        poses.append(board.T_world_board @ np.linalg.inv(T_cam_board))
        views.append(view)
    T = average_poses(poses)
    for view, P in zip(views, poses, strict=False):
        view.consistency_mm, view.consistency_deg = pose_error(T, P)
    return CameraResult(camera, "world", T, views)


# ------------------------------------------------------------------------------ hand-eye (wrist)
def hand_eye(T_world_parent: list[np.ndarray], T_cam_board: list[np.ndarray], method: str) -> np.ndarray:
    """cv2.calibrateHandEye (eye-in-hand): the camera's pose in its parent (gripper) frame."""
    R_g = [T[:3, :3] for T in T_world_parent]
    t_g = [T[:3, 3].reshape(3, 1) for T in T_world_parent]
    R_t = [T[:3, :3] for T in T_cam_board]
    t_t = [T[:3, 3].reshape(3, 1) for T in T_cam_board]
    R, t = cv2.calibrateHandEye(R_g, t_g, R_t, t_t, method=HAND_EYE_METHODS[method])
    return make_transform(np.asarray(R), np.asarray(t).ravel())


def implied_board_poses(X: np.ndarray, T_world_parent, T_cam_board) -> list[np.ndarray]:
    """The board's world pose each view implies through the arm and the mount X."""
    return [Tg @ X @ Tc for Tg, Tc in zip(T_world_parent, T_cam_board, strict=False)]


def consistency(X: np.ndarray, T_world_parent, T_cam_board) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """(consensus board pose, per-view (mm, deg) from it) for mount X."""
    boards = implied_board_poses(X, T_world_parent, T_cam_board)
    mean = average_poses(boards)
    return mean, [pose_error(mean, B) for B in boards]


def refine_hand_eye(
    X0: np.ndarray,
    B0: np.ndarray,
    T_world_parent: list[np.ndarray],
    detections: list[Detection],
    K: np.ndarray,
    board_prior: np.ndarray | None = None,
    prior_sigma: tuple[float, float] = (0.01, np.radians(1.0)),
    px_sigma: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Least squares on the reprojection of every corner of every view over the mount X and the
    board pose B (world). With `board_prior` (the marked pose) B is softly tied to it (sigma m, rad)."""

    def residuals(v):
        X, B = _from_vec(v[:6]), _from_vec(v[6:])
        out = []
        for Tg, det in zip(T_world_parent, detections, strict=False):
            T_cam_board = np.linalg.inv(Tg @ X) @ B
            out.append(((project(T_cam_board, det.object_points, K) - det.image_points) / px_sigma).ravel())
        if board_prior is not None:
            d = np.linalg.inv(board_prior) @ B
            out.append(Rotation.from_matrix(d[:3, :3]).as_rotvec() / prior_sigma[1])
            out.append((B[:3, 3] - board_prior[:3, 3]) / prior_sigma[0])
        return np.concatenate(out)

    sol = least_squares(residuals, np.concatenate([_to_vec(X0), _to_vec(B0)]), method="lm", x_scale="jac")
    return _from_vec(sol.x[:6]), _from_vec(sol.x[6:])


def calibrate_wrist(
    camera: str,
    parent: str,
    board: Board,
    T_world_parent: list[np.ndarray],
    detections: list[Detection],
    depths: list[np.ndarray | None],
    K: np.ndarray,
    dist: np.ndarray | None = None,
    min_views: int = 10,
) -> CameraResult:
    """Eye-in-hand: every cv2.calibrateHandEye method, the best by view consistency, then refined."""
    n = len(detections)
    if n < min_views:
        raise CalibrationError(
            f"{camera}: the board was seen in {n} of the wrist poses, {min_views} are needed; put the board "
            f"at its marked place, check the light and that {camera} streams, or raise calibration.wrist_poses"
        )
    T_cb, views = [], []
    detections = [clean_detection(det, K, dist) for det in detections]
    for i, det in enumerate(detections):
        T, rms = solve_pnp(det, K, dist)
        T_cb.append(T)
        views.append(ViewResult(f"{camera}#{i}", rms, len(det.ids)))
    methods = {}
    for name in HAND_EYE_METHODS:
        try:
            X = hand_eye(T_world_parent, T_cb, name)
        except cv2.error as exc:
            methods[name] = {"error": str(exc).strip().splitlines()[-1]}
            continue
        _, errs = consistency(X, T_world_parent, T_cb)
        e = np.array(errs)
        methods[name] = {
            "X": X,
            "median_mm": float(np.median(e[:, 0])),
            "median_deg": float(np.median(e[:, 1])),
        }
    usable = {k: v for k, v in methods.items() if "X" in v and np.all(np.isfinite(v["X"]))}
    if not usable:
        raise CalibrationError(f"{camera}: every hand-eye method failed ({methods}); the poses lack rotation diversity")
    best = min(usable, key=lambda k: usable[k]["median_mm"] + 10.0 * usable[k]["median_deg"])
    X0 = usable[best]["X"]
    B0, _ = consistency(X0, T_world_parent, T_cb)
    X, B = refine_hand_eye(X0, B0, T_world_parent, detections, K)
    _, errs = consistency(X, T_world_parent, T_cb)
    for view, (mm, deg), Tg, det, depth in zip(views, errs, T_world_parent, detections, depths, strict=False):
        view.consistency_mm, view.consistency_deg = mm, deg
        T_pred = np.linalg.inv(Tg @ X) @ B
        view.rms_px = float(
            np.sqrt(np.mean(np.sum((project(T_pred, det.object_points, K) - det.image_points) ** 2, 1)))
        )
        if depth is not None:
            view.depth_mm, view.depth_deg, _ = depth_plane_check(board, det, T_pred, depth, K)
    board_mm, board_deg = pose_error(board.T_world_board, B)
    extra = {
        "hand_eye_methods": {
            k: ({kk: round(vv, 4) for kk, vv in v.items() if kk != "X"} if "X" in v else v) for k, v in methods.items()
        },
        "hand_eye_best": best,
        "board_from_arm_vs_marked": {"mm": round(board_mm, 3), "deg": round(board_deg, 4)},
    }
    return CameraResult(camera, parent, X, views, extra, {k: v["X"] for k, v in usable.items()})


# ----------------------------------------------------------------------------------- thresholds
def check_residuals(results: dict[str, CameraResult], cfg: dict, max_board_mm: float = 10.0) -> list[str]:
    """Problems as sentences naming the views to drop or retake (empty = accepted)."""
    problems = []
    for cam, res in results.items():
        bad = []
        for v in res.views:
            why = []
            if v.rms_px > cfg["max_reprojection_px"]:
                why.append(f"reprojection {v.rms_px:.2f} px > {cfg['max_reprojection_px']}")
            if v.consistency_mm > cfg["max_view_mm"] or v.consistency_deg > cfg["max_view_deg"]:
                why.append(
                    f"disagrees with the other views by {v.consistency_mm:.1f} mm / {v.consistency_deg:.2f} deg "
                    f"(> {cfg['max_view_mm']} mm / {cfg['max_view_deg']} deg)"
                )
            if v.depth_mm is not None and (abs(v.depth_mm) > cfg["max_depth_mm"] or v.depth_deg > cfg["max_depth_deg"]):
                why.append(
                    f"depth plane off the colour pose by {v.depth_mm:.1f} mm / {v.depth_deg:.1f} deg (check the "
                    "depth scale and depth-to-colour alignment)"
                )
            if why:
                bad.append(f"{v.name}: {'; '.join(why)}")
        if bad:
            problems.append(f"{cam}: drop or retake " + " | ".join(bad))
        marked = res.extra.get("board_from_arm_vs_marked")
        if marked and marked["mm"] > max_board_mm:
            problems.append(
                f"{cam}: through the arm the board is {marked['mm']:.1f} mm from its marked pose: the board is not at "
                "its marked place (or calibration.board.xyz/rpy is wrong); the fixed cameras would be off as much"
            )
    return problems


# ------------------------------------------------------------------------------ profile writing
def realsense_link_from_optical() -> np.ndarray:
    """T_link_optical of realsense2_camera (optical z forward, link x forward), zero offset."""
    return make_transform(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), np.zeros(3))


def mount_entry(parent: str, T_parent_link: np.ndarray) -> dict:
    return {
        "parent": parent,
        "xyz": [round(float(v), 5) for v in T_parent_link[:3, 3]],
        "rpy": [round(float(v), 5) for v in matrix_rpy(T_parent_link)],
    }


def _flow(mount: dict) -> str:
    return (
        f"{{parent: {mount['parent']}, xyz: [{', '.join(f'{v:.5f}' for v in mount['xyz'])}], "
        f"rpy: [{', '.join(f'{v:.5f}' for v in mount['rpy'])}]}}"
    )


def write_profile(
    profile_path: str | Path, mounts: dict[str, dict], out_dir: str | Path | None = None, now=None
) -> Path:
    """A dated copy of the profile with the calibrated mounts; the original file is left as it is.

    Each camera's one-line `mount: {...}` is replaced in place (comments kept); a camera without one
    gets it added. The copy is read back and checked before it is left on disk.
    """
    from clamp_core.profile import load_profile

    src = Path(profile_path)
    now = now or _dt.datetime.now()
    out = Path(out_dir or src.parent) / f"{src.stem}.calibrated-{now:%Y%m%d-%H%M%S}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = src.read_text(encoding="utf-8")
    lines = text.splitlines()
    stamp = f"# calibrated {now:%Y-%m-%d %H:%M:%S} by python -m clamp_bringup.calibrate (from {src.name})"
    for cam, mount in mounts.items():
        head = next((i for i, ln in enumerate(lines) if re.match(rf"^  {re.escape(cam)}:", ln)), None)
        if head is None:
            raise CalibrationError(f"{src}: no cameras.{cam} entry to write its mount into")
        if re.match(rf"^  {re.escape(cam)}:\s*\{{\s*\}}\s*$", lines[head]):  # `cam: {}`
            lines[head] = f"  {cam}:"
            lines.insert(head + 1, f"    mount: {_flow(mount)}")
            continue
        end = next((i for i in range(head + 1, len(lines)) if not lines[i].startswith("    ")), len(lines))
        idx = next((i for i in range(head + 1, end) if re.match(r"^    mount:", lines[i])), None)
        entry = f"    mount: {_flow(mount)}"
        if idx is None:
            lines.insert(head + 1, entry)
        else:
            lines[idx] = entry
    out.write_text(stamp + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    try:  # read back: loads, and every mount is what we meant
        prof = load_profile(out)
        for cam, mount in mounts.items():
            got = prof["cameras"][cam]["mount"]
            if got["parent"] != mount["parent"] or not np.allclose(got["xyz"], mount["xyz"], atol=1e-5):
                raise CalibrationError(f"{out}: cameras.{cam}.mount did not round-trip ({got} vs {mount})")
    except Exception:
        out.unlink(missing_ok=True)
        raise
    return out


def results_json(results: dict[str, CameraResult]) -> dict:
    return {cam: r.as_dict() for cam, r in copy.copy(results).items()}


# ------------------------------------------------------------------------- wrist pose planning
def fk_vx300s(q) -> np.ndarray:
    """T_base_ee (ee_gripper_link in base_link) of a ViperX 300 6DOF at joint angles q (6,).

    The one kinematic model of clamp_core.world. Planning only: the hand-eye solve uses the measured
    TF of the arm, never this model.
    """
    return world.arm_fk(np.asarray(q, float)[:6], "ee_gripper_link")


def ik_vx300s(T_base_ee: np.ndarray, q0, lower, upper) -> tuple[np.ndarray, float, float]:
    """Joint angles within [lower, upper] reaching T_base_ee: (q, position error m, rotation error deg)."""

    def res(q):
        T = fk_vx300s(q)
        dr = Rotation.from_matrix(T_base_ee[:3, :3].T @ T[:3, :3]).as_rotvec()
        return np.concatenate([T[:3, 3] - T_base_ee[:3, 3], 0.1 * dr])

    q0 = np.clip(np.asarray(q0, float), lower + 1e-6, upper - 1e-6)
    sol = least_squares(res, q0, bounds=(lower, upper), xtol=1e-10, ftol=1e-10)
    r = res(sol.x)
    return sol.x, float(np.linalg.norm(r[:3])), float(np.degrees(np.linalg.norm(r[3:]) / 0.1))


def look_at(eye: np.ndarray, target: np.ndarray, down_hint: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """Optical-frame pose (z forward, y down) at `eye` looking at `target`, rolled about z."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(down_hint, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.column_stack([x, y, z]) @ Rotation.from_euler("z", roll_deg, degrees=True).as_matrix()
    return make_transform(R, eye)


@dataclass
class PlannedPose:
    q: np.ndarray  # 6 joint angles
    T_world_cam: np.ndarray  # where the camera is meant to be (nominal mount)


def plan_wrist_poses(
    board: Board,
    T_world_base: np.ndarray,
    T_ee_cam: np.ndarray,
    K: np.ndarray,
    image_size: tuple[int, int],
    lower: np.ndarray,
    upper: np.ndarray,
    q_start: np.ndarray,
    n: int,
    distances=(0.42,),
    tilts_deg=(25.0, 38.0, 50.0),
    rolls_deg=(-30.0, 0.0, 30.0),
    margin_px: float = 25.0,
    min_ee_height: float = 0.08,
    own_side: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> tuple[list[PlannedPose], int]:
    """Up to `n` reachable wrist-camera poses that see the whole board, diverse in rotation.

    Candidate views look at the board centre from a cap around its normal, on the arm's side; each
    is solved by IK within [lower, upper] (limits already shrunk by the caller's margin) and kept
    only when the IK is exact, the board projects fully inside the image and the gripper stays above
    the table. `own_side` = (point, normal, clearance): the gripper and the camera must stay at
    least `clearance` on the normal's side of that plane (the midplane between the two followers, so
    that both arms can visit their poses at the same time without meeting). Returns (poses ordered
    for short moves, number of candidates skipped as unreachable).
    """
    h, w = image_size
    centre = (board.T_world_board @ np.append(board.centre, 1.0))[:3]
    normal = -board.T_world_board[:3, 2]  # the printed face looks along -z of the board frame
    side = T_world_base[:3, 3] - centre
    side -= normal * (side @ normal)
    side /= np.linalg.norm(side)
    third = np.cross(normal, side)
    outline = board.outline()
    T_base_world = np.linalg.inv(T_world_base)
    shoulder, reach = world.arm_reach()
    cands, skipped, q_prev = [], 0, np.asarray(q_start, float)
    for tilt in tilts_deg:
        for az in (-45.0, -22.0, 0.0, 22.0, 45.0):
            a, b = np.radians(tilt), np.radians(az)
            d = np.cos(a) * normal + np.sin(a) * (np.cos(b) * side + np.sin(b) * third)
            for dist in distances:
                eye = centre + dist * d
                for roll in rolls_deg:
                    T_wc = look_at(eye, centre, np.array([0.0, 0.0, -1.0]), roll)
                    T_be = T_base_world @ T_wc @ np.linalg.inv(T_ee_cam)
                    if np.linalg.norm(T_be[:3, 3] - shoulder) > reach + 0.002:
                        skipped += 1  # beyond the stretched arm: no IK can reach it (a failing search is slow)
                        continue
                    q, ep, er = ik_vx300s(T_be, q_prev, lower, upper)
                    if ep > 0.002 or er > 0.5:  # a second start from the start pose before giving up
                        q, ep, er = ik_vx300s(T_be, q_start, lower, upper)
                    if ep > 0.002 or er > 0.5:
                        skipped += 1  # not reachable within the limits: skipped, never forced
                        continue
                    T_ee = T_world_base @ fk_vx300s(q)
                    if T_ee[2, 3] < min_ee_height:
                        skipped += 1
                        continue
                    if own_side is not None:
                        p0, nrm, clear = own_side
                        if min((T_ee[:3, 3] - p0) @ nrm, (T_wc[:3, 3] - p0) @ nrm) < clear:
                            skipped += 1
                            continue
                    T_cb = np.linalg.inv(T_wc) @ board.T_world_board
                    uv = project(T_cb, outline, K)
                    if np.any(uv < margin_px) or np.any(uv[:, 0] > w - margin_px) or np.any(uv[:, 1] > h - margin_px):
                        continue
                    cands.append(PlannedPose(q, T_wc))
                    q_prev = q
    if not cands:
        return [], skipped
    # greedy farthest-point selection in camera orientation (hand-eye needs rotation diversity)
    chosen = [int(np.argmin([np.abs(c.q - q_start).max() for c in cands]))]
    rots = Rotation.from_matrix(np.stack([c.T_world_cam[:3, :3] for c in cands]))
    while len(chosen) < min(n, len(cands)):
        dmin = np.min([(rots[i].inv() * rots).magnitude() for i in chosen], axis=0)
        dmin[chosen] = -1.0
        chosen.append(int(np.argmax(dmin)))
    # order: nearest neighbour in joint space from the start pose
    left, order, q = list(chosen), [], np.asarray(q_start, float)
    while left:
        k = min(left, key=lambda i: np.abs(cands[i].q - q).max())
        order.append(cands[k])
        left.remove(k)
        q = cands[k].q
    return order, skipped
