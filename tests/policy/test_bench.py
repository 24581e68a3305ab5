"""clamp_policy.bench: its timing arithmetic, and its tick child processes really run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from clamp_policy.bench import PERIOD, _timing


def test_timing_counts_lateness_and_missed_deadlines():
    t0 = 100.0
    calls = [t0 + k * PERIOD + 0.0005 for k in range(1, 11)]  # 0.5 ms late each
    del calls[4:6]  # two deadlines slept through
    calls[6] += 0.003
    r = _timing(calls, t0)
    assert r["ticks"] == 8 and r["missed_ticks"] == 2
    assert abs(r["tick_jitter_p50_ms"] - 0.5) < 1e-6 and abs(r["tick_jitter_max_ms"] - 3.5) < 1e-6


def test_ticker_children_print_json():
    for kind in ("executor", "rclpy_timer"):
        out = subprocess.run(
            [sys.executable, "-m", "clamp_policy.bench", "--ticker", kind, "--seconds", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert 40 <= r["ticks"] + r["missed_ticks"] <= 60, r  # ~1 s at 50 Hz (a busy CI box stretches it)
        assert np.isfinite(r["tick_jitter_p99_ms"])
        if kind == "executor":
            assert r["executor_state"] == "running"
