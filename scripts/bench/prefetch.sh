#!/usr/bin/env bash
# Prefetch (issue 13, item 3): the cold run of an ephemeral machine with and without
# `--prefetch`, interleaved round by round, as ratios. The toolchain (gen-tree.py's tree at
# $STRATA_BENCH_SCALE, 0.5 by default: ~22k files, ~330 MB) and a dependency layer on it are in
# the shared cache (S3 on loopback, read-only for the measured runs so that nothing they build
# is published); one edit makes the last task run. Two pipelines:
#
#   after   a task that always runs (`cache: false`, a `sleep $SLOW` standing for a linter)
#           comes first, and the toolchain is `after:` it: without prefetch nothing is looked up
#           or downloaded until it ends; with it, the layers download meanwhile.
#   chain   the cold-VM shape (toolchain -> deps -> build, each filtered): nothing waits on
#           `after:` or `-j`, so prefetch has little to win; it must not lose.
#
# Variants: off (`--prefetch off`, what strata did before), needed, all (the default).
#
# Everything (the S3 server's files, the workspace, the local caches) lives under
# $STRATA_BENCH_DIR (default /var/tmp; /dev/shm keeps a shared machine's disk out of it).
#
#   sudo scripts/bench/prefetch.sh [ROUNDS]     (default 3; needs root, s3s-fs)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
scale=${STRATA_BENCH_SCALE:-0.5}
slow=${SLOW:-4}
. scripts/bench/lib.sh
need_root
need_s3s_fs
build_strata
gen=$PWD/scripts/bench/gen-tree.py

dir=$(mktemp -d "${STRATA_BENCH_DIR:-/var/tmp}/strata-bench-prefetch.XXXXXX")
on_exit "unmount_under '$dir'; rm -rf '$dir'"
on_exit "settled '$dir'"
s3_server "$dir/s3"
remote="s3://bench/prefetch?endpoint=$endpoint"

ws=$dir/ws
mkdir -p "$ws/src"
cp "$gen" "$ws/"
echo 'main() {}' > "$ws/src/main.c"
toolchain="python3 gen-tree.py /opt/toolchain $scale"
deps="python3 gen-tree.py /opt/deps $(echo "0.1 * $scale" | bc -l) && echo deps-1 > /opt/deps/VERSION"
build='mkdir -p /opt/out && find /opt/toolchain -type f | wc -l > /opt/out/build.txt && cat /opt/deps/VERSION src/main.c >> /opt/out/build.txt'
cat > "$ws/after.yml" <<EOF
tasks:
  - key: lint
    cache: false
    run: sleep $slow
  - key: toolchain
    after: [lint]
    filter: [gen-tree.py]
    run: $toolchain
  - key: deps
    use: [toolchain]
    filter: [gen-tree.py]
    run: $deps
  - key: build
    use: [deps]
    filter: [src]
    run: '$build'
EOF
cat > "$ws/chain.yml" <<EOF
tasks:
  - key: toolchain
    filter: [gen-tree.py]
    run: $toolchain
  - key: deps
    use: [toolchain]
    filter: [gen-tree.py]
    run: $deps
  - key: build
    use: [deps]
    filter: [src]
    run: '$build'
EOF

# Machine A ran both and published everything; then the source changes.
for p in after chain; do
    STRATA_CACHE_DIR=$dir/cache-a "$strata" run --shared-cache "$remote" --workspace "$ws" \
        "$ws/$p.yml" > "$dir/a-$p.log" 2>&1 || { tail -30 "$dir/a-$p.log" >&2; exit 1; }
done
settled
rm -rf "$dir/cache-a"
echo 'main() { return 1; }' > "$ws/src/main.c"

variants=(off needed all)
for r in $(seq "$rounds"); do
    echo "round $r/$rounds..." >&2
    for p in after chain; do
        # Interleaved: each round starts from another variant.
        for i in 0 1 2; do
            v=${variants[$(( (i + r) % 3 ))]}
            cache=$dir/cache-$p-$v-$r
            sync
            t0=$(now)
            STRATA_CACHE_DIR=$cache "$strata" run --json --prefetch "$v" \
                --shared-cache "$remote,ro" --workspace "$ws" "$ws/$p.yml" > "$dir/$p-$v-$r.json" \
                || { tail -5 "$dir/$p-$v-$r.json" >&2; exit 1; }
            t1=$(now)
            add "$p-$v" "$(ms "$t0" "$t1")"
            add "$p-$v-fetch" "$(python3 -c "
import json
for line in open('$dir/$p-$v-$r.json'):
    e = json.loads(line)
    if e.get('event') == 'layer-fetched' and e['task'] == 'toolchain': print(e['duration_ms'])")"
            grep -q '"ran":1,' "$dir/$p-$v-$r.json" || grep -q '"ran":2,' "$dir/$p-$v-$r.json" \
                || { echo "$p/$v: not the expected tasks ran" >&2; tail -1 "$dir/$p-$v-$r.json" >&2; exit 1; }
            settled
            unmount_under "$cache"
            rm -rf "$cache"
        done
    done
done

bytes=$(python3 -c "
import json
for line in open('$dir/after-all-1.json'):
    e = json.loads(line)
    if e.get('event') == 'run-finished': print(e['restored_bytes'])")
echo
echo "prefetch: toolchain scale $scale, $(( bytes / 1000000 )) MB downloaded per cold run, lint = sleep $slow, $rounds rounds (median ms)"
printf '%-8s %10s %10s %10s %14s %14s\n' pipeline off needed all needed/off all/off
for p in after chain; do
    printf '%-8s %10s %10s %10s %14s %14s\n' "$p" "$(med "$p-off")" "$(med "$p-needed")" "$(med "$p-all")" \
        "$(ratio "$(med "$p-needed")" "$(med "$p-off")")" "$(ratio "$(med "$p-all")" "$(med "$p-off")")"
done
echo "the toolchain layer's own fetch (download, verify, unpack), median ms:"
for p in after chain; do
    printf '%-8s %10s %10s %10s\n' "$p" "$(med "$p-off-fetch")" "$(med "$p-needed-fetch")" "$(med "$p-all-fetch")"
done
echo "every run (ms):"
for k in "${!S[@]}"; do echo "  $k:${S[$k]}"; done | sort
