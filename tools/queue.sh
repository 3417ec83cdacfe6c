#!/usr/bin/env bash
# The long-run queue of a 2-core machine: two lanes, one single-threaded training process each, so both cores are
# used and neither is oversubscribed. A lane runs its tables one after another; every run continues from its
# in-progress checkpoint, so stopping the queue (or the session) loses at most `resumable.every_minutes` per run.
# Usage: tools/queue.sh "TABLE [TABLE ...]" "TABLE [TABLE ...]"   (lane 1, lane 2); logs in runs/queue-lane*.log
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 REPRO_DATA_DIR="${REPRO_DATA_DIR:-../shared/data}"
mkdir -p runs
lane() {
    local n=$1; shift
    for table in $1; do
        echo "== $(date -Is) start $table (uptime: $(uptime))"
        .venv/bin/repro reproduce "$table" --devices 1
        echo "== $(date -Is) end $table rc=$?"
    done >> "runs/queue-lane$n.log" 2>&1
}
lane 1 "$1" &
lane 2 "${2:-}" &
trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM INT
wait
