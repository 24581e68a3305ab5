"""Emulated ALOHA hardware for bring-up tests: xs_sdk, realsense2_camera, tf2_ros static TF (see bench.py)."""
