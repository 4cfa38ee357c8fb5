#!/usr/bin/env bash
# The key of a git checkout against `git status` and `b3sum`, interleaved round by round:
# a fresh clone of the suite's 100,000-file source tree (no stat cache: every id from git's
# index), `git status` in it (which goes first alternates), the warm key; then the same files
# outside git (every file hashed) against `b3sum` of every file, and warm.
#
#   scripts/bench/key-git.sh [ROUNDS]     (default 3; release build of strata)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
cargo build --release --quiet -p strata-cli
strata=$PWD/target/release/strata
base=${STRATA_BENCH_DIR:-/var/tmp/strata-key-git}
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
if [ ! -d "$base/tree/.git" ]; then
    rm -rf "$base"
    mkdir -p "$base"
    python3 scripts/bench/gen-tree.py "$base/tree" 2.23 small >/dev/null 2>&1
    printf 'tasks:\n  - key: all\n    workspace: true\n    run: "true"\n' > "$base/tree/strata.yml"
    git -C "$base/tree" init -q && git -C "$base/tree" config gc.auto 0
    git -C "$base/tree" add -A
    git -C "$base/tree" -c user.name=bench -c user.email=bench@example.com commit -qm tree
fi
rm -rf "$base/plain"
cp -a "$base/tree" "$base/plain"
rm -rf "$base/plain/.git"
plan() { STRATA_CACHE_DIR="$1" "$strata" plan --no-remote "$2/strata.yml" >/dev/null; }
for r in $(seq "$rounds"); do
    rm -rf "$base/clone" "$base"/cache-*
    git clone -q "$base/tree" "$base/clone"
    sync
    if [ $((r % 2)) = 1 ]; then
        t0=$(now); plan "$base/cache-g" "$base/clone"; t1=$(now)
        git -C "$base/clone" status --porcelain >/dev/null; t2=$(now)
        cold=$(ms "$t0" "$t1"); gs=$(ms "$t1" "$t2")
    else
        t0=$(now); git -C "$base/clone" status --porcelain >/dev/null; t1=$(now)
        plan "$base/cache-g" "$base/clone"; t2=$(now)
        gs=$(ms "$t0" "$t1"); cold=$(ms "$t1" "$t2")
    fi
    t0=$(now); plan "$base/cache-g" "$base/clone"; t1=$(now)
    warm=$(ms "$t0" "$t1")
    t0=$(now); plan "$base/cache-p" "$base/plain"; t1=$(now)
    (cd "$base/plain" && find . -type f -print0 | xargs -0 b3sum >/dev/null); t2=$(now)
    plan "$base/cache-p" "$base/plain"; t3=$(now)
    echo "round $r (load $(cut -d' ' -f1 /proc/loadavg)): clone cold $cold ms, git status $gs ms" \
        "($(echo "scale=2; $cold / $gs" | bc)x), clone warm $warm ms;" \
        "no git: cold $(ms "$t0" "$t1") ms, b3sum $(ms "$t1" "$t2") ms, warm $(ms "$t2" "$t3") ms"
done
