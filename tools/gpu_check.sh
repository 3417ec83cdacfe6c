#!/usr/bin/env bash
# The device check as one command (README, "When a GPU is lent"): on the lent machine, from the repository root,
#   run(command="bash tools/gpu_check.sh", carry=[".whl"], timeout_s=540)
# after tools/gpu_wheels.sh here. Installs the carried wheels, then runs benchmarks/gpu_check.py (arguments pass
# through); its log and gpu_check.json land in $OUT, to be committed under results/gpu/<date>/.
set -uo pipefail
out=${OUT:-results/gpu/local}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ date -u; nvidia-smi || true; } 2>&1 | tee "$out/gpu_check.log"
python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee -a "$out/gpu_check.log"
