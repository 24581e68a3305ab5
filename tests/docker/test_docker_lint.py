"""Linters that really parse: hadolint (Dockerfiles, with ShellCheck on RUN), ShellCheck (scripts)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from docker_static import DOCKER, IMAGES, REPO

SCRIPTS = sorted(DOCKER.glob("*.sh"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: it comes from requirements/base.in ({name}-py); run `make setup`")
    return path


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint_passes(image):
    proc = subprocess.run([_tool("hadolint"), "--no-color", str(IMAGES[image])], capture_output=True, text=True)
    assert proc.returncode == 0, f"hadolint found problems in {IMAGES[image].name}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_really_lints(tmp_path):
    """Negative control: the linter flags a Dockerfile with known faults (so a pass above means something)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install curl\n")
    proc = subprocess.run([_tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3014"):  # latest tag, cd instead of WORKDIR, apt-get without -y
        assert rule in proc.stdout, proc.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_passes(script):
    proc = subprocess.run([_tool("shellcheck"), "-x", str(script)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, f"shellcheck {script.name}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_executable_in_git(script):
    """COPY keeps the mode git checks out, and the images exec these directly (ENTRYPOINT, RUN)."""
    rel = script.relative_to(REPO).as_posix()
    out = subprocess.run(["git", "ls-files", "-s", rel], capture_output=True, text=True, cwd=REPO).stdout
    if not out:
        pytest.fail(f"{rel} is not tracked by git, so a clean clone would not have it")
    assert out.split()[0] == "100755", f"{rel} is not executable in git: git update-index --chmod=+x {rel}"
