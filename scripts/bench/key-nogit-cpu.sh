#!/usr/bin/env bash
# CPU time (user+sys) and wall of the cold key of a tree outside git, against `b3sum` of its
# files: `strata plan --no-remote` with an empty cache, of a baseline build and of this tree's
# release build, and `find . -type f -print0 | xargs -0 b3sum`, in the order baseline, this,
# b3sum, this, baseline, ROUNDS times. CPU time is the figure to compare on a loaded machine.
#
#   scripts/bench/key-nogit-cpu.sh TREE BASELINE_STRATA [ROUNDS]
# TREE must hold a `strata.yml` with a task that sees the workspace (key-git.sh's tree without
# `.git`); its files should be in the page cache (the script reads them once first).
set -euo pipefail
cd "$(dirname "$0")/../.."
tree=$(realpath "$1")
baseline=$2
rounds=${3:-3}
cargo build --release --quiet -p strata-cli
mine=$PWD/target/release/strata
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
find "$tree" -type f -print0 | xargs -0 cat >/dev/null
t() { /usr/bin/time -f "%e s wall, %U user, %S sys" "$@" 2>&1 >/dev/null | tail -1; }
plan() { rm -rf "$cache/c"; STRATA_CACHE_DIR="$cache/c" t "$1" plan --no-remote "$tree/strata.yml"; }
b3() { (cd "$tree" && t sh -c 'find . -type f -print0 | xargs -0 b3sum'); }
for r in $(seq "$rounds"); do
    echo "round $r (load $(cut -d' ' -f1 /proc/loadavg))"
    echo "  baseline: $(plan "$baseline")"
    echo "  this:     $(plan "$mine")"
    echo "  b3sum:    $(b3)"
    echo "  this:     $(plan "$mine")"
    echo "  baseline: $(plan "$baseline")"
done
