"""`make demo`'s command line, without a closed loop: make passes ARGS to scripts/demo.sh, the script
passes every flag to `python -m clamp_demo`, and bad input ends in one clear error naming the fix
(exit 2 for a bad flag, 1 for a bad value) before anything is built or brought up.
The flags doing their job in a closed loop is tests/demo/test_demo.py's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def demo_sh(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """scripts/demo.sh as `make demo` runs it (in the project's environment, which the tests run in)."""
    return subprocess.run(
        [str(ROOT / "scripts" / "demo.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_make_demo_passes_args_to_the_script():
    # -n prints the recipes without running them (no setup, no demo)
    r = subprocess.run(
        ["make", "-n", "--no-print-directory", "demo", "ARGS=--episodes 5 --seed 7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    runs = [line for line in r.stdout.splitlines() if "scripts/demo.sh" in line]
    assert len(runs) == 1 and runs[0].endswith("scripts/demo.sh --episodes 5 --seed 7"), r.stdout


@pytest.mark.parametrize(
    ("args", "rc", "says"),
    [
        # a misspelt flag: argparse's error, where the flags are listed and how make passes them
        (["--episods", "5"], 2, ["unrecognized arguments: --episods 5", "--help", 'make demo ARGS="--episodes']),
        (["--episodes", "0"], 2, ["argument --episodes: must be at least 1, got 0"]),
        (["--seed", "seven"], 2, ["argument --seed: invalid int value: 'seven'"]),
        (["--task", "juggling"], 1, ["task 'juggling' is not a clamp_sim task", "place_cube"]),
        (["--policy", "/nonexistent/policy"], 1, ["--policy /nonexistent/policy: no such directory", "export RUN"]),
        (["--policy", "POLICY_NO_CONFIG"], 1, ["no config.json in it, not an exported policy", "omit --policy"]),
        (["--build-only", "--policy", "/tmp"], 2, ["--build-only", "drop one"]),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, args, rc, says):
    args = [str(tmp_path) if a == "POLICY_NO_CONFIG" else a for a in args]
    r = demo_sh(*args, "--out", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == rc, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    for text in says:
        assert text in r.stderr, (text, r.stderr)
    assert not (tmp_path / "out").exists()  # stopped before the closed loop


def test_policy_that_does_not_load_is_refused_before_bringup(tmp_path):
    """A policy dir whose weights do not match its config (here: modified weights) is refused with the
    checkpoint's own message, not after a 15 s bring-up by a traceback from the inference node."""
    from clamp_demo.demo import DemoError, check_policy_dir
    from clamp_policy.models.checkpoint import save_policy
    from clamp_policy.models.config import PolicyConfig
    from clamp_policy.models.diffusion_policy import DiffusionPolicy

    cfg = PolicyConfig(d_model=16, nhead=2, encoder_layers=1, decoder_layers=1, ff_dim=32, train_timesteps=10)
    cfg.image_encoder.type = "none"
    save_policy(DiffusionPolicy(cfg), tmp_path / "policy")
    assert check_policy_dir(tmp_path / "policy") == (tmp_path / "policy").resolve()
    with open(tmp_path / "policy" / "model.safetensors", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DemoError, match=r"--policy .* does not load: checksum mismatch"):
        check_policy_dir(tmp_path / "policy")


def test_help_lists_the_flags():
    r = subprocess.run([sys.executable, "-m", "clamp_demo", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for flag in ("--episodes", "--seed", "--policy", "--task"):
        assert flag in r.stdout
