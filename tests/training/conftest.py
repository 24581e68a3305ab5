"""Shared fixtures for the training tests: small synthetic episode bags, their dataset, a tiny run."""

from __future__ import annotations

import os

import pytest
from training_constants import CAMERA_HZ, EPISODE_S

# Small models on a busy 2-core machine train much faster single-threaded (see TrainConfig.threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def synthetic_bags(tmp_path_factory):
    from clamp_training.synthetic import write_synthetic_episode

    root = tmp_path_factory.mktemp("bags")
    for i, task in enumerate(("transfer the cube", "insert the peg")):
        write_synthetic_episode(root / f"ep{i}", duration_s=EPISODE_S, seed=i, task=task, camera_hz=CAMERA_HZ)
    return root


@pytest.fixture(scope="session")
def dataset(synthetic_bags, tmp_path_factory):
    from clamp_training.convert import convert

    out = tmp_path_factory.mktemp("data") / "ds"
    convert([synthetic_bags], out, workers=2, progress=False)
    return out
