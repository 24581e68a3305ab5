#!/usr/bin/env bash
# `make bench`: every benchmark prints one JSON line with its numbers and a baseline ratio.
set -euo pipefail
for module in clamp_perception.bench clamp_sim.bench clamp_policy.bench clamp_bringup.bench clamp_training.bench clamp_training.pretrain_bench; do
  if python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$module') is None)" 2>/dev/null; then
    echo "== $module"; python -m "$module"
  fi
done
