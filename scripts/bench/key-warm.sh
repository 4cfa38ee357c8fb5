#!/usr/bin/env bash
# The warm key (`strata plan` with a warm stat cache, nothing changed) of this build against
# another strata binary, interleaved run by run, over the 100,000-file tree that
# scripts/bench/key-git.sh sets up (a git clone and the same files outside git). Prints the
# median and minimum wall time and CPU time (user + sys) of each: on a shared machine the CPU
# time is the steadier figure.
#
#   scripts/bench/key-warm.sh OTHER_STRATA [RUNS]     (default 9; release build of this tree)
set -euo pipefail
cd "$(dirname "$0")/../.."
other=${1:?usage: key-warm.sh OTHER_STRATA [RUNS]}
runs=${2:-9}
cargo build --release --quiet -p strata-cli
this=$PWD/target/release/strata
base=${STRATA_BENCH_DIR:-/var/tmp/strata-key-git}
[ -d "$base/tree/.git" ] || { echo "run scripts/bench/key-git.sh first (it makes $base)" >&2; exit 1; }
[ -d "$base/clone/.git" ] || git clone -q "$base/tree" "$base/clone"
[ -d "$base/plain" ] || { cp -a "$base/tree" "$base/plain"; rm -rf "$base/plain/.git"; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for tree in clone plain; do
    for who in this other; do
        # A cache of each binary's own: their stat cache formats may differ.
        rm -rf "$base/cache-warm-$who-$tree"
        STRATA_CACHE_DIR="$base/cache-warm-$who-$tree" "${!who}" plan --no-remote \
            "$base/$tree/strata.yml" >/dev/null
    done
    for _ in $(seq "$runs"); do
        for who in this other; do
            /usr/bin/time -f "%e %U %S" -a -o "$out/$who-$tree" \
                env STRATA_CACHE_DIR="$base/cache-warm-$who-$tree" "${!who}" plan --no-remote \
                "$base/$tree/strata.yml" >/dev/null
        done
    done
    for who in this other; do
        wall=$(awk '{print int($1 * 1000)}' "$out/$who-$tree" | sort -n)
        cpu=$(awk '{print int(($2 + $3) * 1000)}' "$out/$who-$tree" | sort -n)
        mid=$(( (runs + 1) / 2 ))
        echo "$tree, $who: wall median $(echo "$wall" | sed -n "${mid}p") ms" \
            "(min $(echo "$wall" | head -1)), user+sys median $(echo "$cpu" | sed -n "${mid}p") ms" \
            "(min $(echo "$cpu" | head -1)); load $(cut -d' ' -f1 /proc/loadavg)"
    done
done
