#!/usr/bin/env bash
# An incremental Rust build: a one-line edit in one crate of a cargo workspace, rebuilt
# (1) with cargo directly, (2) under strata with `tool-cache:` on the build task, (3) under
# strata without one. Each side first builds everything once, then each round edits the same
# line (a new value) and times the rebuild. Medians. Needs root and cargo (offline: the
# workspace has no dependencies).
#
#   sudo scripts/bench/incremental.sh [ROUNDS] [CRATES] [FNS] [STRATA]
#
# CRATES library crates of FNS generated functions each, and a binary that uses them all;
# the edit is in the last library, so the binary is linked again too.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
crates=${2:-4}
fns=${3:-400}
strata=${4:-}
. scripts/bench/lib.sh
need_root
export CARGO_INCREMENTAL=0
if [ -z "$strata" ]; then
    build_strata -p strata-cli
fi
work=$(mktemp -d /var/tmp/strata-bench-inc.XXXXXX)
on_exit "rm -rf '$work'"
on_exit "settled '$work'"

# A workspace: lib0..libN-1 with FNS functions each, and `app` calling one of each.
make_ws() {
    local ws=$1 members="\"app\"" deps="" calls=""
    mkdir -p "$ws/app/src"
    for i in $(seq 0 $((crates - 1))); do
        members="$members, \"lib$i\""
        deps="${deps}lib$i = { path = \"../lib$i\" }"$'\n'
        calls="${calls} + lib$i::f0(1)"
        mkdir -p "$ws/lib$i/src"
        printf '[package]\nname = "lib%s"\nversion = "0.1.0"\nedition = "2021"\n' "$i" > "$ws/lib$i/Cargo.toml"
        python3 - "$ws/lib$i/src/lib.rs" "$fns" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("pub const EDITED: u64 = 0;\n")
    for i in range(n):
        f.write(f"pub fn f{i}(x: u64) -> u64 {{\n    let v: Vec<u64> = (0..x + {i}).map(|y| y * {i} + EDITED).collect();\n    v.iter().sum::<u64>() + format!(\"{{:?}}\", v).len() as u64\n}}\n")
EOF
    done
    printf '[workspace]\nmembers = [%s]\nresolver = "2"\n' "$members" > "$ws/Cargo.toml"
    printf '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n%s' "$deps" > "$ws/app/Cargo.toml"
    echo "fn main() { println!(\"{}\", 0$calls); }" > "$ws/app/src/main.rs"
}
edit() { sed -i "1s/.*/pub const EDITED: u64 = $2;/" "$1/lib$((crates - 1))/src/lib.rs"; }

pipeline() {
    cat <<EOF
tasks:
  - key: build
    workspace: true
    $1
    env:
      PATH: $HOME/.cargo/bin:/usr/local/bin:/usr/bin:/bin
      CARGO_HOME: ${CARGO_HOME:-$HOME/.cargo}
      RUSTUP_HOME: ${RUSTUP_HOME:-$HOME/.rustup}
      CARGO_INCREMENTAL: "0"
    run: cargo build --offline
EOF
}

declare -A S
add() { S[$1]="${S[$1]:-} $2"; }
med() { printf '%s\n' ${S[$1]} | median; }

for side in direct tool nocache; do
    ws=$work/$side
    make_ws "$ws"
    case $side in
        tool) pipeline "tool-cache: target" > "$ws/strata.yml" ;;
        nocache) pipeline "" > "$ws/strata.yml" ;;
    esac
done
export STRATA_CACHE_DIR=$work/cache
t0=$(now); (cd "$work/direct" && cargo build --offline --quiet); t1=$(now)
echo "full build, cargo directly: $(ms "$t0" "$t1") ms"
for side in tool nocache; do
    t0=$(now); "$strata" run "$work/$side/strata.yml" > /dev/null 2>&1; t1=$(now)
    echo "full build, strata ($side): $(ms "$t0" "$t1") ms"
done
for round in $(seq 1 "$rounds"); do
    for side in direct tool nocache; do
        edit "$work/$side" "$round"
        sync
        t0=$(now)
        if [ $side = direct ]; then
            (cd "$work/direct" && cargo build --offline --quiet)
        else
            "$strata" run "$work/$side/strata.yml" > "$work/out" 2>&1 || { cat "$work/out"; exit 1; }
        fi
        t1=$(now)
        add "$side" "$(ms "$t0" "$t1")"
        echo "round $round, $side: $(ms "$t0" "$t1") ms"
    done
done
echo "one-line edit in lib$((crates - 1)) of $crates crates x $fns fns, medians of $rounds:" \
    "cargo directly $(med direct) ms; strata with tool-cache $(med tool) ms;" \
    "strata without $(med nocache) ms"
