"""Sizes of the synthetic episodes the training tests share (conftest.py's fixtures use them). A module
of its own: `from conftest import ...` is ambiguous when several test folders with a conftest.py run
in one session."""

EPISODE_S = 1.5
CAMERA_HZ = 10.0
