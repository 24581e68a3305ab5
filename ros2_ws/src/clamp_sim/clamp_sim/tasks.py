"""Simulated tasks: objects built from primitives, seeded initial poses, instructions, success detectors.

Success judges a settled end state, never a moment passed through: a task's goal configuration
(e.g. the cube on the plate, released) must hold with every task object at rest for SETTLE_S of
sim time, and it stops counting the moment the configuration breaks (a cube that slides across the
plate and off it, or is knocked off after being placed, is a failure). Each step also yields a
progress value in [0, 1] for the CLAMP text prompts (`current_progress` for this state,
`progress` the best reached in the episode). Object names are the words the instruction uses
("red cube", "green plate"); `object_positions` gives their world positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

# Contact parameters of gym-aloha's objects (soft, high-friction boxes that the fingers can hold).
_OBJ = dict(condim=4, solimp=[2, 1, 0.01, 0.5, 2], solref=[0.01, 1], friction=[1, 0.005, 0.0001])
_FINGERS = {
    "left": ("vx300s_left/10_left_gripper_finger", "vx300s_left/10_right_gripper_finger"),
    "right": ("vx300s_right/10_left_gripper_finger", "vx300s_right/10_right_gripper_finger"),
}


def _inertia(body, mass: float) -> None:
    # gym-aloha's compiler only takes inertia from geom groups 4-5, so objects carry explicit
    # inertials, with gym-aloha's values (0.002 is large for a 50 g cube but keeps grasps calm).
    body.explicitinertial = True
    body.mass = mass
    body.inertia = [0.002, 0.002, 0.002]
    body.ipos, body.iquat = [0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]  # MjSpec would copy the body pos here


def _add_free_box(spec: mujoco.MjSpec, body: str, pos, geoms: list[tuple[str, list, list, list]], mass: float):
    """A free body of box geoms (name, half-size, local pos, rgba)."""
    b = spec.worldbody.add_body(name=body, pos=list(pos))
    b.add_freejoint(name=f"{body}_joint")
    _inertia(b, mass)
    for name, size, gpos, rgba in geoms:
        b.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=gpos, rgba=rgba, **_OBJ)
    return b


def contact_pairs(model: mujoco.MjModel, data: mujoco.MjData) -> set[tuple[str, str]]:
    """Unordered geom-name pairs in contact (both orders present)."""
    pairs = set()
    for c in data.contact[: data.ncon]:
        a, b = model.geom(c.geom1).name, model.geom(c.geom2).name
        pairs.add((a, b))
        pairs.add((b, a))
    return pairs


def _touch(pairs, geoms_a, geoms_b) -> bool:
    return any((a, b) in pairs for a in geoms_a for b in geoms_b)


SETTLE_S = 0.5  # the goal configuration must hold this long (sim time), objects at rest
REST_LINEAR = 0.02  # m/s: an object slower than this is at rest
REST_ANGULAR = 0.5  # rad/s
GOAL = 1.0  # stage() value of the goal configuration
TRANSIENT = 0.9  # progress credited to a goal configuration that has not (yet) settled


@dataclass
class Task:
    name: str = ""
    description: str = ""
    objects: dict[str, str] = field(default_factory=dict)  # object name -> body name
    succeeded: bool = False  # the goal configuration has held, at rest, for SETTLE_S up to now
    progress: float = 0.0  # best progress reached this episode (1.0 only once settled)
    current_progress: float = 0.0  # progress of the current state (goal configuration: 1.0)
    goal_since: float | None = None  # sim time since which the goal has held at rest

    def add_objects(self, spec: mujoco.MjSpec) -> None:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Body name -> xyz of the initial pose."""
        raise NotImplementedError

    def stage(self, pairs, model, data) -> float:
        """Progress in [0, 1] of the current state; GOAL (1.0): the goal configuration holds (a success
        once it has held with the objects at rest for SETTLE_S)."""
        raise NotImplementedError

    def reset(self, model, data, rng: np.random.Generator) -> None:
        self.succeeded, self.progress, self.current_progress, self.goal_since = False, 0.0, 0.0, None
        for body, xyz in self.sample(rng).items():
            self.place(model, data, body, xyz)

    def place(self, model, data, body: str, xyz, quat=(1.0, 0.0, 0.0, 0.0)) -> None:
        """Put a free body (or a fixture: a mocap body) at a pose (zero velocity)."""
        mocap = model.body_mocapid[model.body(body).id]
        if mocap >= 0:
            data.mocap_pos[mocap], data.mocap_quat[mocap] = xyz, quat
            return
        j = model.joint(f"{body}_joint").id
        adr, dadr = model.jnt_qposadr[j], model.jnt_dofadr[j]
        data.qpos[adr : adr + 7] = [*xyz, *quat]
        data.qvel[dadr : dadr + 6] = 0.0

    def at_rest(self, model, data) -> bool:
        """Every joint of every task object (free, slide, hinge) moves slower than the rest thresholds."""
        for body in set(self.objects.values()):
            b = model.body(body).id
            for j in range(model.body_jntadr[b], model.body_jntadr[b] + model.body_jntnum[b]):
                v = data.qvel[model.jnt_dofadr[j] :]
                kind = model.jnt_type[j]
                if kind == mujoco.mjtJoint.mjJNT_FREE:
                    if np.linalg.norm(v[:3]) > REST_LINEAR or np.linalg.norm(v[3:6]) > REST_ANGULAR:
                        return False
                elif kind == mujoco.mjtJoint.mjJNT_SLIDE and abs(v[0]) > REST_LINEAR:
                    return False
                elif kind == mujoco.mjtJoint.mjJNT_HINGE and abs(v[0]) > REST_ANGULAR:
                    return False
        return True

    def update(self, model, data) -> None:
        p = float(self.stage(contact_pairs(model, data), model, data))
        goal = p >= GOAL and self.at_rest(model, data)
        if not goal:
            self.goal_since = None
        elif self.goal_since is None:
            self.goal_since = float(data.time)
        # tolerance: sim time is a float sum of physics steps
        self.succeeded = goal and float(data.time) - self.goal_since >= SETTLE_S - 1e-6
        self.current_progress = p
        self.progress = max(self.progress, GOAL if self.succeeded else min(p, TRANSIENT))

    def success(self, model, data) -> bool:
        return self.succeeded

    def object_pose(self, model, data, obj: str) -> np.ndarray:
        """World pose (xyz, quat wxyz) of a task object by its name."""
        b = model.body(self.objects[obj]).id
        return np.concatenate([data.xpos[b], data.xquat[b]])

    def object_positions(self, model, data) -> dict[str, list[float]]:
        return {obj: [round(float(v), 4) for v in data.xpos[model.body(b).id]] for obj, b in self.objects.items()}


class TransferCube(Task):
    """gym-aloha's bimanual transfer: the right arm picks the cube and hands it to the left arm."""

    def __init__(self) -> None:
        super().__init__(
            "transfer_cube",
            "pick up the red cube with the right arm and hand it over to the left arm",
            {"red cube": "red_cube"},
        )

    def add_objects(self, spec):
        _add_free_box(spec, "red_cube", (0.1, 0.5, 0.02), [("red_box", [0.02] * 3, [0, 0, 0], [1, 0, 0, 1])], 0.05)

    def sample(self, rng):
        return {"red_cube": np.array([rng.uniform(0.0, 0.2), rng.uniform(0.4, 0.6), 0.02])}

    def stage(self, pairs, model, data):
        box = ("red_box",)
        left, right = _touch(pairs, box, _FINGERS["left"]), _touch(pairs, box, _FINGERS["right"])
        on_table = ("red_box", "table") in pairs
        if left and not right and not on_table:
            return GOAL  # handed over: only the left arm holds it
        if left and right and not on_table:
            return 0.75  # both hold it
        if right and not on_table:
            return 0.5  # lifted by the right arm
        return 0.25 if right else 0.0


class Insertion(Task):
    """gym-aloha's peg insertion: left arm holds the socket, right arm inserts the peg until it touches the pin."""

    SOCKET = ("socket-1", "socket-2", "socket-3", "socket-4")

    def __init__(self) -> None:
        super().__init__(
            "insertion",
            "pick up the red peg and the blue socket and insert the peg into the socket",
            {"red peg": "red_peg", "blue socket": "blue_socket"},
        )

    def add_objects(self, spec):
        _add_free_box(
            spec, "red_peg", (0.15, 0.5, 0.01), [("red_peg", [0.06, 0.01, 0.01], [0, 0, 0], [1, 0, 0, 1])], 0.05
        )
        blue, red = [0, 0, 1, 1], [1, 0, 0, 1]
        _add_free_box(
            spec,
            "blue_socket",
            (-0.15, 0.5, 0.02),
            [
                ("socket-1", [0.06, 0.018, 0.002], [0, 0, -0.018], blue),
                ("socket-2", [0.06, 0.018, 0.002], [0, 0, 0.018], blue),
                ("socket-3", [0.06, 0.002, 0.018], [0, 0.02, 0], blue),
                ("socket-4", [0.06, 0.002, 0.018], [0, -0.02, 0], blue),
                ("pin", [0.04, 0.01, 0.01], [0, 0, 0], red),
            ],
            0.05,
        )

    def sample(self, rng):
        peg = np.array([rng.uniform(0.1, 0.2), rng.uniform(0.4, 0.6), 0.01])
        socket = np.array([rng.uniform(-0.2, -0.1), rng.uniform(0.4, 0.6), 0.02])
        return {"red_peg": peg, "blue_socket": socket}

    def peg_in_socket_frame(self, model, data) -> np.ndarray:
        s = model.body("blue_socket").id
        return data.xmat[s].reshape(3, 3).T @ (data.xpos[model.body("red_peg").id] - data.xpos[s])

    def inserted(self, model, data, depth: float = 0.106) -> bool:
        """The peg is in the socket's bore, its end within 6 mm of the pin (or touching it)."""
        rel = self.peg_in_socket_frame(model, data)
        # peg half-length 0.06 + pin half-length 0.04; bore clearance 0.018 - 0.01
        return 0.09 < abs(rel[0]) < depth and abs(rel[1]) < 0.009 and abs(rel[2]) < 0.009

    def stage(self, pairs, model, data):
        peg = ("red_peg",)
        lifted = ("red_peg", "table") not in pairs and not _touch(pairs, self.SOCKET + ("pin",), ("table",))
        if lifted and (("red_peg", "pin") in pairs or self.inserted(model, data)):
            return GOAL  # inserted to the pin, both held up
        held_peg = _touch(pairs, peg, _FINGERS["right"]) and ("red_peg", "table") not in pairs
        held_socket = _touch(pairs, self.SOCKET, _FINGERS["left"]) and not _touch(pairs, self.SOCKET, ("table",))
        # entering: touching the socket, or lined up with the bore and in its mouth
        if held_peg and held_socket and (_touch(pairs, peg, self.SOCKET) or self.inserted(model, data, 0.16)):
            return 0.75
        return 0.25 * held_peg + 0.25 * held_socket


class PlaceCube(Task):
    """A CLAMP-style placement: the right arm puts the cube on the plate (and lets go)."""

    PLATE_RADIUS = 0.07

    def __init__(self) -> None:
        super().__init__(
            "place_cube", "put the red cube on the green plate", {"red cube": "red_cube", "green plate": "green_plate"}
        )

    def add_objects(self, spec):
        _add_free_box(spec, "red_cube", (0.15, 0.5, 0.02), [("red_box", [0.02] * 3, [0, 0, 0], [1, 0, 0, 1])], 0.05)
        plate = spec.worldbody.add_body(name="green_plate", pos=[-0.05, 0.5, 0.005])
        plate.add_freejoint(name="green_plate_joint")
        _inertia(plate, 0.3)
        plate.add_geom(
            name="plate",
            type=mujoco.mjtGeom.mjGEOM_CYLINDER,
            size=[self.PLATE_RADIUS, 0.005, 0],
            rgba=[0.1, 0.7, 0.2, 1],
            condim=4,
            friction=[1, 0.005, 0.0001],
        )

    def sample(self, rng):
        cube = np.array([rng.uniform(0.1, 0.2), rng.uniform(0.42, 0.6), 0.02])
        plate = np.array([rng.uniform(-0.12, -0.02), rng.uniform(0.42, 0.6), 0.005])
        return {"red_cube": cube, "green_plate": plate}

    def stage(self, pairs, model, data):
        box = ("red_box",)
        held = _touch(pairs, box, _FINGERS["right"] + _FINGERS["left"])
        cube = data.xpos[model.body("red_cube").id]
        plate = data.xpos[model.body("green_plate").id]
        on_plate = ("red_box", "plate") in pairs and np.linalg.norm(cube[:2] - plate[:2]) < self.PLATE_RADIUS
        lifted = ("red_box", "table") not in pairs
        if on_plate and not held and lifted:
            return GOAL  # on the plate, released
        if held and lifted:
            over = np.linalg.norm(cube[:2] - plate[:2]) < self.PLATE_RADIUS
            return 0.75 if over else 0.5  # carried (above the plate)
        return 0.25 if held else 0.0


def _held(pairs, geoms) -> bool:
    return _touch(pairs, geoms, _FINGERS["right"] + _FINGERS["left"])


class StackCube(Task):
    """Stack the small red cube on the larger blue cube (3D precision: 2.5 cm in xy, on its top face)."""

    RED, BLUE = 0.02, 0.025  # half sizes

    def __init__(self) -> None:
        super().__init__(
            "stack_cube", "stack the red cube on the blue cube", {"red cube": "red_cube", "blue cube": "blue_cube"}
        )

    def add_objects(self, spec):
        _add_free_box(
            spec, "red_cube", (0.15, 0.5, self.RED), [("red_box", [self.RED] * 3, [0, 0, 0], [1, 0, 0, 1])], 0.05
        )
        _add_free_box(
            spec, "blue_cube", (-0.05, 0.5, self.BLUE), [("blue_box", [self.BLUE] * 3, [0, 0, 0], [0, 0.2, 1, 1])], 0.2
        )

    def sample(self, rng):
        red = np.array([rng.uniform(0.1, 0.2), rng.uniform(0.42, 0.6), self.RED])
        blue = np.array([rng.uniform(-0.12, -0.02), rng.uniform(0.42, 0.6), self.BLUE])
        return {"red_cube": red, "blue_cube": blue}

    def stage(self, pairs, model, data):
        red, blue = data.xpos[model.body("red_cube").id], data.xpos[model.body("blue_cube").id]
        held, lifted = _held(pairs, ("red_box",)), ("red_box", "table") not in pairs
        aligned = np.linalg.norm(red[:2] - blue[:2]) < self.BLUE
        on_top = red[2] - blue[2] > self.RED + self.BLUE - 0.005
        blue_down = ("blue_box", "table") in pairs and not _held(pairs, ("blue_box",))
        if ("red_box", "blue_box") in pairs and aligned and on_top and blue_down and not held and lifted:
            return GOAL  # stacked, released, the blue cube still on the table
        if held and lifted:
            return 0.75 if aligned and red[2] > blue[2] + self.BLUE else 0.5
        return 0.25 if held else 0.0


class CubeInBin(Task):
    """Put the red cube into an open blue bin: lift it over the 6 cm walls and drop it through the
    8 cm opening (2 cm either side of the 4 cm cube)."""

    INNER, WALL, HEIGHT = 0.04, 0.005, 0.06  # inner half width, wall half thickness, wall height

    def __init__(self) -> None:
        super().__init__(
            "cube_in_bin", "put the red cube into the blue bin", {"red cube": "red_cube", "blue bin": "blue_bin"}
        )

    def add_objects(self, spec):
        _add_free_box(spec, "red_cube", (0.15, 0.5, 0.02), [("red_box", [0.02] * 3, [0, 0, 0], [1, 0, 0, 1])], 0.05)
        a, w, h = self.INNER, self.WALL, self.HEIGHT / 2
        blue = [0.1, 0.3, 0.9, 1]
        _add_free_box(
            spec,
            "blue_bin",
            (-0.05, 0.5, 0.0),
            [
                ("bin_floor", [a + 2 * w, a + 2 * w, w], [0, 0, w], blue),
                ("bin_wall_px", [w, a + 2 * w, h], [a + w, 0, h], blue),
                ("bin_wall_nx", [w, a + 2 * w, h], [-a - w, 0, h], blue),
                ("bin_wall_py", [a, w, h], [0, a + w, h], blue),
                ("bin_wall_ny", [a, w, h], [0, -a - w, h], blue),
            ],
            0.5,
        )

    BIN = ("bin_floor", "bin_wall_px", "bin_wall_nx", "bin_wall_py", "bin_wall_ny")

    def sample(self, rng):
        cube = np.array([rng.uniform(0.1, 0.2), rng.uniform(0.42, 0.6), 0.02])
        bin_ = np.array([rng.uniform(-0.12, -0.02), rng.uniform(0.42, 0.6), 0.0])
        return {"red_cube": cube, "blue_bin": bin_}

    def inside(self, model, data) -> bool:
        b = model.body("blue_bin").id
        rel = data.xmat[b].reshape(3, 3).T @ (data.xpos[model.body("red_cube").id] - data.xpos[b])
        return bool(np.all(np.abs(rel[:2]) < self.INNER) and rel[2] < self.HEIGHT)

    def stage(self, pairs, model, data):
        held = _held(pairs, ("red_box",))
        if self.inside(model, data) and not held and not _held(pairs, self.BIN):
            return GOAL  # in the bin, released
        cube, bin_ = data.xpos[model.body("red_cube").id], data.xpos[model.body("blue_bin").id]
        if held and ("red_box", "table") not in pairs:
            over = np.all(np.abs(cube[:2] - bin_[:2]) < self.INNER) and cube[2] > self.HEIGHT
            return 0.75 if over else 0.5
        return 0.25 if held else 0.0


class OpenDrawer(Task):
    """Pull the drawer of a small cabinet open by its handle (at least 9 cm) and let go. The cabinet is
    fixed to the table (a mocap body at a seeded pose); the drawer slides on a damped joint."""

    OPEN = 0.09  # m of travel that counts as open
    TRAVEL = 0.14
    HALF = (0.08, 0.1, 0.05)  # cabinet half sizes (x depth, y width, z height)
    HANDLE_OFF = 0.045  # handle bar centre in front of the drawer front

    def __init__(self) -> None:
        super().__init__(
            "open_drawer",
            "open the drawer by pulling its handle",
            {"drawer": "drawer", "drawer handle": "drawer_handle", "cabinet": "cabinet"},
        )

    def add_objects(self, spec):
        dx, dy, dz = self.HALF
        wood, front = [0.55, 0.4, 0.25, 1], [0.85, 0.75, 0.2, 1]
        t = 0.005  # wall half thickness
        cab = spec.worldbody.add_body(name="cabinet", pos=[-0.05, 0.5, dz], mocap=True)
        for name, size, pos in (
            ("cabinet_top", [dx, dy, t], [0, 0, dz - t]),
            ("cabinet_bottom", [dx, dy, t], [0, 0, -dz + t]),
            ("cabinet_back", [t, dy, dz], [-dx + t, 0, 0]),
            ("cabinet_left", [dx, t, dz], [0, dy - t, 0]),
            ("cabinet_right", [dx, t, dz], [0, -dy + t, 0]),
        ):
            cab.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=pos, rgba=wood)
        # The drawer slides on its joint inside the cabinet; its front covers the opening, so contacts
        # between the two are excluded (a mocap parent is welded to the world: no parent-child filter).
        drawer = cab.add_body(name="drawer", pos=[0.0, 0.0, 0.0])
        spec.add_exclude(bodyname1="cabinet", bodyname2="drawer")
        drawer.add_joint(
            name="drawer_joint",
            type=mujoco.mjtJoint.mjJNT_SLIDE,
            axis=[1, 0, 0],
            range=[0.0, self.TRAVEL],
            damping=8.0,
            frictionloss=0.5,
            armature=0.05,
        )
        _inertia(drawer, 0.3)
        ix, iy, iz = dx - 0.015, dy - 0.015, dz - 0.015
        for name, size, pos, rgba in (
            ("drawer_bottom", [ix, iy, t], [0.0, 0, -iz + t], wood),
            ("drawer_front", [t, dy - 0.006, dz - 0.006], [dx - t, 0, 0], front),
            ("drawer_back", [t, iy, iz], [-ix + t, 0, 0], wood),
            ("drawer_left", [ix, t, iz], [0, iy - t, 0], wood),
            ("drawer_right", [ix, t, iz], [0, -iy + t, 0], wood),
        ):
            drawer.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=pos, rgba=rgba, **_OBJ)
        # a vertical bar 4 cm off the front (room for the fingertips), as thick as insertion's peg
        handle = drawer.add_body(name="drawer_handle", pos=[dx + self.HANDLE_OFF, 0, 0.0])
        _inertia(handle, 0.02)
        handle.add_geom(
            name="handle_bar", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.01, 0.01, 0.035], rgba=[0.2, 0.2, 0.2, 1], **_OBJ
        )
        for side in (-1, 1):
            handle.add_geom(
                name=f"handle_post_{'l' if side > 0 else 'r'}",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=[self.HANDLE_OFF / 2, 0.005, 0.005],
                pos=[-self.HANDLE_OFF / 2, 0, side * 0.03],
                rgba=[0.2, 0.2, 0.2, 1],
                **_OBJ,
            )

    HANDLE = ("handle_bar", "handle_post_l", "handle_post_r")

    def sample(self, rng):
        return {"cabinet": np.array([rng.uniform(-0.12, -0.02), rng.uniform(0.44, 0.58), self.HALF[2]])}

    def opening(self, model, data) -> float:
        return float(data.qpos[model.jnt_qposadr[model.joint("drawer_joint").id]])

    def stage(self, pairs, model, data):
        held = _held(pairs, self.HANDLE)
        frac = min(self.opening(model, data) / self.OPEN, 1.0)
        if frac >= 1.0 and not held and not _held(pairs, ("drawer_front",)):
            return GOAL  # open, released
        if held:
            return 0.25 + 0.5 * frac
        return 0.5 * frac


TASKS = {
    "transfer_cube": TransferCube,
    "insertion": Insertion,
    "place_cube": PlaceCube,
    "stack_cube": StackCube,
    "cube_in_bin": CubeInBin,
    "open_drawer": OpenDrawer,
}


def make_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]()
