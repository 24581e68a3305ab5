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


def _run_check(args, tmp_path, docker_stub: str | None = None):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if docker_stub is not None:
        stub = tmp_path / "bin/docker"
        stub.parent.mkdir()
        stub.write_text("#!/bin/sh\n" + docker_stub)
        stub.chmod(0o755)
        env["PATH"] = f"{stub.parent}:{env['PATH']}"
    return subprocess.run([str(DOCKER / "check.sh"), *args], capture_output=True, text=True, env=env, timeout=30)


def test_check_sh_refuses_without_an_engine(tmp_path):
    """With a docker client whose `docker info` fails (as here), check.sh stops with the cause, builds nothing."""
    done = _run_check([], tmp_path, docker_stub='[ "$1" = info ] && exit 1\necho "unexpected: docker $*" >&2\nexit 3\n')
    assert done.returncode == 1, done.stderr
    assert "no Docker engine reachable" in done.stderr and "unexpected" not in done.stderr


def test_check_sh_builds_then_runs_each_image(tmp_path):
    """The host mode's sequence: validate compose, build robot, check it inside, build train, check it inside."""
    log = tmp_path / "calls"
    stub = f'echo "$*" >> {log}\n[ "$1 $2" = "compose version" ] && exit 0\nexit 0\n'
    done = _run_check([], tmp_path, docker_stub=stub)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert lines[:2] == ["info", "compose version"], lines
    assert lines[2] == f"compose -f {DOCKER}/compose.yaml config --quiet", lines[2]
    calls = [line.split() for line in lines]
    builds = [c for c in calls if c[0] == "build"]
    runs = [c for c in calls if c[0] == "run"]
    assert [b[b.index("-f") + 1] for b in builds] == [str(IMAGES["robot"]), str(IMAGES["train"])]
    assert all(b[-1] == str(REPO) for b in builds), "the build context must be the repository root"
    assert runs[0][-2:] == ["/opt/clamp/docker/check.sh", "robot"]
    assert runs[1][-2:] == ["/opt/clamp/docker/check.sh", "train"]
    assert calls.index(builds[0]) < calls.index(runs[0]) < calls.index(builds[1]) < calls.index(runs[1])


def test_check_sh_rejects_unknown_modes(tmp_path):
    done = _run_check(["robto"], tmp_path)
    assert done.returncode == 1 and "unknown mode 'robto'" in done.stderr
