"""CLAMP encoders, diffusion policy inference and the 50 Hz safe action-chunk executor."""
