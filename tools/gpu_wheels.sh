#!/usr/bin/env bash
# Wheels, for the device machine, of the packages `repro fit` imports that its image lacks (the device library's
# KINDS.md lists what it has), at .ci/constraints.txt's versions, into .whl/ (git-ignored) for the device tool's
# `carry`. POT is left out: its wheel (33 MB) would take the transfer over 64 MiB with the tree, so the check skips
# WGAN-TS there. Run here (it needs the package registry), then: run(command="bash tools/gpu_check.sh", carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
pins=$(grep -iE "^(jsonargparse|docstring[-_]parser|typeshed[-_]client)==" .ci/constraints.txt)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
ls -l .whl
