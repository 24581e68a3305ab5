"""Every ROS package in ros2_ws is well-formed, importable, installed, and its entry points resolve."""

import importlib
import importlib.metadata as md
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent.name for p in (REPO / "ros2_ws/src").glob("*/package.xml"))


def test_layout_has_the_five_packages():
    assert PACKAGES == ["clamp_bringup", "clamp_core", "clamp_perception", "clamp_policy", "clamp_sim"]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_manifest_and_marker(package):
    src = REPO / "ros2_ws/src" / package
    root = ET.parse(src / "package.xml").getroot()
    assert root.findtext("name") == package
    assert root.find("export/build_type").text == "ament_python"
    assert (src / "resource" / package).exists(), "ament resource marker missing"
    install_share = REPO / "ros2_ws/install" / package / "share" / package / "package.xml"
    assert install_share.exists(), f"{package} not installed by colcon; run `make setup`"


@pytest.mark.parametrize("package", PACKAGES + ["clamp_training", "clamp_demo"])
def test_imports_and_entry_points_resolve(package):
    module = importlib.import_module(package)
    assert module.__doc__, f"{package} needs a docstring saying what it is"
    dist = md.distribution(package)
    for ep in dist.entry_points:
        if ep.group == "console_scripts":
            assert callable(ep.load()), f"{package}: entry point {ep.name} -> {ep.value} is not callable"
            if package in PACKAGES:  # `ros2 run` looks in lib/<package>/
                assert (REPO / "ros2_ws/install" / package / "lib" / package / ep.name).exists(), ep.name
