#!/usr/bin/env bash
# The cold-VM run (issue 13): what an ephemeral CI machine pays. A pipeline whose toolchain
# (the 45k-file, ~650 MB tree) and dependency layers are in the shared cache (S3 on loopback),
# a fresh clone of a 100k-file workspace, an empty local cache, and one commit that makes only
# the last two tasks run. Side by side, interleaved round by round:
#
#   cold     strata run on the fresh clone with an empty local cache
#   warm     the same commit with the local cache of the machine that ran the previous one
#   by hand  what a user does today: curl | zstd -d | tar -x of each layer the two tasks need,
#            then their commands
#   floor    downloading the bytes that must move (curl > /dev/null) plus the commands' own time
#
# and where strata's cold time goes (from its --json events). The clone is the same for every
# variant and is timed on its own. Everything lives on a loop-mounted ext4, as in `run`.
#
#   sudo scripts/bench/cold-vm.sh [ROUNDS]      (default 3; needs root, s3s-fs, zstd, curl, git)
#   sudo OLD=/path/to/strata scripts/bench/cold-vm.sh [ROUNDS]   (also the image run of another
#                                                                build: an A/B of a change)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
# STRATA_BENCH_SCALE shrinks both trees for a quick check of the script itself (figures at 1).
scale=${STRATA_BENCH_SCALE:-1}
. scripts/bench/lib.sh
need_root
need_tools zstd curl git python3 nginx
need_s3s_fs
build_strata
gen=$PWD/scripts/bench/gen-tree.py
own_fs 24G strata-coldvm
s3_server "$mnt/s3"
remote="s3://bench/cold?endpoint=$endpoint"
# The same objects read from nginx (remote_server in lib.sh): a cache whose CPU is not this
# machine's, as a CI VM's S3 is. A run reads from it and publishes to the S3 server.
remote_server "$mnt/s3"
far_caches=(--shared-cache "s3://bench/cold?endpoint=$remote_endpoint,ro" --shared-cache "$remote")

# --- The repository ---------------------------------------------------------------------------
# The commands take their root from $ROOT (empty in strata's sandbox), so that the by-hand
# variant runs the very same commands over the trees it unpacked itself.
# (No `head` in these pipelines: under `pipefail` the writer it leaves behind fails with SIGPIPE.)
# `build` says on stderr how long its two reads took, so that strata's sandbox (through the
# layer stack and the checkout view) and the by-hand trees can be compared part by part.
build_cmd='t0=$(date +%s%N); mkdir -p $ROOT/opt/out && find $ROOT/opt/toolchain -name "*.so" | sort | sed -n 1,2000p | xargs cat | sha256sum > $ROOT/opt/out/build.txt; t1=$(date +%s%N); find src -type f -name "*.js" | sort | xargs cat | sha256sum >> $ROOT/opt/out/build.txt && cat $ROOT/opt/deps/VERSION >> $ROOT/opt/out/build.txt; t2=$(date +%s%N); echo "parts: $(( (t1 - t0) / 1000000 )) $(( (t2 - t1) / 1000000 ))" >&2'
test_cmd='test $(wc -l < $ROOT/opt/out/build.txt) = 3 && grep -q deps-1 $ROOT/opt/out/build.txt && find src -type f -name "*.json" | sort | xargs cat | sha256sum > $ROOT/opt/out/test.txt'
repo=$mnt/origin
mkdir -p "$repo"
echo "generating the 100,000-file repository..." >&2
python3 "$gen" "$repo/src" "$(echo "2.23 * $scale" | bc -l)" small 2>/dev/null
cp "$gen" "$repo/"
cat > "$repo/strata.yml" <<EOF
tasks:
  - key: toolchain
    filter: [gen-tree.py]
    run: python3 gen-tree.py /opt/toolchain $scale
  - key: deps
    use: [toolchain]
    filter: [gen-tree.py]
    run: python3 gen-tree.py /opt/deps $(echo "0.2 * $scale" | bc -l) && echo deps-1 > /opt/deps/VERSION
  - key: build
    use: [deps]
    filter: ["src/**"]
    run: '$build_cmd'
  - key: test
    use: [build]
    filter: ["src/**"]
    run: '$test_cmd'
EOF
# No automatic gc in the origin: one detached after the edit's commit packs the 100k loose
# objects and deletes them while a round clones them (`git clone` then fails at random).
git -C "$repo" init -q && git -C "$repo" config gc.auto 0 && git -C "$repo" add -A && git -C "$repo" -c user.name=b -c user.email=b@b commit -qm base
nfiles=$(git -C "$repo" ls-files | wc -l)

# Machine A ran the base commit and published everything; then one source file changes.
git clone -q "$repo" "$mnt/a"
STRATA_CACHE_DIR=$mnt/cache-a "$strata" run --shared-cache "$remote" "$mnt/a/strata.yml" > "$mnt/a.log" 2>&1 \
    || { tail -30 "$mnt/a.log" >&2; exit 1; }
settled
# What the shared cache holds now, for each strata variant to start from: a run publishes what
# it builds, and the next variant must not find it.
cp -al "$mnt/s3/bench/cold" "$mnt/s3-published"
published() { rm -rf "$mnt/s3/bench/cold"; cp -al "$mnt/s3-published" "$mnt/s3/bench/cold"; }
echo "// edited" >> "$repo/src/pkg000/mod0/file0.js"
git -C "$repo" -c user.name=b -c user.email=b@b commit -qam edit

# The by-hand variant's tarballs (what a CI user's cache step would have uploaded).
layer_of() {
    STRATA_CACHE_DIR=$mnt/cache-a "$strata" plan --json --no-shared-cache "$mnt/a/strata.yml" 2>/dev/null \
        | python3 -c "
import json, sqlite3, sys
key = [r['key'] for r in json.load(sys.stdin) if r['task'] == '$1'][0]
db = sqlite3.connect('$mnt/cache-a/index.sqlite')
print(db.execute('SELECT layer FROM entries WHERE key = ?', (key,)).fetchone()[0])"
}
for t in toolchain deps; do
    tar -C "$mnt/cache-a/layers/$(layer_of $t)" -cf - . | zstd -T0 -3 -q > "$mnt/$t.tar.zst"
    curl -sS -f "${sig[@]}" -T "$mnt/$t.tar.zst" "$endpoint/bench/manual/$t.tar.zst"
done
bytes=$(( $(stat -c %s "$mnt/toolchain.tar.zst") + $(stat -c %s "$mnt/deps.tar.zst") ))

for r in $(seq "$rounds"); do
    echo "round $r/$rounds..." >&2
    # The clone every variant starts from (timed once per round, not part of any variant).
    sync
    t0=$(now); git clone -q "$repo" "$mnt/clone$r"; t1=$(now)
    add clone "$(ms "$t0" "$t1")"
    cp -a "$mnt/clone$r" "$mnt/hand$r-ws"

    # strata_cold NAME IMAGES [STRATA]: a cold run with `--layer-images IMAGES`, its events in
    # NAME$r.json, its time as sample NAME. It must run `build` and `test` (and restore the
    # rest), and with images on, restore images. Its shared caches: "${caches[@]}".
    caches=(--shared-cache "$remote")
    strata_cold() {
        local events=$mnt/$1$r.json
        published
        sync
        t0=$(now)
        STRATA_CACHE_DIR=$mnt/cache-$1$r "${3:-$strata}" run --layer-images "$2" --json "${caches[@]}" "$mnt/clone$r/strata.yml" > "$events" 2>/dev/null
        t1=$(now)
        add "$1" "$(ms "$t0" "$t1")"
        [ "$(grep -c '"event":"task-passed"' "$events")" = 2 ] \
            || { echo "cold-vm.sh: $events did not run exactly build and test" >&2; exit 1; }
        if grep -q '"event":"layer-images-unavailable"' "$events"; then
            echo "cold-vm.sh: this kernel cannot mount layer images" >&2
            exit 1
        fi
        settled
    }
    cold() { strata_cold cold off; }
    # The same with the layers restored as erofs images (`on`; `auto`, the default, is the
    # same where the kernel mounts them).
    cold_img() { strata_cold img on; }
    cold_old() { [ -z "${OLD:-}" ] || strata_cold old on "$OLD"; }
    # The image run reading from the cache that is not on this machine's cores.
    cold_far() { caches=("${far_caches[@]}"); strata_cold far on; caches=(--shared-cache "$remote"); }
    # by_hand [NAME ENDPOINT CURL-ARGS...]: the layers by hand from ENDPOINT (by default the S3
    # server, signed), then the commands.
    by_hand() {
        local name=${1:-hand} from=${2:-$endpoint} dir=$mnt/${1:-hand}$r
        local args=("${sig[@]}")
        [ $# -gt 1 ] && args=("${@:3}")
        sync
        t0=$(now)
        mkdir -p "$dir/opt"
        for t in toolchain deps; do
            curl -sS -f ${args[@]+"${args[@]}"} "$from/bench/manual/$t.tar.zst" | zstd -d -q | tar -x -C "$dir"
        done
        (cd "$mnt/hand$r-ws" && ROOT=$dir bash -e -o pipefail -c "$build_cmd" 2> "$mnt/hand-parts" && ROOT=$dir bash -e -o pipefail -c "$test_cmd")
        t1=$(now)
        add "$name" "$(ms "$t0" "$t1")"
        read -r _ a b < "$mnt/hand-parts"
        add "${name}_tool" "$a"; add "${name}_src" "$b"
    }
    by_hand_far() { by_hand handfar "$remote_endpoint"; rm -rf "$mnt/handfar$r"; }
    if [ $((r % 2)) = 1 ]; then
        cold; cold_img; cold_old; by_hand; cold_far; by_hand_far
    else
        by_hand_far; cold_far; by_hand; cold_old; cold_img; cold
    fi

    # The floor: the bytes that must move, then the commands over trees already in place.
    t0=$(now)
    for t in toolchain deps; do curl -sS -f "${sig[@]}" "$endpoint/bench/manual/$t.tar.zst" > /dev/null; done
    t1=$(now)
    (cd "$mnt/hand$r-ws" && ROOT=$mnt/hand$r bash -e -o pipefail -c "$build_cmd" && ROOT=$mnt/hand$r bash -e -o pipefail -c "$test_cmd")
    t2=$(now)
    add download "$(ms "$t0" "$t1")"; add commands "$(ms "$t1" "$t2")"
    t0=$(now)
    for t in toolchain deps; do curl -sS -f "$remote_endpoint/bench/manual/$t.tar.zst" > /dev/null; done
    t1=$(now)
    add download_far "$(ms "$t0" "$t1")"

    # Warm: machine A moves to the new commit with its local cache as the base commit left it
    # (a copy: layers are immutable, so hard links do; the index is copied).
    git -C "$mnt/a" pull -q
    cp -al "$mnt/cache-a" "$mnt/cache-w$r"
    rm -f "$mnt/cache-w$r"/index.sqlite*
    cp "$mnt/cache-a"/index.sqlite* "$mnt/cache-w$r/"
    sync
    t0=$(now); STRATA_CACHE_DIR=$mnt/cache-w$r "$strata" run --no-shared-cache "$mnt/a/strata.yml" >/dev/null 2>&1; t1=$(now)
    add warm "$(ms "$t0" "$t1")"
    settled
    git -C "$mnt/a" reset -q --hard HEAD~1
    rm -rf "$mnt/cache-w$r"

    # Where the cold time goes: the key (plan on a fresh cache), restores, the two tasks.
    ev=$mnt/cold$r.json
    add cold_build "$(grep '"event":"task-passed"' "$ev" | grep '"task":"build"' | sed 's/.*"duration_ms":\([0-9]*\).*/\1/')"
    add cold_test "$(grep '"event":"task-passed"' "$ev" | grep '"task":"test"' | sed 's/.*"duration_ms":\([0-9]*\).*/\1/')"
    add cold_restore "$(grep '"event":"layer-fetched"' "$ev" | sed 's/.*"duration_ms":\([0-9]*\).*/\1/' | sort -n | tail -1)"
    add img_restore "$(grep '"event":"layer-fetched"' "$mnt/img$r.json" | sed 's/.*"duration_ms":\([0-9]*\).*/\1/' | sort -n | tail -1)"
    add far_restore "$(grep '"event":"layer-fetched"' "$mnt/far$r.json" | sed 's/.*"duration_ms":\([0-9]*\).*/\1/' | sort -n | tail -1)"
    read -r _ a b < <(STRATA_CACHE_DIR=$mnt/cache-img$r "$strata" logs "$mnt/clone$r/strata.yml" build 2>/dev/null | grep '^parts: ')
    add img_tool "$a"; add img_src "$b"
    if [ -n "${OLD:-}" ]; then
        add old_restore "$(grep '"event":"layer-fetched"' "$mnt/old$r.json" | sed 's/.*"duration_ms":\([0-9]*\).*/\1/' | sort -n | tail -1)"
        read -r _ a b < <(STRATA_CACHE_DIR=$mnt/cache-old$r "$OLD" logs "$mnt/clone$r/strata.yml" build 2>/dev/null | grep '^parts: ')
        add old_tool "$a"; add old_src "$b"
        unmount_under "$mnt/cache-old$r"
        rm -rf "$mnt/cache-old$r"
    fi
    # The last round's cold run with images (the default) as a timeline, from its record
    # (ms since the run began).
    if [ "$r" = "$rounds" ]; then
        timeline=$(python3 - "$mnt/cache-img$r" <<'PY'
import glob, json, os, sys
records = sorted(glob.glob(os.path.join(sys.argv[1], "history", "*", "runs", "*")), key=os.path.getmtime)
for line in open(records[-1]):
    v = json.loads(line)
    if "at_ms" not in v:
        continue
    e = v["e"]
    if e["event"] in ("task-output", "task-status"):
        continue
    extra = " ".join(f"{k}={e[k]}" for k in ("duration_ms", "layer", "bytes", "workspace", "from") if k in e)
    print(f"{v['at_ms']:>7} ms  {e['event']:<20} {e.get('task', '')} {extra}")
PY
)
    fi
    sync
    t0=$(now); STRATA_CACHE_DIR=$mnt/cache-key$r "$strata" plan --no-shared-cache "$mnt/clone$r/strata.yml" >/dev/null; t1=$(now)
    add cold_key "$(ms "$t0" "$t1")"
    settled
    unmount_under "$mnt/cache-img$r"
    unmount_under "$mnt/cache-far$r"
    unmount_under "$mnt/cache-old$r"
    rm -rf "$mnt/clone$r" "$mnt/hand$r" "$mnt/hand$r-ws" "$mnt/cache-cold$r" "$mnt/cache-img$r" "$mnt/cache-key$r" \
        "$mnt/cache-far$r" "$mnt/cache-old$r"
done

floor=$(( $(med download) + $(med commands) ))
echo
echo "## Cold-VM run ($rounds rounds, medians) — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
echo
echo "$nfiles-file repository, one commit that re-runs \`build\` and \`test\`; toolchain and deps"
echo "($(( bytes / 1000000 )) MB compressed) in S3 on loopback. The clone ($(med clone) ms) is"
echo "the same for every variant and left out."
echo
echo "| variant | time | vs by hand | vs floor |"
echo "|---|---|---|---|"
echo "| strata, cold VM (empty local cache), directories (\`--layer-images off\`) | $(med cold) ms | $(ratio "$(med cold)" "$(med hand)")× | $(ratio "$(med cold)" "$floor")× |"
echo "| strata, cold VM, \`--layer-images on\` | $(med img) ms | $(ratio "$(med img)" "$(med hand)")× | $(ratio "$(med img)" "$floor")× |"
[ -z "${OLD:-}" ] || echo "| the same, \`$OLD\` | $(med old) ms | $(ratio "$(med old)" "$(med hand)")× | $(ratio "$(med old)" "$floor")× |"
echo "| strata, warm local cache | $(med warm) ms | $(ratio "$(med warm)" "$(med hand)")× | $(ratio "$(med warm)" "$floor")× |"
echo "| by hand: curl \| zstd -d \| tar -x, then the commands | $(med hand) ms | 1× | $(ratio "$(med hand)" "$floor")× |"
echo "| floor: download $(( bytes / 1000000 )) MB + the commands | $floor ms ($(med download) + $(med commands)) | $(ratio "$floor" "$(med hand)")× | 1× |"
floor_far=$(( $(med download_far) + $(med commands) ))
echo
echo "The same run with the cache not on this machine's cores (the same objects from nginx; see"
echo "remote_server in lib.sh); strata still publishes \`build\` and \`test\` to the S3 server:"
echo
echo "| variant | time | vs by hand | vs floor |"
echo "|---|---|---|---|"
echo "| strata, cold VM, images (the default) | $(med far) ms | $(ratio "$(med far)" "$(med handfar)")× | $(ratio "$(med far)" "$floor_far")× |"
echo "| by hand: curl \| zstd -d \| tar -x, then the commands | $(med handfar) ms | 1× | $(ratio "$(med handfar)" "$floor_far")× |"
echo "| floor: download + the commands | $floor_far ms ($(med download_far) + $(med commands)) | $(ratio "$floor_far" "$(med handfar)")× | 1× |"
echo
echo "Its slowest layer restore (the toolchain's image): $(med far_restore) ms."
echo
echo "Where strata's cold time goes (medians of the parts; restores overlap the key and each"
echo "other): key of the fresh clone $(med cold_key) ms, slowest layer restore $(med cold_restore) ms"
echo "($(med img_restore) ms as an image),"
echo "\`build\` $(med cold_build) ms, \`test\` $(med cold_test) ms."
echo
echo "Inside \`build\` (as it timed itself): reading 2,000 \`.so\` files of the toolchain took"
echo "$(med img_tool) ms in strata's sandbox (through the image) against $(med hand_tool) ms by hand;"
echo "reading the clone's \`.js\` files $(med img_src) ms (through the checkout view) against $(med hand_src) ms."
[ -z "${OLD:-}" ] || echo "With \`$OLD\`: the image restore $(med old_restore) ms, reading the \`.so\` files $(med old_tool) ms, the \`.js\` files $(med old_src) ms."
echo
echo "The last round's cold run with images (the default), event by event (from its run record):"
echo
echo '```'
echo "$timeline"
echo '```'
