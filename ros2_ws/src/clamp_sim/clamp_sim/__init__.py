"""Simulated bimanual ALOHA (MuJoCo) speaking the robot's xs_sdk, RealSense and TF interfaces."""
