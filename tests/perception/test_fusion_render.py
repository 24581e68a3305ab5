"""Fusion and rendering against analytic scenes (boxes seen by cameras of known pose)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from clamp_core import rig
from clamp_core.geometry import invert_transform, look_at, make_transform
from clamp_perception.fusion import DepthFrame, decimate, deproject, fuse, voxel_downsample
from clamp_perception.pipeline import PerceptionPipeline, load_config
from clamp_perception.render import ViewCamera, render, tile, untile
from clamp_perception.synthetic import SyntheticScene, gripper_pose, pinhole_K
from clamp_perception.transforms import ExtrapolationError, TransformBuffer

MM = 1e-3


@pytest.fixture(scope="module")
def scene():
    return SyntheticScene.aloha_table(height=240, width=320)


@pytest.fixture(scope="module")
def scene_frames(scene):
    return scene.frames()


@pytest.fixture(scope="module")
def pipeline():
    cfg = copy.deepcopy(load_config())
    cfg["depth"]["pixel_stride"] = 1  # 320x240 inputs: keep every pixel
    return PerceptionPipeline.from_config(cfg)


def reproject(view: ViewCamera, T_world_view: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) world points -> (u, v) continuous pixel coordinates and depth z in the view."""
    p = (invert_transform(T_world_view) @ np.c_[xyz, np.ones(len(xyz))].T)[:3]
    if view.projection == "pinhole":
        return np.stack([view.fx * p[0] / p[2] + view.cx, view.fy * p[1] / p[2] + view.cy], 1), p[2]
    return np.stack([p[0] / view.pixel_size + view.cx, p[1] / view.pixel_size + view.cy], 1), p[2]


def truth_depth(scene: SyntheticScene, view: ViewCamera, T: np.ndarray) -> np.ndarray:
    """Ray-cast the analytic scene through each pixel centre of a virtual view (inf = no surface)."""
    v, u = np.mgrid[0 : view.height, 0 : view.width].astype(np.float64)
    if view.projection == "pinhole":
        dirs = np.stack([(u - view.cx) / view.fx, (v - view.cy) / view.fy, np.ones_like(u)], -1).reshape(-1, 3)
        dirs = dirs @ T[:3, :3].T
        origins = np.broadcast_to(T[:3, 3], dirs.shape)
    else:
        local = np.stack([(u - view.cx) * view.pixel_size, (v - view.cy) * view.pixel_size, 0 * u, 1 + 0 * u], -1)
        origins = (local.reshape(-1, 4) @ T.T)[:, :3]
        dirs = np.broadcast_to(T[:3, 2], origins.shape)
    return scene.raycast(origins, dirs).reshape(view.height, view.width)


# ------------------------------------------------------------------------------------------ fusion
def test_plane_deprojects_exactly():
    """A camera 0.8 m above a plane z = 0, tilted: every point lands on the plane where its ray says."""
    K = pinhole_K(64, 48, 70.0)
    T = look_at([0.1, -0.3, 0.8], [0.0, 0.2, 0.0])
    scene = SyntheticScene(boxes=[((-5, -5, -1), (5, 5, 0))], cameras={"c": (K, 48, 64, T)})
    depth = scene.depth_image("c", np.float32)
    pts = deproject(DepthFrame(depth, K, T, "c"), stride=1)
    assert pts.shape == (3, 48 * 64) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[2], 0.0, atol=1e-5)
    # pixel (row 10, col 20): intersect its ray with z = 0 independently
    ray = T[:3, :3] @ [(20 - K[0, 2]) / K[0, 0], (10 - K[1, 2]) / K[1, 1], 1.0]
    hit = T[:3, 3] + ray * (-T[2, 3] / ray[2])
    np.testing.assert_allclose(pts[:, 10 * 64 + 20], hit, atol=1e-5)


def test_fused_points_lie_on_the_scene(scene, scene_frames, pipeline):
    frames, _ = scene_frames
    cloud = pipeline.fuse(frames)
    assert cloud.shape[0] == 3 and cloud.shape[1] > 50_000
    dist = scene.surface_distance(cloud.T.astype(np.float64))
    assert dist.max() < 2 * MM, f"fused point {dist.max() * 1e3:.2f} mm off the surface"
    assert np.all(cloud.T >= pipeline.box_min - 1e-6) and np.all(cloud.T <= pipeline.box_max + 1e-6)
    # float metres depth gives the same cloud (up to the mm quantisation of 16UC1)
    frames_f, _ = scene.frames(dtype=np.float32)
    cloud_f = pipeline.fuse(frames_f)
    assert abs(cloud_f.shape[1] - cloud.shape[1]) < 0.01 * cloud.shape[1]
    assert scene.surface_distance(cloud_f.T.astype(np.float64)).max() < 1e-4


def test_invalid_depth_never_produces_points():
    K = pinhole_K(8, 6, 60.0)
    T = np.eye(4)
    metres = np.full((6, 8), 0.5, np.float32)
    metres[0, 0], metres[1, 1], metres[2, 2], metres[3, 3] = np.nan, np.inf, 0.0, 5.0  # 5 m > max
    metres[4, 4] = 0.01  # below min
    pts = deproject(DepthFrame(metres, K, T), min_depth=0.07, max_depth=1.5)
    assert pts.shape[1] == 48 - 5 and np.all(np.isfinite(pts)) and np.allclose(pts[2], 0.5)
    mm = np.full((6, 8), 500, np.uint16)
    mm[0, :] = 0  # "no return"
    mm[1, 0] = 65535
    pts = deproject(DepthFrame(mm, K, T), min_depth=0.07, max_depth=1.5)
    assert pts.shape[1] == 48 - 8 - 1 and np.allclose(pts[2], 0.5)
    empty = fuse([DepthFrame(np.zeros((6, 8), np.uint16), K, T)])
    assert empty.shape == (3, 0)


def test_bad_frames_are_refused_with_a_named_reason():
    K = pinhole_K(8, 6, 60.0)
    with pytest.raises(ValueError, match="cam_low: depth image is 8x6 but its camera_info says 16x12"):
        fuse([DepthFrame(np.ones((6, 8), np.uint16), K, np.eye(4), "cam_low", size=(12, 16))])
    with pytest.raises(ValueError, match="non-zero distortion"):
        fuse([DepthFrame(np.ones((6, 8), np.uint16), K, np.eye(4), "c", distortion=np.array([0.1, 0, 0, 0, 0]))])
    fuse(
        [DepthFrame(np.ones((6, 8), np.uint16), K, np.eye(4), "c", distortion=np.array([0.1, 0, 0, 0, 0]))],
        allow_distortion=True,
    )
    with pytest.raises(ValueError, match="dtype int32 is not supported"):
        fuse([DepthFrame(np.ones((6, 8), np.int32), K, np.eye(4), "c")])
    with pytest.raises(ValueError, match="fx, fy > 0"):
        fuse([DepthFrame(np.ones((6, 8), np.uint16), np.zeros((3, 3)), np.eye(4), "c")])


def test_voxel_downsample_and_decimate():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 0.1, (3, 20000)).astype(np.float32)
    down = voxel_downsample(pts, 0.01)
    assert down.shape[1] <= 1000 and down.shape[1] > 900  # 10x10x10 cells, nearly all occupied
    cells = np.floor(down / 0.01)
    assert len(np.unique(cells, axis=1).T) == down.shape[1]  # one centroid per cell
    assert decimate(pts, 500).shape == (3, 500) and decimate(pts, 0).shape == pts.shape


# ------------------------------------------------------------------------------------------ render
def test_overhead_depth_matches_the_analytic_scene(scene, scene_frames, pipeline):
    """Orthographic top view: rendered depth equals ray-cast depth within 2 mm away from box edges."""
    frames, wrists = scene_frames
    views, cloud = pipeline.process(frames, wrists)
    i = pipeline.view_names.index("overhead")
    view, T = pipeline.views[i], pipeline.view_poses(wrists)[i]
    truth = truth_depth(scene, view, T)
    got = views[i, ..., 0]
    # compare where both exist and the 3x3 neighbourhood of the truth is flat (not at a box edge)
    pad = np.pad(np.where(np.isfinite(truth), truth, 99.0), 1, mode="edge")
    nb = np.stack([pad[dy : dy + view.height, dx : dx + view.width] for dy in range(3) for dx in range(3)])
    flat = (nb.max(0) - nb.min(0)) < 1e-6
    both = (got > 0) & np.isfinite(truth) & flat
    assert both.mean() > 0.5
    err = np.abs(got[both] - truth[both])
    assert err.max() < 2 * MM, f"overhead depth off by {err.max() * 1e3:.2f} mm"
    # the box tops are drawn over the table (z-buffer keeps the nearest): height 0.06 and 0.10 appear
    zs = views[i, ..., 3][views[i, ..., 0] > 0]
    assert np.sum(np.abs(zs - 0.06) < 1 * MM) > 20 and np.sum(np.abs(zs - 0.10) < 1 * MM) > 20


def test_every_view_is_consistent_with_the_scene(scene, scene_frames, pipeline):
    frames, wrists = scene_frames
    views, _ = pipeline.process(frames, wrists)
    assert views.shape == (len(rig.VIEW_NAMES), rig.VIEW_SIZE, rig.VIEW_SIZE, 4) and views.dtype == np.float32
    assert pipeline.view_names == list(rig.VIEW_NAMES)
    for i, (view, T) in enumerate(zip(pipeline.views, pipeline.view_poses(wrists), strict=True)):
        img = views[i]
        hit = img[..., 0] > 0
        assert hit.mean() > 0.15, f"{view.name}: only {hit.mean():.0%} of pixels filled"
        assert np.all(img[~hit] == 0.0), "empty pixels must be 0 in every channel"
        xyz = img[hit][:, 1:].astype(np.float64)
        assert scene.surface_distance(xyz).max() < 2 * MM, f"{view.name}: xyz off the scene surfaces"
        uv, z = reproject(view, T, xyz)
        rows, cols = np.nonzero(hit)
        # the point drawn in a pixel projects into that pixel (1 px slack for hole filling)
        assert np.abs(np.floor(uv[:, 0] + 0.5) - cols).max() <= 1 and np.abs(np.floor(uv[:, 1] + 0.5) - rows).max() <= 1
        np.testing.assert_allclose(img[hit][:, 0], z, atol=1e-4)  # depth channel = z of the point in the view


def test_zbuffer_keeps_the_nearest_point():
    view = ViewCamera(
        "top",
        4,
        4,
        "orthographic",
        pixel_size=0.1,
        cx=1.5,
        cy=1.5,
        T_world_view=look_at([0, 0, 1], [0, 0, 0], [0, 1, 0]),
    )
    far = np.array([[0.0], [0.0], [0.2]], np.float32)
    near = np.array([[0.02], [-0.02], [0.5]], np.float32)  # same pixel, higher up = nearer to the eye
    for pts in (np.hstack([far, near]), np.hstack([near, far])):
        img = render(pts, [view], [view.T_world_view])[0]
        hit = img[..., 0] > 0
        assert hit.sum() == 1
        np.testing.assert_allclose(img[hit][0], [0.5, 0.02, -0.02, 0.5], atol=1e-6)
    assert not render(np.zeros((3, 0), np.float32), [view], [view.T_world_view]).any()
    with pytest.raises(ValueError, match=r"\(3, N\)"):
        render(np.zeros((5, 3), np.float32), [view], [view.T_world_view])


def test_wrist_view_follows_the_gripper_through_tf(scene, pipeline):
    """Gripper TF moves between two stamps: the wrist view at each stamp is rendered from that pose."""
    t1, t2 = 1_000_000_000, 1_100_000_000
    T1 = scene.wrist_poses["follower_left"]
    T2 = gripper_pose([-0.15, 0.62, 0.18], [1.0, -0.3, 0.0], 45.0)
    buf = TransformBuffer()
    for parent, child, T in scene.tf_static():
        buf.set_transform(parent, child, T, static=True)
    T_right = scene.wrist_poses["follower_right"]
    for arm, T_a, T_b in (("follower_left", T1, T2), ("follower_right", T_right, T_right)):
        buf.set_transform(rig.WORLD_FRAME, rig.gripper_frame(arm), T_a, t1)
        buf.set_transform(rig.WORLD_FRAME, rig.gripper_frame(arm), T_b, t2)
    images = {}
    for cam in ("cam_high", "cam_low"):  # static cameras only: the scene does not move
        K, h, w, _ = scene.cameras[cam]
        images[cam] = (scene.depth_image(cam), K, (h, w), rig.color_optical_frame(cam), None)
    i = pipeline.view_names.index("left_wrist")
    out = {}
    for t in (t1, t2, (t1 + t2) // 2):
        frames, wrist = pipeline.frames_from_buffer(images, buf, t)
        views, _ = pipeline.process(frames, wrist)
        out[t] = views[i]
    for t, T in ((t1, T1), (t2, T2)):
        hit = out[t][..., 0] > 0
        assert hit.mean() > 0.2
        uv, z = reproject(pipeline.views[i], T @ pipeline.views[i].T_frame_view, out[t][hit][:, 1:].astype(np.float64))
        np.testing.assert_allclose(out[t][hit][:, 0], z, atol=1e-4)
    assert not np.allclose(out[t1], out[t2])
    assert not np.allclose(out[(t1 + t2) // 2], out[t1]) and not np.allclose(out[(t1 + t2) // 2], out[t2])
    with pytest.raises(ExtrapolationError, match="follower_left/ee_gripper_link"):
        pipeline.frames_from_buffer(images, buf, t2 + 1_000_000_000)


def test_tile_layout():
    views = np.random.default_rng(0).normal(size=(5, 224, 224, 4)).astype(np.float32)
    tiled = tile(views)
    assert tiled.shape == (224, 1120, 4)
    for i in range(5):
        np.testing.assert_array_equal(tiled[:, 224 * i : 224 * (i + 1)], views[i])
    np.testing.assert_array_equal(untile(tiled, 5), views)


def test_config_errors_are_clear():
    cfg = copy.deepcopy(load_config())
    cfg["views"]["overhead"]["fov"] = 60
    with pytest.raises(ValueError, match=r"view 'overhead': unknown key\(s\) \['fov'\]"):
        PerceptionPipeline.from_config(cfg)
    cfg = copy.deepcopy(load_config())
    cfg["views"] = {k: cfg["views"][k] for k in reversed(list(cfg["views"]))}
    assert PerceptionPipeline.from_config(cfg).view_names == list(rig.VIEW_NAMES)  # tiled in rig order regardless
    cfg = copy.deepcopy(load_config())
    cfg["crop"]["min"] = [1, 1, 1]
    with pytest.raises(ValueError, match="must be below max"):
        PerceptionPipeline.from_config(cfg)
    cfg = copy.deepcopy(load_config())
    del cfg["views"]["back_right"]["eye"]
    with pytest.raises(ValueError, match="view 'back_right': missing 'eye'"):
        PerceptionPipeline.from_config(cfg)
    pipe = PerceptionPipeline.from_config()
    with pytest.raises(KeyError, match="follows frame 'follower_left/ee_gripper_link'"):
        pipe.view_poses({})
    # wrist poses may be keyed by arm or by TF frame
    T = make_transform(translation=[0, 0.5, 0.3])
    a = pipe.view_poses({"follower_left": T, "follower_right": T})
    b = pipe.view_poses({rig.gripper_frame("follower_left"): T, rig.gripper_frame("follower_right"): T})
    np.testing.assert_allclose(np.stack(a), np.stack(b))


def test_coloured_cloud_takes_each_points_own_pixel(scene, scene_frames, pipeline):
    frames, _ = scene_frames
    frames = {k: copy.copy(f) for k, f in frames.items()}
    palette = {"cam_high": (255, 0, 0), "cam_low": (0, 255, 0), "cam_left_wrist": (0, 0, 255)}
    for cam, rgb in palette.items():
        img = np.zeros(frames[cam].depth.shape + (3,), np.uint8)
        img[:] = rgb
        img[0, :] = (1, 2, 3)  # first row differs: would show up if pixel lookup were off by rows
        frames[cam].colour = img
    pts, rgb = pipeline.fuse_coloured(frames)
    np.testing.assert_array_equal(pts, pipeline.fuse(frames).T)  # same points, same order
    colours = {tuple(c) for c in np.unique(rgb, axis=0)}
    assert set(palette.values()) <= colours and (128, 128, 128) in colours  # cam_right_wrist has no colour
    # a coloured point's pixel really is where it came from: cam_high points are red (or the marked row)
    n_high = pipeline.fuse([frames["cam_high"]]).shape[1]
    assert np.all((rgb[:n_high] == (255, 0, 0)).all(1) | (rgb[:n_high] == (1, 2, 3)).all(1))
    down, down_rgb = pipeline.cloud_for_publishing(pts, 0, rgb)
    assert len(down) == len(down_rgb) <= pipeline.cloud_max_points
    frames["cam_low"].colour = np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="not aligned with depth"):
        pipeline.fuse_coloured(frames)


def test_torch_backend_matches_numpy(scene_frames, pipeline):
    """The GPU path (run here on CPU torch) gives the numpy path's views up to z-buffer tie breaks."""
    pytest.importorskip("torch")
    frames, wrists = scene_frames
    ref, cloud_ref = pipeline.process(frames, wrists)
    try:
        pipeline.set_backend("torch", "cpu")
        got, cloud = pipeline.process(frames, wrists)
    finally:
        pipeline.set_backend("numpy")
    # Same points, not the same bits: torch and numpy order float32 sums differently (BLAS, fused
    # multiply-add), a few ulp = ~1e-7 m at a metre from the origin. 1 um is 2000x below the 2 mm
    # rendering resolution this cloud feeds, and still catches any real transform or masking error.
    assert cloud.shape == cloud_ref.shape
    np.testing.assert_allclose(cloud, cloud_ref, rtol=0, atol=1e-6)
    hit_ref, hit = ref[..., 0] > 0, got[..., 0] > 0
    assert (hit_ref == hit).mean() > 0.999
    both = hit_ref & hit
    assert (np.abs(got[..., 0] - ref[..., 0])[both] < 2 * MM).mean() > 0.999
    assert np.all(got[~hit] == 0)
    with pytest.raises(ValueError, match="backend must be"):
        pipeline.set_backend("opencl")
