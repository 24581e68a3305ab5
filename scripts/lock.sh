#!/usr/bin/env bash
# Re-resolve requirements/constraints.txt from the top-level *.in files in a scratch venv.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); python3 -m venv "$tmp/v"
"$tmp/v/bin/pip" install -q torch==2.13.0
"$tmp/v/bin/pip" install -q -r requirements/base.in -r requirements/ros-wheels.in
{ echo "# Pinned versions resolved on Debian 12 / Python 3.11 (regenerate: scripts/lock.sh). torch is installed first, separately."
  "$tmp/v/bin/pip" freeze --exclude-editable | grep -v -E "^(torch|clamp[-_]training)=="; } > requirements/constraints.txt
rm -rf "$tmp"; echo "wrote requirements/constraints.txt"
