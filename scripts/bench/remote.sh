#!/usr/bin/env bash
# Shared-cache save and restore, strata side by side with what a CI user does by hand, on the
# same ~650 MB / ~45k-file tree and the same S3 server (s3s-fs on loopback):
#
#   save:    strata publishing a task's layer   vs  tar -cf - | zstd -T0 -3 | curl -T (SigV4)
#   restore: strata run on an empty local cache vs  curl | zstd -d | tar -x
#
# Everything (tree, caches, the S3 server's storage) lives on a dedicated loop-mounted ext4 so
# that figures do not depend on the state of the root filesystem. Page cache is warm for both
# sides (nothing is dropped). Rounds are interleaved; medians are reported.
# Needs root, s3s-fs, zstd, curl (scripts/test installs them). Usage: remote.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
. scripts/bench/lib.sh
need_root
need_tools zstd curl python3
need_s3s_fs
build_strata
own_fs 12G
s3_server "$mnt/s3"

mkdir -p "$mnt/ws"
cp scripts/bench/gen-tree.py "$mnt/ws/"
cat > "$mnt/ws/strata.yml" <<'YAML'
tasks:
  - key: deps
    filter: [gen-tree.py]
    run: python3 gen-tree.py /opt/deps
YAML


# Machine A builds the layer once.
export STRATA_CACHE_DIR=$mnt/cache-a
"$strata" run --no-remote "$mnt/ws/strata.yml" >/dev/null 2>&1
layer=$(ls -d "$mnt"/cache-a/layers/*)
echo "tree: $(find "$layer" -type f | wc -l) files, $(du -sm "$layer" | cut -f1) MB (du)"

save_s=(); save_b=(); rest_s=(); rest_b=(); rest_bs=()
for r in $(seq "$rounds"); do
    # Save, strata: the task re-runs (--no-cache) and publishes to a fresh prefix; the push time
    # (archive + compress + upload, all streamed from the layer) comes from its event.
    push=$("$strata" run --json --no-cache --remote "s3://bench/r$r?endpoint=$endpoint" \
        "$mnt/ws/strata.yml" 2>/dev/null | grep '"event":"task-pushed"' \
        | sed 's/.*"duration_ms":\([0-9]*\).*/\1/')
    save_s+=("$push")
    # Save, by hand: tar | zstd | curl to the same server.
    sync
    t0=$(now)
    tar -C "$layer" -cf - . | zstd -T0 -3 -q > "$mnt/upload.tar.zst"
    curl -sS -f "${sig[@]}" -T "$mnt/upload.tar.zst" "$endpoint/bench/manual/r$r.tar.zst"
    t1=$(now)
    rm -f "$mnt/upload.tar.zst"
    save_b+=("$(ms "$t0" "$t1")")

    # Restore, strata: machine B with an empty local cache; the whole run, wall clock.
    sync
    t0=$(now)
    STRATA_CACHE_DIR=$mnt/cache-b$r "$strata" run --remote "s3://bench/r$r?endpoint=$endpoint" \
        "$mnt/ws/strata.yml" >/dev/null 2>&1
    t1=$(now)
    rest_s+=("$(ms "$t0" "$t1")")
    test "$(ls "$mnt/cache-b$r/layers" | wc -l)" = 1
    # Restore, by hand: curl | zstd -d | tar -x (and the same followed by a sync of the
    # filesystem).
    mkdir -p "$mnt/manual$r"
    # strata flushes its restored layer after it exits, in a detached process: wait for that
    # writeback, so that the by-hand side does not pay for it.
    sync
    t0=$(now)
    curl -sS -f "${sig[@]}" "$endpoint/bench/manual/r$r.tar.zst" | zstd -d -q | tar -x -C "$mnt/manual$r"
    t1=$(now)
    sync -f "$mnt/manual$r"
    t2=$(now)
    rest_b+=("$(ms "$t0" "$t1")"); rest_bs+=("$(ms "$t0" "$t2")")
    echo "round $r: save strata ${save_s[-1]} ms, by hand ${save_b[-1]} ms;" \
        "restore strata ${rest_s[-1]} ms, by hand ${rest_b[-1]} ms (${rest_bs[-1]} ms with sync)"
    unmount_under "$mnt/cache-b$r"
    rm -rf "$mnt/cache-b$r" "$mnt/manual$r"
done

ms_s=$(printf '%s\n' "${save_s[@]}" | median); ms_b=$(printf '%s\n' "${save_b[@]}" | median)
mr_s=$(printf '%s\n' "${rest_s[@]}" | median); mr_b=$(printf '%s\n' "${rest_b[@]}" | median)
mr_bs=$(printf '%s\n' "${rest_bs[@]}" | median)
ratio() { echo "scale=2; $1 / $2" | bc; }
echo
echo "median save:    strata $ms_s ms, tar|zstd|curl $ms_b ms: $(ratio "$ms_s" "$ms_b")x"
echo "median restore: strata $mr_s ms, curl|zstd|tar $mr_b ms: $(ratio "$mr_s" "$mr_b")x" \
    "(with sync $mr_bs ms: $(ratio "$mr_s" "$mr_bs")x)"
