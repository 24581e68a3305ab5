"""Bring-up tests share the session-wide `ros` harness (tests/conftest.py); nothing special here.

No reruns and no xfail: the real-time DDS tests of the recorder and teleop are written to pass on a
loaded 2-core machine (see tests/ros_harness.py for why messages used to be lost).
"""
