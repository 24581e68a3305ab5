"""tests/clamp: one torch CPU thread per test (OpenMP's spin-waiting threads run several times slower
on a busy 2-core machine); restored afterwards so other areas' tests are unaffected."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
