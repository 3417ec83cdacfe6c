#!/usr/bin/env bash
# The long-run queue of a 2-core machine: two lanes, one single-threaded training process each, so both cores are
# used and neither is oversubscribed. A lane runs its items one after another; every run continues from its
# in-progress checkpoint, so stopping the queue (or the session) loses at most `resumable.every_minutes` per run.
# Run it from a checkout pinned at one commit (e.g. `git worktree add ../queue HEAD`), not from the tree you edit:
# each run imports the checkout's code when it starts, and its record names the commit the runner started at.
# Usage: tools/queue.sh "ITEM[;ITEM...]" ["ITEM[;ITEM...]"]   (lane 1, lane 2), an ITEM being the arguments of one
# `repro reproduce` (a table, optionally --seeds / --only / --devices); logs in runs/queue-lane*.log. A table is locked
# by the runner that runs it, so the two lanes must not run the same table at the same time: to spend both cores on
# one table, give one lane that table with `--devices 2` and the other lane nothing (or other tables).
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 REPRO_DATA_DIR="${REPRO_DATA_DIR:-../shared/data}" PYTHONPATH="$PWD"
PYTHON="${PYTHON:-.venv/bin/python}"
mkdir -p runs
lane() {
    local n=$1 item items
    IFS=';' read -ra items <<< "$2"
    for item in "${items[@]}"; do
        echo "== $(date -Is) start: $item (uptime: $(uptime))"
        # shellcheck disable=SC2086  # an item is a list of arguments
        "$PYTHON" -m repro reproduce --devices 1 $item  # an item's own --devices wins (the last one given)
        local rc=$?
        echo "== $(date -Is) end: $item rc=$rc"
    done >> "runs/queue-lane$n.log" 2>&1
}
lane 1 "$1" &
lane 2 "${2:-}" &
trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM INT
wait
