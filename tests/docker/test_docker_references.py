"""What the Dockerfiles, the entry point, compose and check.sh name exists: in the repo, in the build
context, in the image they describe, or in what the image installs."""

from __future__ import annotations

import re
import sys

import pytest
import yaml
from docker_static import DOCKER, IMAGES, REPO, copied_files, ignore_patterns, in_context, parse

ROBOT = parse(IMAGES["robot"])
TRAIN = parse(IMAGES["train"])
PARSED = {"robot": ROBOT, "train": TRAIN}
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
LAUNCH_DIR = REPO / "ros2_ws/src/clamp_bringup/launch"
DEFAULT_COMMAND = ["ros2", "launch", "clamp_bringup", "aloha.launch.py"]


def _volume(spec: str) -> tuple[str, str]:
    """(host, container) of a short-syntax volume; ${VAR:-default} may itself contain ':'."""
    parts = re.sub(r"\$\{[^}]*\}", "$VAR", spec).split(":")
    host = spec[: len(spec) - len(":".join(parts[1:])) - 1]
    return host, parts[1]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_copy_sources_exist_and_reach_the_build_context(image):
    patterns = ignore_patterns(IMAGES[image])
    assert ROBOT.copies and TRAIN.copies
    for cp in PARSED[image].copies:
        for src in cp.sources:
            assert (REPO / src).exists(), f"{IMAGES[image].name}:{cp.line}: COPY source {src} is not in the repo"
            assert in_context(patterns, src), (
                f"{IMAGES[image].name}:{cp.line}: COPY {src} is excluded by {IMAGES[image].name}.dockerignore"
            )


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_build_context_leaves_out_local_state(image):
    """The venv (GBs), build trees, bags and the interface test fixtures never reach the daemon."""
    patterns = ignore_patterns(IMAGES[image])
    for path in (
        ".venv/bin/python",
        ".build/fixtures/install/setup.bash",
        "ros2_ws/build/clamp_sim/x",
        "ros2_ws/install/setup.bash",
        "ros2_ws/log/latest",
        "tests/fixtures/ros_interfaces/tf2_msgs/package.xml",
        "data/episode_0.mcap",
        ".git/HEAD",
        "ros2_ws/src/clamp_policy/clamp_policy/__pycache__/x.pyc",
    ):
        assert not in_context(patterns, path), f"{path} would be sent to the {image} build"


def test_robot_image_uses_real_interfaces_not_fixtures():
    for cp in ROBOT.copies:
        for src in cp.sources:
            assert not src.startswith("tests"), f"robot.Dockerfile copies test material: {src}"
    # the build fails unless tf2_msgs is Humble's and interbotix_xs_msgs the Interbotix workspace's
    assert any("check.sh interfaces" in run for _, run in ROBOT.runs)
    check = (DOCKER / "check.sh").read_text()
    body = check[check.index("check_interfaces() {") :]
    body = body[: body.index("\n}\n")]
    assert '"/opt/ros/humble"' in body and "/opt/interbotix_ws/install" in body


def test_bases_humble_and_cuda_pytorch_with_the_projects_torch():
    assert re.fullmatch(r"ros:humble-[a-z-]+", ROBOT.base), f"robot image base {ROBOT.base} is not ROS 2 Humble"
    m = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-(runtime|devel)", TRAIN.base)
    assert m, f"training image base {TRAIN.base} is not a CUDA pytorch/pytorch image"
    setup_torch = re.search(r'"torch==([\d.]+)"', (REPO / "scripts/setup.sh").read_text()).group(1)
    robot_txt_torch = re.search(r"^torch==([\d.]+)", (REPO / "requirements/robot.txt").read_text(), re.M).group(1)
    versions = {
        "scripts/setup.sh": setup_torch,
        "robot.Dockerfile TORCH_VERSION": ROBOT.args["TORCH_VERSION"],
        "requirements/robot.txt": robot_txt_torch,
        "train.Dockerfile TORCH_IMAGE": m.group(1),
    }
    assert len(set(versions.values())) == 1, f"torch versions disagree: {versions}"


def test_entrypoint_sources_the_workspaces_the_image_builds():
    """Each setup.bash the entry point sources is the install/ of a colcon build in the Dockerfile."""
    entry = (DOCKER / "entrypoint.sh").read_text()
    sourced = re.findall(r"(/opt/[\w/]+)/setup\.bash", entry)
    assert sourced[0] == "/opt/ros/humble" and len(sourced) == 3, sourced
    built = {wd + "/install" for wd, run in ROBOT.runs if "colcon build" in run}
    for prefix in sourced[1:]:
        assert prefix in built, f"entrypoint.sh sources {prefix}/setup.bash but no colcon build creates it ({built})"
    files = copied_files(ROBOT)
    assert ROBOT.entrypoint[0] in files and files[ROBOT.entrypoint[0]] == "docker/entrypoint.sh"
    for image in PARSED.values():
        assert files.get("/opt/clamp/docker/check.sh") or copied_files(image).get("/opt/clamp/docker/check.sh")
    assert copied_files(TRAIN).get("/opt/clamp/docker/check.sh") == "docker/check.sh"


def test_default_command_is_aloha_launch_everywhere():
    assert ROBOT.cmd == DEFAULT_COMMAND
    assert COMPOSE["services"]["robot"]["command"] == DEFAULT_COMMAND
    assert "set -- " + " ".join(DEFAULT_COMMAND) in (DOCKER / "entrypoint.sh").read_text()


def test_every_launch_file_named_exists_and_is_installed():
    named = set()
    for f in [*DOCKER.glob("*"), *DOCKER.glob("*/*")]:
        if f.is_file() and f.suffix != ".py":
            named |= set(re.findall(r"ros2 launch clamp_bringup ([\w.]+)", f.read_text()))
    named |= {c[3] for s in COMPOSE["services"].values() if (c := s.get("command", []))[:3] == DEFAULT_COMMAND[:3]}
    assert {"aloha.launch.py", "sim.launch.py"} <= named, named
    setup_py = (REPO / "ros2_ws/src/clamp_bringup/setup.py").read_text()
    assert 'glob("launch/*.py")' in setup_py, "clamp_bringup/setup.py must install launch/*.py"
    missing = sorted(n for n in named if not (LAUNCH_DIR / n).is_file())
    assert not missing, f"docker/ names launch files that clamp_bringup lacks: {missing}"


def _apt_ros_packages() -> set[str]:
    text = " ".join(run for _, run in ROBOT.runs if "apt-get install" in run)
    return {p.replace("-", "_") for p in re.findall(r"\bros-humble-([a-z0-9-]+)", text)}


def test_robot_image_installs_every_ros_package_the_launch_graph_starts():
    """The packages aloha/teleop/record launch (xs_sdk, realsense2_camera, tf2_ros...) are in the image."""
    sys.path.insert(0, str(REPO / "ros2_ws/src/clamp_bringup"))
    sys.path.insert(0, str(REPO / "ros2_ws/src/clamp_perception"))
    from clamp_bringup.graph import MODES, build_graph

    workspace = set(re.findall(r"--packages-up-to (\w+)", " ".join(run for _, run in ROBOT.runs)))
    assert "interbotix_xsarm_control" in workspace
    provided = _apt_ros_packages() | workspace | {p.name for p in (REPO / "ros2_ws/src").iterdir()}
    provided |= {"tf2_ros", "robot_state_publisher"}  # both in ros-humble-ros-base, the base image
    needed = set()
    for mode in MODES:
        graph = build_graph("aloha", mode)
        needed |= {n.package for n in graph.nodes} | {i.package for i in graph.includes}
    missing = sorted(needed - provided)
    assert not missing, f"the aloha launch graph starts packages robot.Dockerfile does not install: {missing}"


def test_compose_robot_service_has_host_network_devices_and_data():
    robot = COMPOSE["services"]["robot"]
    assert robot["network_mode"] == "host" and robot["ipc"] == "host"
    assert "/dev:/dev" in robot["volumes"], "the robot needs /dev (U2D2 serial ports, RealSense USB)"
    majors = {rule.split()[1].split(":")[0] for rule in robot["device_cgroup_rules"]}
    assert {"188", "189", "81"} <= majors, "USB serial (188), raw USB (189) and video4linux (81) must be allowed"
    for name, svc in COMPOSE["services"].items():
        assert "/data" in [_volume(v)[1] for v in svc.get("volumes", [])], f"service {name} lacks the /data volume"
    train = COMPOSE["services"]["train"]
    gpus = train["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpus["driver"] == "nvidia" and "gpu" in gpus["capabilities"]
    assert COMPOSE["services"]["sim"]["image"] == robot["image"]


def test_compose_paths_exist():
    for name, svc in COMPOSE["services"].items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == REPO, f"{name}: build context {context} is not the repository root"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
        for vol in svc.get("volumes", []):
            host = _volume(vol)[0]
            if host.startswith("."):
                assert (DOCKER / host).exists(), f"{name}: bind mount {host} does not exist"
    # every ${VAR} / ${VAR:-default} is well formed (compose would reject the file otherwise)
    text = (DOCKER / "compose.yaml").read_text()
    for expr in re.findall(r"\$\{([^}]*)\}", text):
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*(:?-[^}]*)?", expr), f"bad interpolation ${{{expr}}}"


def test_paths_named_in_docker_files_exist():
    """Repo paths mentioned in docker/ (README, scripts, Dockerfiles, compose) exist."""
    roots = "docker|requirements|scripts|ros2_ws/src|training|tests"
    pattern = re.compile(rf"(?<![\w/.])((?:{roots})/[\w./-]*[\w-])(?![\w:])")  # (?!:) skips image names
    missing = set()
    for f in DOCKER.rglob("*"):
        if f.is_file():
            for path in pattern.findall(f.read_text()):
                if not (REPO / path).exists() and "*" not in path:
                    missing.add(f"{f.relative_to(REPO)}: {path}")
    assert not missing, "paths named but absent:\n" + "\n".join(sorted(missing))


def test_recorder_bags_land_on_a_host_volume():
    """The aloha profile's recorder out_dir (the container runs as root) is inside a mounted volume."""
    profile = yaml.safe_load((REPO / "ros2_ws/src/clamp_core/config/profiles/aloha.yaml").read_text())
    out_dir = str(profile["recorder"]["out_dir"]).replace("~", "/root", 1)
    mounts = [_volume(v)[1] for v in COMPOSE["services"]["robot"]["volumes"]]
    assert any(out_dir == m or out_dir.startswith(m.rstrip("/") + "/") for m in mounts), (
        f"bags would be written to {out_dir} inside the container and lost; mount it in docker/compose.yaml"
    )


def test_udev_rules_name_every_arm_and_render(tmp_path):
    import subprocess

    sys.path.insert(0, str(REPO / "ros2_ws/src/clamp_perception"))
    from clamp_core import rig

    arms = rig.FOLLOWERS + rig.LEADERS
    template = (DOCKER / "udev/99-clamp-aloha.rules").read_text()
    for arm in arms:
        assert f'SYMLINK+="ttyDXL_{arm}"' in template and f"@{arm}@" in template, arm
    assert 'ATTRS{idProduct}=="0b5b"' in template, "RealSense D405 rule missing"
    script, target = DOCKER / "install-udev-rules.sh", tmp_path / "99-clamp-aloha.rules"
    env = {"PATH": "/usr/bin:/bin", "CLAMP_UDEV_TARGET": str(target)}
    serials = [f"{arm}=FT{i}ABC" for i, arm in enumerate(arms)]
    done = subprocess.run([str(script), *serials], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    rendered = target.read_text()
    assert "@" not in rendered and all(f'ATTRS{{serial}}=="FT{i}ABC"' in rendered for i in range(len(arms)))
    partial = subprocess.run([str(script), serials[0]], capture_output=True, text=True, env=env)
    assert partial.returncode == 2 and "missing serial numbers" in partial.stderr
