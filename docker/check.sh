#!/usr/bin/env bash
# Build and smoke-test the images. Run on a machine with a Docker engine, from anywhere:
#
#   docker/check.sh            # build both images, then run the in-image checks below in each
#   docker/check.sh robot      # (inside the robot image) interfaces, pip check, colcon build + test,
#                              #   and a smoke test of sim.launch.py: the expected topics appear
#   docker/check.sh train      # (inside the training image) imports, CUDA report, a 2-process
#                              #   torch.distributed all-reduce under torchrun
#   docker/check.sh interfaces # (inside the robot image) tf2_msgs / interbotix_xs_msgs are the real ones
#
# Environment: CLAMP_ROBOT_TAG, CLAMP_TRAIN_TAG (image names), CLAMP_SMOKE_TIMEOUT (s, default 90),
# CLAMP_SKIP_TRAIN=1 (robot image only), CLAMP_TRAIN_IMAGE_ARGS (extra `docker build` arguments).
set -euo pipefail

say() { printf '\033[1m[check]\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31m[check] FAIL:\033[0m %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------ inside the robot image
check_interfaces() {
  local prefix
  prefix="$(ros2 pkg prefix tf2_msgs)" || fail "tf2_msgs is not installed (it comes with ros-humble-ros-base)"
  [ "$prefix" = "/opt/ros/humble" ] || fail "tf2_msgs comes from $prefix, expected /opt/ros/humble (a test fixture?)"
  prefix="$(ros2 pkg prefix interbotix_xs_msgs)" || fail "interbotix_xs_msgs is not installed (Interbotix workspace)"
  case "$prefix" in
    /opt/interbotix_ws/install*) ;;
    *) fail "interbotix_xs_msgs comes from $prefix, expected /opt/interbotix_ws/install (a test fixture?)" ;;
  esac
  for pkg in interbotix_xsarm_control realsense2_camera robot_state_publisher clamp_bringup; do
    ros2 pkg prefix "$pkg" >/dev/null || fail "ROS package $pkg is missing from the image"
  done
  say "interfaces: real tf2_msgs and interbotix_xs_msgs; xsarm_control, realsense2_camera present"
}

expected_topics() {
  # from the rig contract itself, so this list cannot drift from the code
  python3 - <<'PY'
from clamp_core import rig
topics = [rig.joint_states_topic(a) for a in rig.FOLLOWERS]
for cam in rig.CAMERAS:
    topics += [rig.color_topic(cam), rig.depth_topic(cam), rig.camera_info_topic(rig.color_topic(cam))]
topics += ["/tf", "/tf_static", "/clock"]
print("\n".join(topics))
PY
}

check_robot() {
  check_interfaces
  python3 -c 'import numpy, torch; assert numpy.__version__.startswith("1."), numpy.__version__' \
    || fail "numpy must be 1.x in the robot image (Humble's compiled message modules)"
  # torch asks for setuptools>=77, which the image removes on purpose (see robot.Dockerfile)
  local broken
  broken="$(python3 -m pip check 2>&1 | grep -v -i 'setuptools' | grep -v '^No broken' || true)"
  [ -z "$broken" ] || fail "pip check: $broken"

  local ws=/tmp/clamp_ws
  rm -rf "$ws" && mkdir -p "$ws" && cp -r /opt/clamp/ros2_ws/src "$ws/src"
  say "colcon build (a copy of ros2_ws in $ws)"
  (cd "$ws" && colcon build --event-handlers console_cohesion-) || fail "colcon build"
  say "colcon test"
  (cd "$ws" && colcon test --event-handlers console_cohesion- && colcon test-result --verbose) || fail "colcon test"
  # shellcheck disable=SC1091
  source "$ws/install/setup.bash"

  say "launch smoke test: ros2 launch clamp_bringup sim.launch.py"
  export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}" ROS_LOCALHOST_ONLY=1
  local log=/tmp/sim_launch.log timeout="${CLAMP_SMOKE_TIMEOUT:-90}"
  ros2 launch clamp_bringup sim.launch.py >"$log" 2>&1 &
  LAUNCH_PID=$!
  # stop only what this script started: the launch process (which stops its children)
  trap 'kill -INT "$LAUNCH_PID" 2>/dev/null || true; sleep 3; kill -TERM "$LAUNCH_PID" 2>/dev/null || true' EXIT
  mapfile -t want < <(expected_topics)
  local missing=("${want[@]}") deadline=$((SECONDS + timeout))
  while [ ${#missing[@]} -gt 0 ] && [ $SECONDS -lt $deadline ]; do
    kill -0 "$LAUNCH_PID" 2>/dev/null || { tail -40 "$log" >&2; fail "sim.launch.py exited early"; }
    sleep 2
    local have
    have="$(ros2 topic list 2>/dev/null || true)"
    local still=()
    for t in "${missing[@]}"; do grep -qxF "$t" <<<"$have" || still+=("$t"); done
    missing=("${still[@]+"${still[@]}"}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    tail -40 "$log" >&2
    fail "after ${timeout}s these topics never appeared: ${missing[*]}"
  fi
  # topics can be advertised and silent: require real messages on a state and a camera topic
  timeout 30 ros2 topic echo --once "${want[0]}" sensor_msgs/msg/JointState >/dev/null \
    || fail "no message on ${want[0]} within 30 s"
  timeout 30 ros2 topic echo --once --no-arr "${want[2]}" sensor_msgs/msg/Image >/dev/null \
    || fail "no message on ${want[2]} within 30 s"
  say "sim.launch.py: all ${#want[@]} expected topics present, joint states and images flowing"
}

# ------------------------------------------------------------------------------ inside the training image
check_train() {
  python - <<'PY' || fail "imports"
import clamp_core.rig, clamp_policy, clamp_training, torch
print("torch", torch.__version__, "CUDA build", torch.version.cuda, "GPUs visible", torch.cuda.device_count())
PY
  python -m clamp_training --help >/dev/null || fail "python -m clamp_training --help"
  local script=/tmp/clamp_allreduce.py
  cat >"$script" <<'PY'
import os, torch, torch.distributed as dist
gpu = torch.cuda.device_count() >= int(os.environ["WORLD_SIZE"])
dist.init_process_group("nccl" if gpu else "gloo")
rank = dist.get_rank()
device = torch.device("cuda", rank) if gpu else torch.device("cpu")
x = torch.full((4,), float(rank + 1), device=device)
dist.all_reduce(x)
expected = sum(range(1, dist.get_world_size() + 1))
assert torch.all(x == expected), (x, expected)
if rank == 0:
    print(f"all_reduce over {dist.get_world_size()} processes ({'nccl' if gpu else 'gloo'}): ok")
dist.destroy_process_group()
PY
  torchrun --standalone --nproc_per_node 2 "$script" || fail "torchrun all_reduce"
  say "training image: imports, CLI and torch.distributed work"
}

# ------------------------------------------------------------------------------ on the host
check_host() {
  command -v docker >/dev/null || fail "docker is not installed"
  docker info >/dev/null 2>&1 || fail "no Docker engine reachable (docker info failed); start dockerd or use a machine with one"
  local root robot_tag train_tag
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  robot_tag="${CLAMP_ROBOT_TAG:-clamp-aloha/robot:check}"
  train_tag="${CLAMP_TRAIN_TAG:-clamp-aloha/train:check}"
  if docker compose version >/dev/null 2>&1; then
    docker compose -f "$root/docker/compose.yaml" config --quiet || fail "docker/compose.yaml is invalid"
    say "compose file valid"
  else
    say "docker compose plugin absent: compose file not validated"
  fi
  say "building $robot_tag (first build: 20-40 min)"
  docker build -f "$root/docker/robot.Dockerfile" -t "$robot_tag" "$root" || fail "robot image build"
  docker run --rm --shm-size 1g "$robot_tag" /opt/clamp/docker/check.sh robot || fail "robot image checks"
  if [ "${CLAMP_SKIP_TRAIN:-0}" != 1 ]; then
    say "building $train_tag"
    # shellcheck disable=SC2086
    docker build -f "$root/docker/train.Dockerfile" -t "$train_tag" ${CLAMP_TRAIN_IMAGE_ARGS:-} "$root" \
      || fail "training image build"
    local gpus=()
    if docker info 2>/dev/null | grep -qi 'runtimes:.*nvidia'; then gpus=(--gpus all); fi
    docker run --rm --shm-size 2g "${gpus[@]}" "$train_tag" bash /opt/clamp/docker/check.sh train \
      || fail "training image checks"
  fi
  say "all image checks passed"
}

case "${1:-host}" in
  host) check_host ;;
  robot) check_robot ;;
  train) check_train ;;
  interfaces) check_interfaces ;;
  *) fail "unknown mode '$1'; use: host (default), robot, train, interfaces" ;;
esac
