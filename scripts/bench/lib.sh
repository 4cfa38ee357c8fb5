# What every benchmark script needs, sourced by them (`. scripts/bench/lib.sh`): tools, the
# release build, a file system of its own, the S3 server, timing and medians.
#
# Cleanups registered with `on_exit` run in reverse order when the script exits, however it
# exits; the S3 server is stopped before the file system under it is unmounted.

export PATH="$HOME/.cargo/bin:$PATH"
BENCH_NAME=$(basename "$0")

_bench_exits=()
on_exit() { _bench_exits=("$1" "${_bench_exits[@]}"); }
_bench_exit() {
    local step
    for step in "${_bench_exits[@]}"; do eval "$step" || true; done
}
trap _bench_exit EXIT

need_root() {
    [ "$(id -u)" -eq 0 ] || { echo "scripts/bench/$BENCH_NAME: needs root" >&2; exit 1; }
}

# need_tools TOOL...: installs the Debian packages of the missing ones (the package is named as
# the tool, except where mapped here).
need_tools() {
    local tool missing=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] && return
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        $(printf '%s\n' "${missing[@]}" | sed 's/^mkfs.erofs$/erofs-utils/; s/^nginx$/nginx-light/')
}

need_s3s_fs() {
    command -v s3s-fs >/dev/null || cargo install s3s-fs --version 0.14.1 --locked --features binary
}

# build_strata [CARGO ARGS...]: the release build; sets $strata.
build_strata() {
    cargo build --release --quiet "$@"
    strata=$PWD/target/release/strata
}

# direct_loop MNT: the loop device under MNT reads and writes its file direct, as a VM's disk
# does: without it, every block written is cached twice (the file system's page and the loop
# file's), and a write that goes around the page cache (O_DIRECT) would still land in it.
direct_loop() {
    losetup --direct-io=on "$(findmnt -no SOURCE "$1")"
}

# own_fs SIZE [NAME]: a fresh ext4 on a sparse loop image under /var/tmp, of a name of its own
# (two benchmarks at once must not share one); sets $mnt. File creation on the root file
# system is uneven after large deletions, and the figures must not depend on it.
own_fs() {
    local img
    img=$(mktemp "/var/tmp/${2:-strata-bench}.XXXXXX.img")
    mnt=${img%.img}
    mkdir -p "$mnt"
    truncate -s "$1" "$img"
    mkfs.ext4 -q -F "$img"
    mount -o loop "$img" "$mnt"
    direct_loop "$mnt"
    # A process that outlived the run (the S3 server exiting) can keep it busy for a moment.
    on_exit "umount '$mnt' 2>/dev/null || umount -l '$mnt' 2>/dev/null; rm -f '$img'; rmdir '$mnt' 2>/dev/null"
    on_exit "settled '$mnt'"
}

# s3_server DIR: s3s-fs on a free loopback port, serving DIR (bucket `bench` made); sets
# $endpoint, $s3pid, the AWS variables strata reads, and $sig, curl's arguments for SigV4
# (S3 wants a payload hash header; a user uploading with curl sends it unsigned).
s3_server() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$1/bench"
    s3s-fs --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench-secret "$1" \
        >/dev/null 2>&1 &
    s3pid=$!
    on_exit "kill $s3pid 2>/dev/null; wait $s3pid 2>/dev/null"
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
    export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_EC2_METADATA_DISABLED=true
    endpoint=http://127.0.0.1:$port
    sig=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "bench:bench-secret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
}

# remote_server DIR: the objects an s3_server stores under DIR, served as they are by nginx
# (`sendfile`) on a free loopback port; sets $remote_endpoint. It answers strata's S3 reads (a
# signed GET of an object) and curl's with the same bytes, and spends almost no CPU doing so: a
# stand-in for a cache that is not on this machine. s3s-fs spends 1.0–1.5 s of CPU to serve a
# 300 MB archive (it reads 4 KiB at a time through tokio's blocking pool: 135,000 context
# switches), which on 2 cores is taken from the restore it serves; a real S3's CPU is not the
# VM's. Read-only: uploads still go to the s3_server.
remote_server() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$1.nginx"
    cat > "$1.nginx/nginx.conf" <<EOF_NGINX
daemon off;
worker_processes 1;
user root;
error_log $1.nginx/error.log;
pid $1.nginx/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    server { listen 127.0.0.1:$port; root $1; location / { } }
}
EOF_NGINX
    nginx -c "$1.nginx/nginx.conf" -p "$1.nginx" &
    local pid=$!
    on_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
    kill -0 "$pid" || { echo "nginx did not start: $(cat "$1.nginx/error.log")" >&2; exit 1; }
    remote_endpoint=http://127.0.0.1:$port
}

# unmount_under DIR: detaches every mount under DIR (layer images a run with
# `--layer-images on` left mounted in its cache), deepest first, so that DIR can be removed.
unmount_under() {
    local at
    awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r at; do
        umount -l "$at" 2>/dev/null || true
    done
}

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { echo "scale=${3:-3}; $1 / $2" | bc | sed 's/^\./0./'; }
# Samples: `add NAME VALUE`, then `med NAME`.
declare -A S
add() { S[$1]="${S[$1]:-} $2"; }
med() { printf '%s\n' ${S[$1]} | median; }
# settled [DIR]: waits for the detached flushes runs leave behind (of caches under DIR), which
# still write into their cache.
settled() { while pgrep -f " settle-cache ${1:-}" >/dev/null; do sleep 0.05; done; }
# field NAME EVENT: a numeric field of the first JSON event of that kind on stdin.
field() { grep "\"event\":\"$2\"" | head -1 | sed "s/.*\"$1\":\([0-9]*\).*/\1/"; }
