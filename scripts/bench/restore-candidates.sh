#!/usr/bin/env bash
# A cold remote hit of the 45k-file layer, and the ways it could be made cheaper, measured side
# by side on the same tree and the same S3 server (s3s-fs on loopback), interleaved round by
# round (the order rotates), medians reported (issue 13, item 2):
#
#   strata    strata run on an empty local cache (lookup, download, verify, unpack, index)
#   strata_img  the same with --layer-images on: the layer converted into an erofs image as it
#             downloads, placed in the local cache and mounted (what `strata run` really does)
#   tar       curl | zstd -d | tar -x                                   (the row's comparison)
#   erofs     curl | zstd -d > layer.erofs; mount -t erofs layer.erofs  (one file, then a mount;
#             the image made beforehand by mkfs.erofs and stored in S3 as its own object)
#   strata_erofs  strata's chunked blob (the tar.zst) converted while it downloads into an erofs
#             image by strata's own writer, mounted, and its tree digest made from the entries
#             the conversion listed (crates/strata-cache/examples/fetch_erofs.rs)
#   curl      curl > /dev/null of the layer archive                     (the download's floor)
#   chunks    strata's own S3 reader alone (4 chunks in flight), bytes discarded
#   apply     strata's unpacker alone, from the archive in a local file
#   old_img   strata_img with another build of strata, OLD=/path/to/strata (an A/B of a change)
#   strata_far, tar_far, curl_far, old_far   strata_img, tar, curl and old_img with the cache not
#             on this machine's cores: the same stored objects served by nginx (`sendfile`,
#             almost no CPU), as a CI VM's remote S3 is (s3s-fs spends 1.0-1.5 s of CPU on the
#             2 cores to serve the archive); its CPU is not in the S3 server column
#
# and, once: the erofs image's size and compressed size against the tar archive's, what reading
# every file costs through the mount and from the unpacked directory, and what re-verifying each
# costs (the layer's tree digest over the directory and over the mount, which must be equal,
# against one hash of the image file). The image is made with Debian's mkfs.erofs (erofs-utils
# 1.5: from a directory, uncompressed), which is enough to learn the figures; strata would write
# the image itself.
#
#   sudo scripts/bench/restore-candidates.sh [ROUNDS]     (default 3; needs root)
#   sudo STEPS="strata strata_img tar" scripts/bench/restore-candidates.sh 5   (only those rows)
#   sudo PERF=/tmp/img STEPS=strata_img scripts/bench/restore-candidates.sh 1   (the image restore
#             under `perf record --call-graph dwarf`, written to /tmp/img.1)
#   sudo WRAP="perf stat -o /tmp/stat -e context-switches --" STEPS=strata_img …   (any wrapper)
#   sudo PIN=1 scripts/bench/restore-candidates.sh 5    (the S3 server on CPU 1, every measured
#             command on CPU 0: a one-CPU client whose server is elsewhere, as a real S3 is)
#
# Its own loop-mounted ext4 (/var/tmp/strata-restore-bench.img), so it can run beside the suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
. scripts/bench/lib.sh
need_root
need_tools zstd curl b3sum python3 mkfs.erofs nginx
need_s3s_fs
cargo build --release --quiet --bin strata
cargo build --release --quiet -p strata-cache --example fetch --example fetch_erofs
cargo build --release --quiet -p strata-oci --example apply
cargo build --release --quiet -p strata-key --example tree
strata=$PWD/target/release/strata
ex=$PWD/target/release/examples

img=/var/tmp/strata-restore-bench.img
mnt=/var/tmp/strata-restore-bench-mnt
# lib.sh's cleanups (the nginx of remote_server) first, then this script's own.
cleanup() {
    _bench_exit
    [ -n "${s3pid:-}" ] && kill "$s3pid" 2>/dev/null || true
    for m in "$mnt"/m-* "$mnt"/cache-i*/mounts/*; do umount "$m" 2>/dev/null || true; done
    for m in "$mnt"/m-* "$mnt"/cache-i*/mounts/*; do umount "$m" 2>/dev/null || true; done
    umount "$mnt" 2>/dev/null || true
    rm -f "$img"
}
trap cleanup EXIT
mkdir -p "$mnt"
umount "$mnt" 2>/dev/null || true
rm -f "$img"
truncate -s 12G "$img"
mkfs.ext4 -q -F "$img"
mount -o loop "$img" "$mnt"
# As a VM's disk: no second copy of each block in the loop file's page cache.
losetup --direct-io=on "$(findmnt -no SOURCE "$mnt")"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$mnt/s3/bench"
pin_server=() pin_client=()
if [ "${PIN:-0}" = 1 ]; then pin_server=(taskset -c 1) pin_client=(taskset -c 0); fi
"${pin_server[@]}" s3s-fs --host 127.0.0.1 --port "$port" --access-key bench \
    --secret-key bench-secret "$mnt/s3" >/dev/null 2>&1 &
s3pid=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
# The same objects as they are, from nginx: a cache whose CPU is not this machine's.
remote_server "$mnt/s3"
far=$remote_endpoint
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
endpoint=http://127.0.0.1:$port
sig=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "bench:bench-secret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
declare -A S
add() { S[$1]="${S[$1]:-} $2"; }
med() { printf '%s\n' ${S[$1]} | median; }
all() { echo ${S[$1]}; }
settled() { while pgrep -f " settle-cache" >/dev/null; do sleep 0.05; done; }
# CPU seconds the S3 server has used so far (user + system, in clock ticks).
s3cpu() { awk '{print $14 + $15}' "/proc/$s3pid/stat"; }

# The layer, made once by strata and published to S3 (strata's chunked blob), then the same
# tree as a plain tar.zst and as a zstd-compressed erofs image, uploaded as single objects.
mkdir -p "$mnt/ws"
cp scripts/bench/gen-tree.py "$mnt/ws/"
printf 'tasks:\n  - key: deps\n    filter: [gen-tree.py]\n    run: python3 gen-tree.py /opt/deps\n' \
    > "$mnt/ws/strata.yml"
STRATA_CACHE_DIR=$mnt/cache-a "$strata" run --remote "s3://bench/c?endpoint=$endpoint" \
    "$mnt/ws/strata.yml" >/dev/null 2>&1
settled
layer=$(ls -d "$mnt"/cache-a/layers/*)
tar -C "$layer" -cf - . | zstd -T0 -3 -q > "$mnt/layer.tar.zst"
mkfs.erofs "$mnt/layer.erofs" "$layer" >/dev/null 2>&1
zstd -T0 -3 -q "$mnt/layer.erofs" -o "$mnt/layer.erofs.zst"
curl -sS -f "${sig[@]}" -T "$mnt/layer.tar.zst" "$endpoint/bench/manual/layer.tar.zst"
curl -sS -f "${sig[@]}" -T "$mnt/layer.erofs.zst" "$endpoint/bench/manual/layer.erofs.zst"
# The layer archive's digest, for strata's reader alone: the one blob stored in chunks.
blob=$(find "$mnt/s3/bench/c" -name '*.chunks' | head -1)
digest=sha256:$(basename "$blob" .chunks)
files=$(find "$layer" -type f | wc -l)
echo "layer: $files files, $(du -sm "$layer" | cut -f1) MB on disk" >&2
echo "tar.zst $(stat -c %s "$mnt/layer.tar.zst") B; erofs image $(stat -c %s "$mnt/layer.erofs") B," \
    "zstd -3: $(stat -c %s "$mnt/layer.erofs.zst") B" >&2

# timed NAME CMD...: wall ms, CPU ms of CMD and everything it waited for (user + system), and
# CPU ms the S3 server spent meanwhile; each on a flushed filesystem.
timed() {
    local name=$1; shift
    sync
    local c0 t0 t1
    c0=$(s3cpu); t0=$(now)
    "${pin_client[@]}" /usr/bin/time -f "%U %S" -o "$mnt/cpu" "$@"
    t1=$(now)
    add "$name" "$(ms "$t0" "$t1")"
    add "${name}_cpu" "$(awk '{printf "%d", ($1 + $2) * 1000}' "$mnt/cpu")"
    add "${name}_s3" $(( ($(s3cpu) - c0) * 10 ))
}
# mount(2) straight from the image file: the kernel's file-backed erofs (no loop device, which
# mount(8) would set up for a regular file).
mount_file() { python3 -c 'import ctypes, sys; l = ctypes.CDLL(None, use_errno=True); sys.exit(l.mount(sys.argv[1].encode(), sys.argv[2].encode(), b"erofs", 1, None) != 0)' "$1" "$2"; }
export -f mount_file
export endpoint mnt
sig_s=$(printf '%q ' "${sig[@]}")
export sig_s
run_strata() {
    timed strata env STRATA_CACHE_DIR="$mnt/cache-b$r" "$strata" run --layer-images off \
        --remote "s3://bench/c?endpoint=$endpoint" "$mnt/ws/strata.yml" >/dev/null 2>&1
    test "$(ls "$mnt/cache-b$r/layers" | wc -l)" = 1
    settled
}
# image_restore NAME CACHE ENDPOINT COMMAND...: `COMMAND run --layer-images on` on an empty
# cache CACHE$r from the chunked blob at ENDPOINT, timed as NAME; it must restore one image.
image_restore() {
    local name=$1 cache=$mnt/$2$r from=$3
    shift 3
    timed "$name" env STRATA_CACHE_DIR="$cache" "$@" run --layer-images on \
        --remote "s3://bench/c?endpoint=$from" "$mnt/ws/strata.yml" >/dev/null 2>&1
    test "$(ls "$cache/layers" | grep -c '\.erofs$')" = 1
    settled
}
run_strata_img() {
    local wrap=()
    [ -n "${PERF:-}" ] && wrap=(perf record -q -F 1999 --call-graph dwarf,16384 -o "$PERF.$r" --)
    [ -n "${WRAP:-}" ] && read -r -a wrap <<< "$WRAP"
    image_restore strata_img cache-i "$endpoint" "${wrap[@]}" "$strata"
}
run_tar() {
    mkdir "$mnt/tar$r"
    timed tar bash -c 'eval "sig=($sig_s)"; curl -sS -f "${sig[@]}" "$endpoint/bench/manual/layer.tar.zst" | zstd -d -q | tar -x -C "$mnt/tar'"$r"'"'
}
run_erofs() {
    mkdir "$mnt/m-$r"
    timed erofs bash -c 'eval "sig=($sig_s)"; curl -sS -f "${sig[@]}" "$endpoint/bench/manual/layer.erofs.zst" | zstd -d -q > "$mnt/e'"$r"'.erofs" && mount_file "$mnt/e'"$r"'.erofs" "$mnt/m-'"$r"'"'
}
run_strata_erofs() {
    mkdir "$mnt/m-s$r"
    timed strata_erofs "$ex/fetch_erofs" "$endpoint" bench c "$digest" "$mnt/s$r.erofs" "$mnt/m-s$r" \
        2>> "$mnt/strata_erofs.log"
    # Once more, not timed: what walking the mount would have cost instead.
    umount "$mnt/m-s$r"; rm -f "$mnt/s$r.erofs"
    WALK=1 "$ex/fetch_erofs" "$endpoint" bench c "$digest" "$mnt/s$r.erofs" "$mnt/m-s$r" \
        2>&1 | tail -1 >> "$mnt/strata_erofs.log"
}
run_old_img() { image_restore old_img cache-io "$endpoint" "${OLD:?OLD=/path/to/strata}"; }
run_strata_far() { image_restore strata_far cache-if "$far" "$strata"; }
run_old_far() { image_restore old_far cache-iof "$far" "${OLD:?OLD=/path/to/strata}"; }
run_tar_far() {
    mkdir "$mnt/tarf$r"
    timed tar_far bash -c 'curl -sS -f "'"$far"'/bench/manual/layer.tar.zst" | zstd -d -q | tar -x -C "$mnt/tarf'"$r"'"'
}
run_curl_far() {
    timed curl_far bash -c 'curl -sS -f "'"$far"'/bench/manual/layer.tar.zst" -o /dev/null'
}
run_curl() {
    timed curl bash -c 'eval "sig=($sig_s)"; curl -sS -f "${sig[@]}" "$endpoint/bench/manual/layer.tar.zst" -o /dev/null'
}
run_chunks() {
    timed chunks "$ex/fetch" "$endpoint" bench c "$digest" 2>/dev/null
}
run_apply() {
    timed apply "$ex/apply" "$mnt/layer.tar.zst" "$mnt/apply$r" 2>/dev/null
}
all_steps="strata strata_img tar erofs strata_erofs curl chunks apply strata_far tar_far curl_far"
read -r -a names <<< "${STEPS:-$all_steps}"
steps=("${names[@]/#/run_}")
for r in $(seq "$rounds"); do
    n=${#steps[@]}
    for i in $(seq 0 $((n - 1))); do "${steps[$(( (i + r) % n ))]}"; done
    line="round $r (load $(cut -d' ' -f1 /proc/loadavg)):"
    for k in "${names[@]}"; do line+=" $k ${S[$k]##* }"; done
    echo "$line" >&2
    if [ "$r" != "$rounds" ]; then
        umount "$mnt/m-$r" "$mnt/m-s$r" "$mnt"/cache-i"$r"/mounts/* "$mnt"/cache-io"$r"/mounts/* \
            "$mnt"/cache-if"$r"/mounts/* "$mnt"/cache-iof"$r"/mounts/* 2>/dev/null || true
        rm -rf "$mnt/cache-if$r" "$mnt/cache-iof$r" "$mnt/tarf$r"
        rm -rf "$mnt/cache-b$r" "$mnt/cache-i$r" "$mnt/cache-io$r" "$mnt/tar$r" "$mnt/e$r.erofs" "$mnt/s$r.erofs" \
            "$mnt/m-$r" "$mnt/m-s$r" "$mnt/apply$r"
    fi
done

# Once, on the last round's copies: reading every file (page cache as the restore left it),
# from the directory tar made and through strata's image, then the tree digest of each (they
# must be equal), against one BLAKE3 hash of the image file.
r=$rounds
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
if [ -n "${STEPS:-}" ]; then
    echo
    echo "## Cold restore ($rounds rounds, medians; STEPS=$STEPS) — $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| what | wall ms (median) | rounds | vs first | CPU ms | S3 server CPU ms |"
    echo "|---|---|---|---|---|---|"
    for k in "${names[@]}"; do
        echo "| $k | $(med $k) | $(all $k) | $(ratio "$(med $k)" "$(med "${names[0]}")")× | $(med ${k}_cpu) | $(med ${k}_s3) |"
    done
    exit 0
fi
readall() { (cd "$1" && find . -type f -print0 | xargs -0 cat > /dev/null); }
t0=$(now); readall "$mnt/tar$r"; t1=$(now); readall "$mnt/m-s$r"; t2=$(now)
read_dir=$(ms "$t0" "$t1"); read_mount=$(ms "$t1" "$t2")
t0=$(now); d_dir=$("$ex/tree" "$mnt/tar$r" 2>&1 | tail -1); t1=$(now)
d_mount=$("$ex/tree" "$mnt/m-s$r" 2>&1 | tail -1); t2=$(now)
b3sum "$mnt/s$r.erofs" > /dev/null; t3=$(now)
echo "tree digest, directory: $d_dir; mount: $d_mount" >&2
[ "${d_dir%% *}" = "${d_mount%% *}" ] || { echo "the mount's tree digest differs from the directory's" >&2; exit 1; }

echo
echo "## Cold restore candidates ($rounds rounds, medians) — $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| what | wall ms (median) | rounds | vs curl \| zstd -d \| tar -x | CPU ms | S3 server CPU ms |"
echo "|---|---|---|---|---|---|"
for k in "${names[@]}"; do
    echo "| $k | $(med $k) | $(all $k) | $(ratio "$(med $k)" "$(med tar)")× | $(med ${k}_cpu) | $(med ${k}_s3) |"
done
echo "sizes: tar.zst $(stat -c %s "$mnt/layer.tar.zst") B; mkfs.erofs image $(stat -c %s "$mnt/layer.erofs") B (zstd -3: $(stat -c %s "$mnt/layer.erofs.zst") B); strata's image $(stat -c %s "$mnt/s$r.erofs") B"
echo "strata_erofs phases (image written, mounted, tree digest from the entries; then, in a second untimed run, walking the mount instead), per round:"
sed 's/^/    /' "$mnt/strata_erofs.log"
echo "read every file: directory $read_dir ms, erofs mount $read_mount ms"
echo "re-verify: tree digest of the directory $(ms "$t0" "$t1") ms (3 runs), of the mount $(ms "$t1" "$t2") ms (3 runs); b3sum of the image $(ms "$t2" "$t3") ms"
