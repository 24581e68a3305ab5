"""Session-wide test setup: an isolated ROS 2 domain on loopback, and the `ros` harness fixture."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _claim_domain_id() -> str:
    """A ROS_DOMAIN_ID no other test session on this machine holds (flock on a file per id).

    Sessions of several people run side by side here; two in one domain see each other's topics
    (1 + pid % 200 collided with probability 1/200 per pair). The lock lives as long as this process.
    """
    import fcntl
    import tempfile

    for domain in [*range(1 + os.getpid() % 200, 201), *range(1, 1 + os.getpid() % 200)]:
        f = open(Path(tempfile.gettempdir()) / f"clamp_test_ros_domain_{domain}.lock", "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        if not _domain_is_quiet(domain):  # e.g. processes leaked by a killed session: they would talk to us
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
            continue
        _DOMAIN_LOCK.append(f)  # held (open) until the session ends
        return str(domain)
    raise RuntimeError("all ROS domain ids 1..200 are held by other test sessions; set CLAMP_TEST_DOMAIN_ID")


def _domain_is_quiet(domain: int, listen_s: float = 1.0) -> bool:
    """No other ROS participant on this machine in `domain` (listened for `listen_s` of discovery)."""
    import time

    import rclpy

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        node = rclpy.create_node("clamp_test_domain_probe", context=context)
        deadline = time.monotonic() + listen_s
        while time.monotonic() < deadline:
            if any(name != "clamp_test_domain_probe" for name, _ in node.get_node_names_and_namespaces()):
                return False
            time.sleep(0.1)
        node.destroy_node()
        return True
    finally:
        rclpy.shutdown(context=context)


_DOMAIN_LOCK: list = []
# Before anything imports rclpy: this session's own DDS domain, discovery on this machine only.
os.environ["ROS_DOMAIN_ID"] = os.environ.get("CLAMP_TEST_DOMAIN_ID") or _claim_domain_id()
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers importable from package tests

import pytest  # noqa: E402 (after the environment above)
from ros_harness import RosHarness, RosProcess  # noqa: E402

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

    try:
        yield start
    finally:
        for proc in started:  # every one, even if stopping another failed
            try:
                proc.stop()
            except Exception as exc:
                print(f"ros_process: stopping {proc.name} failed: {exc!r}", flush=True)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
