"""The package graph reads top-down and every package declares what it imports.

- ROS packages (package.xml) and the two Python packages on top form a DAG:
  clamp_core <- clamp_perception, clamp_policy, clamp_sim <- clamp_bringup; clamp_training uses core,
  perception, policy and sim; clamp_demo (`make demo`) sits on top of everything. No ROS package
  imports clamp_training or clamp_demo, and no node imports clamp_bringup.
- Every ROS package a package imports (rclpy, message packages, other clamp packages) is declared in
  its package.xml, and every ROS package it declares is imported: exactly what the code uses, as in
  ros2/demos. Third-party Python modules must be declared by their rosdep key or pinned in
  requirements/base.in.
- No import cycle between modules, counting imports inside functions too.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "ros2_ws/src"

# package -> the first-party packages it may import
ALLOWED = {
    "clamp_core": set(),
    "clamp_perception": {"clamp_core"},
    "clamp_policy": {"clamp_core"},
    "clamp_sim": {"clamp_core"},
    "clamp_bringup": {"clamp_core", "clamp_perception", "clamp_policy", "clamp_sim"},
    "clamp_training": {"clamp_core", "clamp_perception", "clamp_policy", "clamp_sim"},
    "clamp_demo": {"clamp_core", "clamp_perception", "clamp_policy", "clamp_sim", "clamp_bringup", "clamp_training"},
}
PACKAGE_DIRS = {p: SRC / p / p for p in ALLOWED if (SRC / p / "package.xml").exists()}
PACKAGE_DIRS["clamp_training"] = REPO / "training/clamp_training"
PACKAGE_DIRS["clamp_demo"] = REPO / "demo/clamp_demo"
ROS_PACKAGES = sorted(p for p in PACKAGE_DIRS if (SRC / p / "package.xml").exists())

# ROS packages that are not message packages but are imported from Python
ROS_PYTHON = {"rclpy", "ament_index_python", "launch", "launch_ros", "tf2_ros", "rosidl_runtime_py"}
# ROS packages started (not imported) by the launch files
ROS_LAUNCHED = {"realsense2_camera", "interbotix_xsarm_control"}
# third-party module -> rosdep key a package.xml declares it with
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib",
    "tqdm": "python3-tqdm",
    "cv2": "python3-opencv",
    "scipy": "python3-scipy",
}


def is_ros_package(name: str) -> bool:
    return (
        name in ROS_PYTHON
        or name in ROS_LAUNCHED
        or name.endswith(("_msgs", "_srvs", "_interfaces"))
        or name in ALLOWED
    )


def modules_of(package: str) -> dict[str, Path]:
    root = PACKAGE_DIRS[package]
    out = {}
    for f in root.rglob("*.py"):
        rel = f.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


ALL_MODULES = {m: f for p in PACKAGE_DIRS for m, f in modules_of(p).items()}


def imports_of(module: str, path: Path) -> set[str]:
    """Absolute names of every module imported anywhere in the file (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    here = module if is_pkg else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:  # `from pkg import submodule` imports the submodule
                names.add(f"{base}.{a.name}" if f"{base}.{a.name}" in ALL_MODULES else base)
    return names


def declared(package: str) -> set[str]:
    root = ET.parse(SRC / package / "package.xml").getroot()
    return {e.text.strip() for tag in ("depend", "exec_depend") for e in root.iter(tag)}


@pytest.mark.parametrize("package", sorted(PACKAGE_DIRS))
def test_first_party_imports_follow_the_dag(package):
    bad = []
    for module, path in modules_of(package).items():
        for name in imports_of(module, path):
            top = name.split(".")[0]
            if top in ALLOWED and top != package and top not in ALLOWED[package]:
                bad.append(f"{module} imports {name}")
    assert not bad, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("package", ROS_PACKAGES)
def test_package_xml_declares_exactly_the_ros_packages_used(package):
    used: set[str] = set()
    third_party: set[str] = set()
    for module, path in modules_of(package).items():
        for name in imports_of(module, path):
            top = name.split(".")[0]
            if top == package:
                continue
            if is_ros_package(top):
                used.add(top)
            elif top not in STDLIB:
                third_party.add(top)
    if package == "clamp_bringup":  # what its launch files start is a run-time dependency too
        used |= launched_packages() - {package}
    decl = declared(package)
    ros_decl = {d for d in decl if is_ros_package(d)}
    assert used <= decl, f"{package}/package.xml lacks <exec_depend> for {sorted(used - decl)}"
    assert ros_decl <= used, f"{package}/package.xml declares {sorted(ros_decl - used)} but never imports them"
    base_in = (REPO / "requirements/base.in").read_text().lower()
    undeclared = [
        m for m in sorted(third_party) if ROSDEP_KEYS.get(m) not in decl and m.lower().replace("_", "-") not in base_in
    ]
    assert not undeclared, f"{package} imports {undeclared}: declare the rosdep key or pin it in requirements/base.in"


def launched_packages() -> set[str]:
    from clamp_bringup.graph import MODES, build_graph
    from clamp_core.profile import profile_names

    out = set()
    for name in profile_names():
        for mode in MODES:
            graph = build_graph(name, mode)
            out |= {n.package for n in graph.nodes} | {i.package for i in graph.includes}
    return out


def test_no_node_imports_clamp_bringup():
    bad = [
        m
        for p in ("clamp_perception", "clamp_policy", "clamp_sim")
        for m, f in modules_of(p).items()
        if any(n.split(".")[0] == "clamp_bringup" for n in imports_of(m, f))
    ]
    assert not bad, f"nodes get their settings as ROS parameters, never from clamp_bringup: {bad}"


def test_no_import_cycles_between_modules():
    graph = {m: {n for n in imports_of(m, f) if n in ALL_MODULES and n != m} for m, f in ALL_MODULES.items()}
    # a package's __init__ that re-exports its submodules is not a cycle with them
    for m in graph:
        graph[m] = {n for n in graph[m] if not (m.startswith(n + ".") and ALL_MODULES[n].name == "__init__.py")}
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_cycle_and_a_missing_dependency():
    # the test above cannot pass vacuously: a two-module cycle is found
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]
    assert is_ros_package("sensor_msgs") and is_ros_package("clamp_core") and not is_ros_package("numpy")


STDLIB = set(__import__("sys").stdlib_module_names) | {"__future__"}


def defines_cli(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    return has_main and "argparse" in {n.split(".")[0] for n in imports_of("", path)}


# clamp_training's commands are dispatched by its __main__ and move to their own modules with the one
# training pipeline (issue 14); every other package is held to the rule already.
CLI_RULE_PACKAGES = list(PACKAGE_DIRS)


@pytest.mark.parametrize("package", CLI_RULE_PACKAGES)
def test_command_lines_live_in_modules_nothing_imports(package):
    importers: dict[str, list[str]] = {}
    for m, f in ALL_MODULES.items():
        for n in imports_of(m, f):
            if not m.endswith("__main__"):  # a package's __main__ is its command line
                importers.setdefault(n, []).append(m)
    bad = [
        f"{m} (imported by {sorted(importers[m])})"
        for m, f in modules_of(package).items()
        if defines_cli(f) and importers.get(m) and not f.name == "__main__.py"
    ]
    assert not bad, "a library module that others import holds a command line; move main() out:\n" + "\n".join(bad)
