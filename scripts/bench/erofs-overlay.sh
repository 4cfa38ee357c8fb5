#!/usr/bin/env bash
# Can a restored layer be an erofs image rather than a directory? Checks, as root, what a layer
# store needs of it: a tree with every kind of entry strata layers hold (an overlayfs whiteout, an
# opaque directory, xattrs, a setuid file with an owner, hard links, a symlink, an empty file, a
# 60-level path) is made into an image with Debian's mkfs.erofs (erofs-utils), mounted from the
# file (no loop device), and stacked as an overlay lower over a second image; the merged view must
# hide the whited-out file and the opaque directory's old contents, and keep the rest.
#
#   sudo scripts/bench/erofs-overlay.sh [WORKDIR]      (needs root, mkfs.erofs, python3)
#
# Prints one line per check and exits non-zero on the first that fails.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "erofs-overlay.sh: needs root" >&2; exit 1; }
command -v mkfs.erofs >/dev/null || { echo "erofs-overlay.sh: needs mkfs.erofs (apt-get install erofs-utils)" >&2; exit 1; }
work=$(mktemp -d "${1:-/var/tmp}/erofs-overlay.XXXXXX")
cleanup() {
    umount "$work/merged" 2>/dev/null || true
    umount "$work/mtop" 2>/dev/null || true
    umount "$work/mbase" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
mkdir -p base/a/keep base/b top/a top/b mbase mtop up wk merged
echo base > base/a/gone
echo base > base/b/old
echo k > base/a/keep/f
mknod top/a/gone c 0 0                      # whiteout: hides base/a/gone
echo new > top/b/new
echo x > top/xa
chown 1234:5678 top/xa
chmod 4751 top/xa
ln top/xa top/xa-link
ln -s xa top/sym
: > top/empty
deep=top/$(printf 'd/%.0s' $(seq 1 60))
mkdir -p "$deep"
echo deep > "$deep/f"
python3 - <<'PY'
import os
os.setxattr("top/b", "trusted.overlay.opaque", b"y")   # opaque: hides base/b/*
os.setxattr("top/xa", "user.origin", b"ci")
os.setxattr("top/a", "user.dir", b"v")
PY
mkfs.erofs base.erofs base >/dev/null 2>&1
mkfs.erofs top.erofs top >/dev/null 2>&1
mount -t erofs -o ro base.erofs mbase
mount -t erofs -o ro top.erofs mtop

check() { if eval "$2"; then echo "ok: $1"; else echo "FAILED: $1" >&2; exit 1; fi; }
check "whiteout kept as a 0/0 character device" '[ "$(stat -c "%F %t %T" mtop/a/gone)" = "character special file 0 0" ]'
check "opaque xattr kept" '[ "$(python3 -c "import os; print(os.getxattr(\"mtop/b\", \"trusted.overlay.opaque\").decode())")" = y ]'
check "user xattrs kept on files and directories" '[ "$(python3 -c "import os; print(os.getxattr(\"mtop/xa\", \"user.origin\").decode(), os.getxattr(\"mtop/a\", \"user.dir\").decode())")" = "ci v" ]'
check "mode with setuid and owner kept" '[ "$(stat -c "%a %u %g" mtop/xa)" = "4751 1234 5678" ]'
check "hard link is one inode, 2 links" '[ "$(stat -c %i mtop/xa)" = "$(stat -c %i mtop/xa-link)" ] && [ "$(stat -c %h mtop/xa)" = 2 ]'
check "symlink kept" '[ "$(readlink mtop/sym)" = xa ]'
check "empty file kept" '[ -f mtop/empty ] && [ ! -s mtop/empty ]'
check "60-level path kept" '[ "$(cat "mtop/${deep#top/}/f")" = deep ]'
mount -t overlay overlay -o "lowerdir=$work/mtop:$work/mbase,upperdir=$work/up,workdir=$work/wk" merged
check "overlay: whiteout hides the lower file" '[ ! -e merged/a/gone ] && [ -f merged/a/keep/f ]'
check "overlay: opaque dir hides the lower contents" '[ ! -e merged/b/old ] && [ "$(cat merged/b/new)" = new ]'
check "overlay: a write to an erofs file copies it up" 'echo y >> merged/xa && [ "$(cat merged/xa)" = "$(printf "x\ny")" ] && [ "$(cat mtop/xa)" = x ]'
echo "all checks passed"
