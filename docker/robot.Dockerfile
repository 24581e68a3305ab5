# syntax=docker/dockerfile:1
# The robot image: ROS 2 Humble (Ubuntu 22.04, Python 3.10), the Interbotix X-Series driver
# (xs_sdk via interbotix_xsarm_control), realsense2_camera, and this project's ros2_ws.
#
#   docker build -f docker/robot.Dockerfile -t clamp-aloha/robot .           # from the repo root
#   docker build ... --build-arg TORCH_VARIANT=cu128 .                         # CUDA torch instead
#
# On the robot the real tf2_msgs (apt) and interbotix_xs_msgs (Interbotix workspace) are used; the
# test fixtures in tests/fixtures/ros_interfaces are never copied into this image.
ARG ROS_IMAGE=ros:humble-ros-base-jammy
FROM ${ROS_IMAGE}

# torch comes from the PyTorch index: "cpu" (default) or a CUDA build such as "cu128" (needs the
# NVIDIA container toolkit and `gpus: all` in compose).
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
# Branch (or commit) of the Interbotix repositories; their documented Humble install uses "humble".
ARG INTERBOTIX_REF=humble

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    CLAMP_ROOT=/opt/clamp \
    CLAMP_DATA=/data
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# ROS packages the launch files start (cameras, robot_state_publisher, static TF), the build tools,
# and the libraries MuJoCo's headless renderer (EGL) needs for sim.launch.py.
# DL3008 (pin apt versions): the ROS and Ubuntu repositories keep only the current version of
# a package, so a pin breaks the build as soon as it is updated.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      git python3-pip python3-colcon-common-extensions python3-rosdep \
      ros-humble-realsense2-camera ros-humble-realsense2-description \
      ros-humble-robot-state-publisher ros-humble-tf2-ros ros-humble-xacro \
      libusb-1.0-0 libegl1 libgl1-mesa-dri libgles2 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

# Interbotix X-Series arms, as their Humble install script does it (same repositories, branch,
# submodules and rosdep), but building only what xsarm_control needs: no MoveIt, no perception.
WORKDIR /opt/interbotix_ws/src
RUN git clone -b "${INTERBOTIX_REF}" https://github.com/Interbotix/interbotix_ros_core.git \
 && git clone -b "${INTERBOTIX_REF}" https://github.com/Interbotix/interbotix_ros_manipulators.git \
 && git clone -b "${INTERBOTIX_REF}" https://github.com/Interbotix/interbotix_ros_toolboxes.git \
 && git -C interbotix_ros_core submodule update --init \
      interbotix_ros_xseries/dynamixel_workbench_toolbox interbotix_ros_xseries/interbotix_xs_driver
WORKDIR /opt/interbotix_ws
# SC1091: the sourced setup files exist only inside the image
# hadolint ignore=SC1091
RUN source /opt/ros/humble/setup.bash \
 && apt-get update \
 && rosdep update --rosdistro humble \
 && colcon list --packages-up-to interbotix_xsarm_control --paths-only \
    | xargs rosdep install -y -r --rosdistro humble --as-root apt:false --ignore-src --from-paths \
 && colcon build --packages-up-to interbotix_xsarm_control \
      --cmake-args -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
 && rm -rf build log /var/lib/apt/lists/*

# Python dependencies pinned for 3.10 (requirements/robot.txt explains the choices). torch first,
# from the PyTorch index; then the lock without resolution. Ubuntu's setuptools stays: colcon on
# Humble builds ament_python packages with setup.py commands that the setuptools torch asks for
# (>= 77) deprecates, so the copy pip pulls in with torch is removed again.
COPY requirements/robot-py310.txt /opt/clamp/requirements/robot-py310.txt
RUN python3 -m pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
      --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}" \
 && python3 -m pip install --no-deps --ignore-installed -r /opt/clamp/requirements/robot-py310.txt \
 && if python3 -c 'import setuptools, sys; sys.exit(not setuptools.__file__.startswith("/usr/local"))'; then \
      python3 -m pip uninstall -y setuptools; fi \
 && python3 -c 'import numpy, torch; assert numpy.__version__ < "2", numpy.__version__; print("torch", torch.__version__, "numpy", numpy.__version__)'

# The project: the same ros2_ws as everywhere else, built against Humble and the Interbotix
# workspace. rosdep installs what the package.xml files name (launch, launch_ros, tf2_msgs, ...);
# with --ignore-src it takes interbotix_xs_msgs from the sourced Interbotix workspace.
WORKDIR /opt/clamp/ros2_ws
COPY ros2_ws/src src
# hadolint ignore=SC1091
RUN source /opt/ros/humble/setup.bash \
 && source /opt/interbotix_ws/install/setup.bash \
 && apt-get update \
 && rosdep install -y --rosdistro humble --as-root apt:false --ignore-src --from-paths src \
 && rm -rf /var/lib/apt/lists/* \
 && colcon build \
 && rm -rf build log

COPY docker/entrypoint.sh docker/check.sh /opt/clamp/docker/
# The interface packages must be the real ones, never the test fixtures.
RUN /opt/clamp/docker/entrypoint.sh /opt/clamp/docker/check.sh interfaces

VOLUME ["/data"]
ENTRYPOINT ["/opt/clamp/docker/entrypoint.sh"]
CMD ["ros2", "launch", "clamp_bringup", "aloha.launch.py"]
