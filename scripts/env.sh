# Source me (bash): the project's environment. `make` targets source it; so can you:
#   source scripts/env.sh
# Order: a sourced ROS distro (if any) < .venv < interface fixtures < ros2_ws overlay.
_CLAMP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$_CLAMP_ROOT/.venv/bin/activate"
_clamp_src() { # colcon's setup scripts read unset variables; relax nounset while sourcing them
  local had_u=0; case $- in *u*) had_u=1; set +u;; esac
  # shellcheck disable=SC1090
  [ -f "$1" ] && source "$1"
  [ $had_u = 1 ] && set -u; return 0; }
_clamp_src "$_CLAMP_ROOT/.build/fixtures/install/setup.bash"
if [ "${1:-}" != "--no-workspace" ]; then
  _clamp_src "$_CLAMP_ROOT/ros2_ws/install/setup.bash"
fi
# Keep DDS traffic on this machine unless the user chose otherwise (the robot sets its own).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
# Model weights come from installed packages only, never from a hub at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export CLAMP_ROOT="$_CLAMP_ROOT"
unset -f _clamp_src
