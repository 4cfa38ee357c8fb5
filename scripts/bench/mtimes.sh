#!/usr/bin/env bash
# What real workspace mtimes cost: a task that sees a large source tree (gen-tree.py, `small`),
# cache off, run (1) on an empty cache: every file is copied into a blob that takes its mtime;
# (2) again: every file is linked from its blob; (3) after `touch` of every file (content
# unchanged, so the same key): every file needs a copy of its blob with the new mtime, made
# once; (4) again: linked from those copies. Before real mtimes, (3) cost what (2) costs.
#
#   sudo scripts/bench/mtimes.sh [SCALE] [STRATA]     (SCALE 2.23: ~100,000 files)
set -euo pipefail
cd "$(dirname "$0")/../.."
scale=${1:-0.5}
strata=${2:-}
. scripts/bench/lib.sh
need_root
if [ -z "$strata" ]; then
    build_strata -p strata-cli
fi
work=$(mktemp -d /var/tmp/strata-bench-mt.XXXXXX)
on_exit "rm -rf '$work'"
on_exit "settled '$work'"
export STRATA_CACHE_DIR=$work/cache
python3 scripts/bench/gen-tree.py "$work/ws/src" "$scale" small
files=$(find "$work/ws/src" -type f | wc -l)
printf 'tasks:\n  - key: see\n    workspace: true\n    cache: false\n    run: "true"\n' > "$work/ws/strata.yml"
step() {
    sync
    local t0 t1
    t0=$(now); "$strata" run "$work/ws/strata.yml" > /dev/null 2>&1; t1=$(now)
    echo "$1: $(ms "$t0" "$t1") ms"
}
echo "$files files"
step "1 empty cache (blobs copied in)"
step "2 nothing changed (links)"
find "$work/ws/src" -type f -exec touch {} +
step "3 every file touched (copies with the new mtimes)"
step "4 nothing changed (links)"
echo "blobs: $(find "$STRATA_CACHE_DIR/files" -type f | wc -l), of which mtime copies: $(find "$STRATA_CACHE_DIR/files" -name '*@*' | wc -l)"
