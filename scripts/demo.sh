#!/usr/bin/env bash
# `make demo`: the CLAMP policy on the simulated ALOHA, closed loop over DDS (issue #10).
# First run builds the policy (scripted demos + the grounded training recipe: 17 min measured on an idle 2-core CPU) and caches it
# under .build/demo/; later runs reuse it. Options: python -m clamp_demo --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python -m clamp_demo "$@"
