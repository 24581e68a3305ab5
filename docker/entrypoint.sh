#!/usr/bin/env bash
# Robot image entry point: source ROS 2 Humble, the Interbotix workspace and the project's ros2_ws
# (in that order, so the project overlays both), then run the given command.
# Default command (see robot.Dockerfile): ros2 launch clamp_bringup aloha.launch.py
set -e
for setup in /opt/ros/humble/setup.bash /opt/interbotix_ws/install/setup.bash /opt/clamp/ros2_ws/install/setup.bash; do
  if [ ! -f "$setup" ]; then
    echo "entrypoint: $setup is missing; the image build did not finish. Rebuild: docker build -f docker/robot.Dockerfile ." >&2
    exit 1
  fi
  # shellcheck disable=SC1090
  source "$setup"
done
if [ $# -eq 0 ]; then
  set -- ros2 launch clamp_bringup aloha.launch.py
fi
exec "$@"
