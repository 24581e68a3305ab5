"""Session-wide test setup: an isolated ROS 2 domain on loopback, and the `ros` harness fixture."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before anything imports rclpy: this session's own DDS domain, discovery on this machine only.
os.environ["ROS_DOMAIN_ID"] = os.environ.get("CLAMP_TEST_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers importable from package tests

import pytest
from ros_harness import RosHarness, RosProcess

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ros():
    """A fresh rclpy context with a background executor; torn down after the test."""
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.shutdown()


@pytest.fixture
def ros_process():
    """Start ROS programs in separate processes: `ros_process(["-m", "pkg.node"])`."""
    started: list[RosProcess] = []

    def start(args, name: str = "") -> RosProcess:
        proc = RosProcess(args, name)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
