#!/usr/bin/env bash
# The per-task overhead of two strata builds, interleaved round by round on a file system of
# its own: 50 tasks of `true`, cache off, one at a time, against 50 × `bash -e -c true`. For a
# row of the suite that moved: is it the code or the machine?
#
#   sudo scripts/bench/overhead-ab.sh OLD_STRATA [ROUNDS]   (default 7; this tree's release build is "new")
set -euo pipefail
cd "$(dirname "$0")/../.."
old=${1:?usage: overhead-ab.sh OLD_STRATA [ROUNDS]}
rounds=${2:-7}
. scripts/bench/lib.sh
need_root
build_strata -p strata-cli
new=$strata
own_fs 4G strata-bench-ab
work=$mnt
n=50
mkdir -p "$work/ws"
{
    echo "tasks:"
    for i in $(seq 1 $n); do printf '  - key: t%s\n    cache: false\n    filter: []\n    run: "true"\n' "$i"; done
} > "$work/ws/strata.yml"
for _ in $(seq "$rounds"); do
    for v in old new; do
        t0=$(now); STRATA_CACHE_DIR=$work/cache-$v "${!v}" run -j 1 "$work/ws/strata.yml" >/dev/null 2>&1; t1=$(now)
        add "$v" "$(ms "$t0" "$t1")"
    done
    t0=$(now); for _ in $(seq 1 $n); do bash -e -c true; done; t1=$(now)
    add direct "$(ms "$t0" "$t1")"
done
echo "medians of $rounds: old $(med old) ms, new $(med new) ms, direct $(med direct) ms;" \
    "per task: old +$(( ($(med old) - $(med direct)) / n )) ms, new +$(( ($(med new) - $(med direct)) / n )) ms"
