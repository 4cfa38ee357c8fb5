#!/usr/bin/env bash
# Quick figures for the core: the example's first and second run, and the sandbox's per-task
# overhead against running the same command directly. Needs root and a release build.
# The full side-by-side benchmark suite is issue 4's; this only backs the figures in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
build_strata
work=$(mktemp -d /var/tmp/strata-bench.XXXXXX)
on_exit "rm -rf '$work'"
ms() { echo "scale=1; ($2 - $1) / 1000000" | bc; }

export STRATA_CACHE_DIR=$work/cache
t0=$(now); "$strata" run examples/wordfreq/strata.yml >/dev/null 2>&1; t1=$(now)
"$strata" run examples/wordfreq/strata.yml >/dev/null 2>&1; t2=$(now)
echo "example: first run $(ms "$t0" "$t1") ms, second run (all restored) $(ms "$t1" "$t2") ms"

n=50
mkdir -p "$work/ws"
{
    echo "tasks:"
    for i in $(seq 1 $n); do printf '  - key: t%s\n    cache: false\n    filter: []\n    run: "true"\n' "$i"; done
} > "$work/ws/strata.yml"
for round in 1 2 3; do
    t0=$(now); "$strata" run -j 1 "$work/ws/strata.yml" >/dev/null 2>&1; t1=$(now)
    for i in $(seq 1 $n); do bash -e -c true; done; t2=$(now)
    sandbox=$(ms "$t0" "$t1"); direct=$(ms "$t1" "$t2")
    echo "round $round: $n tasks of 'true', one at a time: strata $sandbox ms, direct bash $direct ms," \
        "overhead per task $(echo "scale=2; ($sandbox - $direct) / $n" | bc) ms"
done
