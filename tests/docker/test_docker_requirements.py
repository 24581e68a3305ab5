"""The images' Python dependencies: the Humble (3.10) lock is fresh, pinned, numpy 1.x, truthful about
where it differs from constraints.txt, and covers every third-party import of the code each image runs."""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from docker_static import DOCKER, IMAGES, REPO, canon, parse, pins, requirement_lines
from packaging.requirements import Requirement
from packaging.version import Version

ROBOT_IN = REPO / "requirements/robot.txt"
LOCK = REPO / "requirements/robot-py310.txt"
CONSTRAINTS = REPO / "requirements/constraints.txt"
ROS2_WS_PACKAGES = {p.name for p in (REPO / "ros2_ws/src").iterdir() if (p / "package.xml").is_file()}
RELOCK = "regenerate it: python docker/lock_robot.py (needs PyPI, ~2-4 min)"


def _lock_module():
    spec = importlib.util.spec_from_file_location("lock_robot", DOCKER / "lock_robot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lock_is_generated_from_the_current_robot_txt():
    header = re.search(r"^# input-sha256: (\w+)$", LOCK.read_text(), re.M)
    assert header, f"{LOCK.name} has no input-sha256 header; {RELOCK}"
    assert header.group(1) == _lock_module().input_digest(ROBOT_IN.read_text()), f"robot.txt changed; {RELOCK}"


def test_lock_pins_every_top_level_requirement_within_its_range():
    locked = pins(LOCK)
    for line in requirement_lines(ROBOT_IN):
        req = Requirement(line)
        if canon(req.name) == "torch":
            continue  # installed from the PyTorch index by robot.Dockerfile
        assert canon(req.name) in locked, f"{req.name} from robot.txt is not in {LOCK.name}; {RELOCK}"
        assert req.specifier.contains(locked[canon(req.name)], prereleases=True), (
            f"{req.name}=={locked[canon(req.name)]} violates robot.txt's {req.specifier}; {RELOCK}"
        )


def test_lock_is_exact_numpy1_and_free_of_torch_and_cuda_wheels():
    lines = requirement_lines(LOCK)
    names = [canon(ln.split("==")[0]) for ln in lines]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.+!-]+", ln) for ln in lines), "every line must be name==version"
    assert len(names) == len(set(names)), "duplicate pins"
    banned = [n for n in names if n in ("torch", "setuptools", "triton") or n.startswith(("nvidia-", "cuda-"))]
    assert not banned, f"{banned} must not be in the lock (see NOT_LOCKED in docker/lock_robot.py)"
    # Humble's apt message modules and cv_bridge are compiled against numpy 1.x
    assert Version(pins(LOCK)["numpy"]).major == 1


def test_lock_header_lists_exactly_the_versions_that_differ_from_constraints():
    locked, three11 = pins(LOCK), pins(CONSTRAINTS)
    actual = {n for n in locked if n in three11 and locked[n] != three11[n]}
    declared = {}
    for name, version, other in re.findall(
        r"^#   differs: (\S+) (\S+) \(constraints\.txt: (\S+)\)$", LOCK.read_text(), re.M
    ):
        declared[name] = (version, other)
    assert set(declared) == actual, (
        f"constraints.txt and the robot lock drifted (declared {sorted(declared)}, actual {sorted(actual)}); {RELOCK}"
    )
    for name, (version, other) in declared.items():
        assert (locked[name], three11[name]) == (version, other), f"{name}: header out of date; {RELOCK}"
    # the differences are the 3.10 ones, not arbitrary: most shared packages keep this machine's version
    shared = [n for n in locked if n in three11]
    assert len(actual) < len(shared) / 2, f"{len(actual)} of {len(shared)} shared pins differ"


# ------------------------------------------------------------------------------------- import coverage
ROS_MODULES = {  # Python packages that ROS 2 Humble installs from apt (ros-base + rosdep of package.xml)
    "rclpy", "launch", "launch_ros", "ament_index_python", "tf2_ros", "rosbag2_py", "cv_bridge",
    "message_filters", "sensor_msgs_py", "rcl_interfaces", "builtin_interfaces", "std_msgs", "std_srvs",
    "sensor_msgs", "geometry_msgs", "trajectory_msgs", "diagnostic_msgs", "tf2_msgs", "rosgraph_msgs",
    "visualization_msgs", "interbotix_xs_msgs", "setuptools", "pytest",
}  # fmt: skip


def _imports_of(f: Path) -> list[str]:
    mods = []
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            mods += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.append(node.module)
    return mods


def _third_party_imports(roots: list[Path], local: set[str], skip_ros_nodes: bool = False) -> dict[str, str]:
    """Top-level module -> first file importing it, for modules neither stdlib nor in `local`."""
    found: dict[str, str] = {}
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            if "test" in f.relative_to(root).parts[:-1] or f.name.startswith("test_"):
                continue  # tests run here, not in the image (colcon test uses apt pytest)
            mods = _imports_of(f)
            if skip_ros_nodes and any(m.split(".")[0] == "rclpy" for m in mods):
                continue  # a ROS node adapter: the training image runs none
            for mod in mods:
                top = mod.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local and top != "__future__":
                    found.setdefault(top, str(f.relative_to(REPO)))
    return found


# Imported only on behalf of ROS nodes, which the training image never runs; each with the reason.
TRAIN_NODE_ONLY: dict[str, str] = {}

# Imported only by development tools that never run on the robot; each with the reason.
ROBOT_DEV_ONLY = {
    "open3d": "the Open3D baseline of clamp_perception.bench (`make bench`), 300 MB the robot does not need",
}


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def _distributions(module: str, where: str) -> set[str]:
    dists = _packages_distributions().get(module)
    if not dists:
        pytest.fail(f"{where} imports {module!r}, which no installed distribution provides; add it to requirements")
    return {canon(d) for d in dists}


def _closure(names: set[str]) -> set[str]:
    """Installed distributions reachable from `names` through their (non-extra) requirements."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [canon(Requirement(r).name) for r in requires if "extra ==" not in r]
    return seen


def test_robot_image_provides_every_import_of_ros2_ws():
    provided = set(pins(LOCK)) | {"torch"}
    # clamp_training is not in the robot image: an import of it from ros2_ws must show up here
    imports = _third_party_imports(sorted((REPO / "ros2_ws/src").glob("*/clamp_*")), ROS2_WS_PACKAGES)
    assert "numpy" in imports, "the scan found no imports at all"
    missing = []
    for module, where in sorted(imports.items()):
        if module in ROS_MODULES or module in ROBOT_DEV_ONLY:
            continue
        if not _distributions(module, where) & provided:
            missing.append(f"{module} (imported by {where})")
    assert not missing, f"not installed in the robot image: {missing}; add to requirements/robot.txt, {RELOCK}"


def test_training_image_provides_every_import_of_what_it_installs():
    train = parse(IMAGES["train"])
    run = next(r for _, r in train.runs if "base.in" in r)
    dropped = set(re.search(r"grep -vE '\^\(([^)]*)\)\$'", run).group(1).split("|"))
    top = {canon(Requirement(ln).name) for ln in requirement_lines(REPO / "requirements/base.in")}
    assert dropped < top, f"train.Dockerfile filters packages base.in does not have: {dropped - top}"
    provided = _closure(top - {canon(d) for d in dropped}) | {"torch"}
    copied = [REPO / src for cp in train.copies for src in cp.sources if src.startswith(("ros2_ws", "training"))]
    roots = [p / p.name if (p / p.name).is_dir() else p / "clamp_training" for p in copied]
    local = {r.name for r in roots if r.is_dir()}
    assert local == {"clamp_core", "clamp_perception", "clamp_policy", "clamp_sim", "clamp_training"}, local
    imports = _third_party_imports([r for r in roots if r.is_dir()], local, skip_ros_nodes=True)
    missing = []
    for module, where in sorted(imports.items()):
        if module in ROS_MODULES or module in TRAIN_NODE_ONLY:
            continue  # only the packages' ROS nodes import these; the training image runs none
        if not _distributions(module, where) & provided:
            missing.append(f"{module} (imported by {where})")
    assert not missing, f"not installed in the training image: {missing}"
