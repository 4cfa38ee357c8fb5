#!/usr/bin/env bash
# A task given a fresh clone's 100k files on an empty cache (the cold CI machine): the checkout
# itself behind an overlay with a mask (`checkout_view.rs`) against a tree of links to the
# cache's copies of every file (`STRATA_WORKSPACE_TREE=1`, what strata did before), and against
# the command run directly in the clone. The task filters `src/**` and lists every file, so it
# reads every directory it is shown. Rounds interleave the three; the figures are medians of the
# task's own duration (`task-passed`: mount, command, the check after it, commit) and of the
# whole run (which adds the cold key of the clone).
#
#   sudo scripts/bench/workspace.sh [ROUNDS] [SCALE] [STRATA]    (SCALE 2.23: ~100,000 files)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
scale=${2:-2.23}
strata=${3:-}
. scripts/bench/lib.sh
need_root
if [ -z "$strata" ]; then
    build_strata -p strata-cli
fi
own_fs 8G strata-bench-ws
repo=$mnt/repo
python3 scripts/bench/gen-tree.py "$repo/src" "$scale" small 2>/dev/null
cmd='find src -type f | sort | wc -l'
printf 'tasks:\n  - key: build\n    filter: ["src/**"]\n    run: %s\n' "'$cmd'" > "$repo/strata.yml"
git -C "$repo" init -q && git -C "$repo" config gc.auto 0 && git -C "$repo" add -A
git -C "$repo" -c user.name=b -c user.email=b@b commit -qm base
git clone -q "$repo" "$mnt/clone"
files=$(git -C "$mnt/clone" ls-files | wc -l)


strata_run() { # VARIANT ROUND
    local cache=$mnt/cache-$1$2 events=$mnt/$1$2.json t0 t1
    sync
    t0=$(now)
    if [ "$1" = tree ]; then
        STRATA_WORKSPACE_TREE=1 STRATA_CACHE_DIR=$cache "$strata" run --json "$mnt/clone/strata.yml" > "$events"
    else
        STRATA_CACHE_DIR=$cache "$strata" run --json "$mnt/clone/strata.yml" > "$events"
    fi
    t1=$(now)
    add "$1_run" "$(ms "$t0" "$t1")"
    add "$1_task" "$(grep '"event":"task-passed"' "$events" | sed 's/.*"duration_ms":\([0-9]*\).*/\1/')"
    grep -q "\"workspace\":\"$([ "$1" = tree ] && echo tree || echo checkout)" "$events" \
        || { echo "the $1 run was not given the workspace as expected" >&2; exit 1; }
    settled
    rm -rf "$cache"
}
direct() {
    local t0 t1
    sync
    t0=$(now); (cd "$mnt/clone" && bash -e -o pipefail -c "$cmd" > /dev/null); t1=$(now)
    add direct "$(ms "$t0" "$t1")"
}
for r in $(seq "$rounds"); do
    echo "round $r/$rounds..." >&2
    case $((r % 3)) in
        1) strata_run checkout "$r"; strata_run tree "$r"; direct ;;
        2) strata_run tree "$r"; direct; strata_run checkout "$r" ;;
        0) direct; strata_run checkout "$r"; strata_run tree "$r" ;;
    esac
done

echo
echo "## A fresh clone's workspace on an empty cache ($rounds rounds, medians) — $(date -u +%Y-%m-%d), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "$files files; the task lists every one (\`$cmd\`)."
echo
echo "| variant | task | whole run | task vs the command directly |"
echo "|---|---|---|---|"
echo "| strata, the checkout itself | $(med checkout_task) ms | $(med checkout_run) ms | +$(( $(med checkout_task) - $(med direct) )) ms |"
echo "| strata, a tree of the cache's copies (before) | $(med tree_task) ms | $(med tree_run) ms | +$(( $(med tree_task) - $(med direct) )) ms |"
echo "| the command directly in the clone | $(med direct) ms | | |"
echo
echo "checkout / tree: task $(ratio "$(med checkout_task)" "$(med tree_task)")×, whole run $(ratio "$(med checkout_run)" "$(med tree_run)")×."
