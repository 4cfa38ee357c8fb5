#!/usr/bin/env bash
# Task output throughput: a task printing SIZE bytes through strata, against the same command
# writing to a file directly. Cases: strata's terminal display redirected to a file, `--json`
# to /dev/null, and the display on a pseudo-terminal (`script`). Peak RSS is strata's own
# (`/usr/bin/time -f %M`). Needs root and a release build.
#
#   sudo scripts/bench/output.sh [SIZE_MB] [ROUNDS] [STRATA]
#
# Two outputs: `yes` (2-byte lines, the worst case for per-line work) and 100-byte lines.
set -euo pipefail
cd "$(dirname "$0")/../.."
mb=${1:-500}
rounds=${2:-3}
strata=${3:-}
. scripts/bench/lib.sh
if [ -z "$strata" ]; then
    build_strata -p strata-cli
fi
work=$(mktemp -d /var/tmp/strata-bench-out.XXXXXX)
on_exit "rm -rf '$work'"
export STRATA_CACHE_DIR=$work/cache
mkdir -p "$work/ws"
rate() { echo "scale=1; $mb * 1048576 * 1000 / ($2 - $1)" | bc; }

declare -A gen=(
    [yes]="{ yes || true; } | head -c ${mb}M"
    [lines100]="{ yes 'the quick brown fox jumps over the lazy dog, then the lazy dog sleeps on while the fox runs' || true; } | head -c ${mb}M"
)
for kind in yes lines100; do
    cmd=${gen[$kind]}
    printf 'tasks:\n  - key: out\n    cache: false\n    run: %s\n' "\"$cmd\"" > "$work/ws/strata.yml"
    for round in $(seq 1 "$rounds"); do
        t0=$(now); bash -c "$cmd > $work/direct.out"; t1=$(now)
        rm -f "$work/direct.out"
        /usr/bin/time -o "$work/rss" -f %M "$strata" run "$work/ws/strata.yml" > "$work/display.out" 2>&1; t2=$(now)
        file_rss=$(cat "$work/rss"); shown=$(stat -c %s "$work/display.out"); rm -f "$work/display.out"
        /usr/bin/time -o "$work/rss" -f %M "$strata" run --json "$work/ws/strata.yml" > /dev/null; t3=$(now)
        json_rss=$(cat "$work/rss")
        script -qfec "/usr/bin/time -o $work/rss -f %M $strata run $work/ws/strata.yml" /dev/null > /dev/null; t4=$(now)
        tty_rss=$(cat "$work/rss")
        echo "$kind ${mb} MB round $round: direct $(rate "$t0" "$t1") MB/s;" \
            "strata > file $(rate "$t1" "$t2") MB/s (rss ${file_rss} KB, display ${shown} bytes);" \
            "--json > /dev/null $(rate "$t2" "$t3") MB/s (rss ${json_rss} KB);" \
            "terminal (script) $(rate "$t3" "$t4") MB/s (rss ${tty_rss} KB)"
    done
done
