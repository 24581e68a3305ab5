"""clamp_bringup.calibration against clamp_sim's rendered ChArUco board and true camera poses (no ROS).

Every test renders the real MuJoCo scene with the board (clamp_sim.board) and runs the real OpenCV
detection / PnP / hand-eye; the truth is the simulator's camera poses.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import yaml
from clamp_bringup import calibration as C
from clamp_core import rig
from clamp_core.profile import ProfileError, load_profile, resolve_profile_path

SLEEP = np.array([0.0, -1.80, 1.55, 0.0, 0.8, 0.0])


@pytest.fixture(scope="module")
def cfg():
    return load_profile("sim")["calibration"]


@pytest.fixture(scope="module")
def sim(cfg):
    from clamp_sim.aloha_sim import AlohaSim

    s = AlohaSim(board=cfg["board"], image_size=(480, 640))
    yield s
    s.close()


def _set_arm(sim, arm, q):
    sim.data.qpos[sim._qadr[arm][:6]] = q
    mujoco.mj_forward(sim.model, sim.data)


def _fold(sim):
    for arm in rig.FOLLOWERS:
        _set_arm(sim, arm, SLEEP)


def test_fixed_cameras_from_the_rendered_board(sim, cfg):
    board = C.Board(cfg["board"])
    _fold(sim)
    frames = sim.render(("cam_high", "cam_low"))
    for cam, f in frames.items():
        det = C.detect(board, f.rgb)
        assert det is not None and len(det.ids) == 24, f"{cam} must see all 24 ChArUco corners"
        res = C.calibrate_fixed(cam, board, [(det, f.depth, None)], f.K)
        mm, deg = C.pose_error(f.T_world_cam, res.T_parent_cam)
        assert mm < 5.0 and deg < 0.5, (cam, mm, deg)
        v = res.views[0]
        assert v.rms_px < 0.5 and abs(v.depth_mm) < 3.0 and v.depth_deg < 1.0, v
        assert C.check_residuals({cam: res}, cfg) == []


def test_depth_check_catches_a_wrong_depth_scale(sim, cfg):
    """Depth 3 % too far (a wrong depth unit / scale) is refused, naming the view and the cause."""
    board = C.Board(cfg["board"])
    _fold(sim)
    f = sim.render(("cam_high",))["cam_high"]
    det = C.detect(board, f.rgb)
    res = C.calibrate_fixed("cam_high", board, [(det, f.depth * 1.03, None)], f.K)
    assert res.views[0].depth_mm > cfg["max_depth_mm"]
    problems = C.check_residuals({"cam_high": res}, cfg)
    assert len(problems) == 1 and "cam_high#0" in problems[0] and "depth" in problems[0]


def test_no_board_in_view_detects_nothing(sim, cfg):
    board = C.Board(cfg["board"])
    _fold(sim)
    f = sim.render(("cam_high",))["cam_high"]
    blank = np.full_like(f.rgb, 90)
    assert C.detect(board, blank) is None


def test_fk_matches_the_simulated_arm(sim):
    """The planner's ViperX kinematics agree with clamp_sim's arm to ~1 cm (planning only needs that)."""
    rng = np.random.default_rng(1)
    arm = "follower_left"
    T_base = sim.link_poses()[f"{arm}/base_link"]
    for _ in range(3):
        q = rng.uniform(-0.6, 0.6, 6)
        _set_arm(sim, arm, q)
        mm, deg = C.pose_error(T_base @ C.fk_vx300s(q), sim.gripper_pose(arm))
        assert mm < 20.0 and deg < 1.0, (mm, deg)
        q_ik, ep, er = C.ik_vx300s(
            C.fk_vx300s(q), np.zeros(6), rig.VX300S_LIMITS.lower[:6], rig.VX300S_LIMITS.upper[:6]
        )
        assert ep < 1e-4 and er < 0.01


def test_wrist_hand_eye_on_planned_poses(sim, cfg):
    """>= 10 planned poses within limits; every cv2.calibrateHandEye method is compared; the refined
    mount is within 5 mm / 1 deg of the simulator's, from a start value 2 cm / 3 deg off."""
    board = C.Board(cfg["board"])
    arm, cam = "follower_right", "cam_right_wrist"
    _fold(sim)
    _set_arm(sim, arm, [0.0, -0.96, 1.16, 0.0, -0.3, 0.0])
    parent, X_true = sim.camera_mount(cam)
    assert parent == rig.gripper_frame(arm)
    X_start = C.perturb(X_true, 20.0, 3.0, np.random.default_rng(0))
    lo, hi = rig.VX300S_LIMITS.lower[:6] + 0.05, rig.VX300S_LIMITS.upper[:6] - 0.05
    K = sim.intrinsics(cam)
    poses, _ = C.plan_wrist_poses(
        board, sim.link_poses()[f"{arm}/base_link"], X_start, K, sim.image_size, lo, hi, sim.arm_qpos(arm), 10
    )
    assert len(poses) == 10
    assert all(np.all(p.q >= lo) and np.all(p.q <= hi) for p in poses)
    Tg, dets, depths = [], [], []
    for p in poses:
        _set_arm(sim, arm, p.q)
        f = sim.render((cam,))[cam]
        det = C.detect(board, f.rgb)
        assert det is not None
        Tg.append(sim.gripper_pose(arm))
        dets.append(det)
        depths.append(f.depth)
    res = C.calibrate_wrist(cam, parent, board, Tg, dets, depths, K)
    mm, deg = C.pose_error(X_true, res.T_parent_cam)
    assert mm < 5.0 and deg < 1.0, (mm, deg)
    assert set(res.extra["hand_eye_methods"]) == set(C.HAND_EYE_METHODS)
    assert res.extra["board_from_arm_vs_marked"]["mm"] < 3.0
    assert C.check_residuals({cam: res}, cfg) == []
    # the same views with one arm pose reported 1 cm off (a bad joint reading): that view is named
    Tg_bad = list(Tg)
    Tg_bad[4] = Tg_bad[4].copy()
    Tg_bad[4][:3, 3] += [0.01, 0.0, 0.0]
    bad = C.calibrate_wrist(cam, parent, board, Tg_bad, dets, depths, K)
    problems = C.check_residuals({cam: bad}, cfg)
    assert problems and f"{cam}#4" in problems[0]


def test_too_few_wrist_views_is_refused_naming_the_camera(cfg):
    board = C.Board(cfg["board"])
    with pytest.raises(C.CalibrationError, match="cam_left_wrist: the board was seen in 3 of the wrist poses"):
        C.calibrate_wrist("cam_left_wrist", "x", board, [np.eye(4)] * 3, [None] * 3, [None] * 3, np.eye(3))


def test_unreachable_board_plans_no_pose(cfg):
    """A board out of reach: nothing reachable, every candidate skipped (never forced).

    At y = 1.6 m every candidate view puts the camera 1.03-1.05 m from the arm's base, 12 cm beyond
    the farthest the vx300s reaches (0.91 m from the base: world.arm_reach). The planner skips such
    targets before any IK search (a failing search ran to least_squares' 600 evaluations: 18 s here)."""
    spec = dict(cfg["board"], xyz=[0.0, 1.6, 0.1])
    board = C.Board(spec)
    lo, hi = rig.VX300S_LIMITS.lower[:6], rig.VX300S_LIMITS.upper[:6]
    T_base = np.eye(4)
    T_base[:3, 3] = [-0.469, 0.5, 0.0]
    poses, skipped = C.plan_wrist_poses(
        board, T_base, np.eye(4), np.array([[433.0, 0, 319.5], [0, 433.0, 239.5], [0, 0, 1]]), (480, 640), lo, hi,
        np.zeros(6), 10, distances=(0.3,), tilts_deg=(10.0,), rolls_deg=(0.0,),
    )  # fmt: skip
    assert poses == [] and skipped == 5


def test_write_profile_dated_copy_keeps_the_original(tmp_path):
    src = tmp_path / "aloha.yaml"
    src.write_text(resolve_profile_path("aloha").read_text())
    before = src.read_text()
    T = C.pose_from_xyz_rpy([0.01, -0.3, 0.8], [0.1, 1.0, 1.5])
    mounts = {"cam_high": C.mount_entry("world", T), "cam_left_wrist": C.mount_entry("follower_left/gripper_link", T)}
    import datetime

    out = C.write_profile(src, mounts, now=datetime.datetime(2026, 12, 1, 11, 30, 0))
    assert out.name == "aloha.calibrated-20261201-113000.yaml"
    assert src.read_text() == before  # the previous profile is kept as it was
    prof = load_profile(out)
    got = prof["cameras"]["cam_high"]["mount"]
    assert got["parent"] == "world"
    np.testing.assert_allclose(C.pose_from_xyz_rpy(got["xyz"], got["rpy"]), T, atol=1e-4)
    assert prof["cameras"]["cam_left_wrist"]["mount"]["parent"] == "follower_left/gripper_link"
    assert prof["cameras"]["cam_low"]["mount"] == load_profile(src)["cameras"]["cam_low"]["mount"]
    assert "# CALIBRATE" in out.read_text()  # comments kept
    # a camera the profile does not have: an error, and no file left behind
    with pytest.raises(C.CalibrationError, match="no cameras.cam_nope"):
        C.write_profile(src, {"cam_nope": mounts["cam_high"]}, now=datetime.datetime(2026, 12, 1, 11, 31, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aloha.calibrated-20261201-113000.yaml", "aloha.yaml"]


def test_write_profile_into_empty_camera_entries(tmp_path):
    src = tmp_path / "sim.yaml"
    src.write_text(resolve_profile_path("sim").read_text())
    T = C.pose_from_xyz_rpy([0.0, 0.1, 0.7], [0.0, 0.5, 0.0])
    out = C.write_profile(src, {"cam_high": C.mount_entry("world", T)}, out_dir=tmp_path / "o")
    assert load_profile(out)["cameras"]["cam_high"]["mount"]["xyz"] == [0.0, 0.1, 0.7]


def test_profile_calibration_section_is_validated(tmp_path):
    raw = yaml.safe_load(resolve_profile_path("sim").read_text())
    raw["calibration"] = {"board": {"squares": [7, 5], "sqare_m": 0.05}}
    with pytest.raises(ProfileError, match="unknown calibration.board key"):
        load_profile(raw)
    raw["calibration"] = {"wrist_poses": 4}
    with pytest.raises(ProfileError, match="wrist_poses must be >= 10"):
        load_profile(raw)


def test_distorted_corners_are_undistorted_with_camera_info(cfg):
    """camera_info distortion (plumb_bob) is taken out before PnP; an unknown model is refused."""
    import cv2

    board = C.Board(cfg["board"])
    K = np.array([[433.0, 0, 319.5], [0, 433.0, 239.5], [0, 0, 1]])
    D = np.array([-0.05, 0.03, 0.001, -0.001, 0.0])
    T = C.pose_from_xyz_rpy([-0.15, -0.1, 0.5], [3.0, 0.1, 0.05])
    obj = board.corners
    rv, tv = cv2.Rodrigues(T[:3, :3])[0], T[:3, 3]
    distorted = cv2.projectPoints(obj, rv, tv, K, D)[0].reshape(-1, 2)
    det = C.Detection(np.arange(len(obj)), distorted, obj)
    und = C.undistort_detection(det, K, D, "plumb_bob", "cam_high")
    np.testing.assert_allclose(und.image_points, C.project(T, obj, K), atol=0.01)
    T_est, rms = C.solve_pnp(und, K)
    assert rms < 0.01 and C.pose_error(T, T_est)[0] < 0.1
    with pytest.raises(C.CalibrationError, match="cam_high: camera_info distortion model 'equidistant'"):
        C.undistort_detection(det, K, D, "equidistant", "cam_high")
    assert C.undistort_detection(det, K, np.zeros(5), "equidistant") is det  # zero coefficients: nothing to do


def test_arm_reach_bounds_every_pose_and_is_reached_stretched_out():
    """world.arm_reach: no joint angles put ee_gripper_link farther from the shoulder than the bound
    (the planner skips targets beyond it without an IK search), and the stretched arm reaches it."""
    from clamp_core import world

    shoulder, reach = world.arm_reach()
    q = np.random.default_rng(0).uniform(-np.pi, np.pi, (2000, 6))
    d = [np.linalg.norm(world.arm_fk(qi)[:3, 3] - shoulder) for qi in q]
    assert max(d) <= reach + 1e-9
    # stretched out forward: the upper arm (0.3 m up, 0.06 m forward at home) pitched down in line
    # with the forearm, the elbow bent back by as much
    stretched = np.zeros(6)
    stretched[1] = np.arctan2(0.3, 0.05955)
    stretched[2] = -stretched[1]
    assert np.linalg.norm(world.arm_fk(stretched)[:3, 3] - shoulder) == pytest.approx(reach, abs=1e-3)
