"""A ChArUco calibration board in the MuJoCo scene: a thin textured plate at a known pose. No ROS.

The board is described by the robot profile's `calibration.board` section (clamp_core.profile:
squares, square and marker size in metres, aruco dictionary, pose of the board frame in world as
xyz + rpy). The board frame is OpenCV's: origin at the outer corner of the first square, x along
the rows, y along the columns, z into the board (the printed face looks along -z). The texture is
OpenCV's own `CharucoBoard.generateImage`, so the simulated board is exactly what a printout of
`python -m clamp_bringup.calibrate --print-board` gives.

It is visual only (no contacts): the arms pass over it and the task objects never collide with it.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import mujoco
import numpy as np
from clamp_core.geometry import make_transform

PIXELS_PER_SQUARE = 120  # texture resolution: 120 px per square (2.4 px/mm for 5 cm squares)
THICKNESS = 0.004  # m, a printed board on a stiff plate
NAME = "charuco_board"


def rpy_matrix(rpy) -> np.ndarray:
    """ROS fixed-axis roll, pitch, yaw -> rotation (R = Rz(yaw) Ry(pitch) Rx(roll))."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def board_pose(board: dict) -> np.ndarray:
    """4x4 pose of the board frame in world from the profile's calibration.board section."""
    return make_transform(rpy_matrix(board["rpy"]), np.asarray(board["xyz"], float))


def board_extent(board: dict) -> tuple[float, float]:
    """(width along board x, height along board y) of the squared area, metres."""
    return board["squares"][0] * board["square_m"], board["squares"][1] * board["square_m"]


def board_image(board: dict) -> np.ndarray:
    """(H, W) uint8 image of the board's squared area plus its white margin, from OpenCV."""
    import cv2

    sx, sy = (int(v) for v in board["squares"])
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, str(board["dictionary"])))
    cb = cv2.aruco.CharucoBoard((sx, sy), float(board["square_m"]), float(board["marker_m"]), dictionary)
    margin = int(round(float(board["margin_m"]) / float(board["square_m"]) * PIXELS_PER_SQUARE))
    size = (sx * PIXELS_PER_SQUARE + 2 * margin, sy * PIXELS_PER_SQUARE + 2 * margin)
    return cb.generateImage(size, marginSize=margin, borderBits=1)


def _texture_file(board: dict) -> Path:
    import cv2

    img = board_image(board)
    key = hashlib.sha256(img.tobytes() + str(img.shape).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"clamp_sim_charuco_{key}.png"
    if not path.is_file():
        tmp = path.with_suffix(f".{np.random.randint(1 << 30)}.png")
        cv2.imwrite(str(tmp), img)
        tmp.replace(path)  # atomic: parallel sims never read half a file
    return path


def add_board(spec: mujoco.MjSpec, board: dict) -> None:
    """Add the board (a textured plate, visual only) to `spec` at the board's pose in world."""
    w, h = board_extent(board)
    m = float(board["margin_m"])
    # plate corners in the board frame: the printed face at z = 0, the back at z = +THICKNESS
    x0, x1, y0, y1 = -m, w + m, -m, h + m
    face = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    verts = [(x, y, 0.0) for x, y in face] + [(x, y, THICKNESS) for x, y in face]
    # texture coordinates: u along board x, v along board y (image rows run along board y)
    uv = [((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)) for x, y in face] * 2
    # a box of 12 triangles, each wound counter-clockwise seen from outside (outward normal)
    quads = [(0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
    v = np.asarray(verts, float)
    centre = v.mean(axis=0)
    faces = []
    for q in quads:
        for tri in ((q[0], q[1], q[2]), (q[0], q[2], q[3])):
            a, b, c = v[list(tri)]
            outward = np.dot(np.cross(b - a, c - a), a - centre) > 0
            faces.append(tri if outward else (tri[0], tri[2], tri[1]))
    spec.add_texture(name=f"{NAME}_tex", type=mujoco.mjtTexture.mjTEXTURE_2D, file=str(_texture_file(board)))
    mat = spec.add_material(name=f"{NAME}_mat", specular=0.0, shininess=0.0, reflectance=0.0, emission=0.4)
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = f"{NAME}_tex"
    spec.add_mesh(
        name=f"{NAME}_mesh",
        uservert=np.asarray(verts, float).ravel().tolist(),
        usertexcoord=np.asarray(uv, float).ravel().tolist(),
        userface=np.asarray(faces, int).ravel().tolist(),
    )
    T = board_pose(board)
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(T[:3, :3]).ravel())
    body = spec.worldbody.add_body(name=NAME, pos=T[:3, 3].tolist(), quat=quat.tolist())
    body.add_geom(
        name=NAME,
        type=mujoco.mjtGeom.mjGEOM_MESH,
        meshname=f"{NAME}_mesh",
        material=f"{NAME}_mat",
        contype=0,
        conaffinity=0,
        mass=0.1,
    )
