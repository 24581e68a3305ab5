"""Fuses RealSense RGB-D streams into a world-frame point cloud and re-renders the CLAMP virtual views (depth + xyz)."""
