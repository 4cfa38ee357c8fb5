#!/usr/bin/env python3
"""Writes a deterministic tree shaped like a dependency directory (node_modules, a toolchain):
~45,000 files, ~650 MB, in nested package directories; mostly small text-like files that
compress about 3x, some larger partly-binary ones. Usage: gen-tree.py DEST [SCALE] [small].
SCALE multiplies the number of files; `small` makes every file a small text file (a source tree:
100,000 files is SCALE 2.23)."""
import os
import random
import sys

dest = sys.argv[1]
scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
small_only = len(sys.argv) > 3 and sys.argv[3] == "small"
rng = random.Random(42)

words = [
    "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
    for _ in range(3000)
]
punct = [b" ", b" ", b" ", b"\n", b"(", b")", b";", b"{", b"}", b" = ", b".", b", "]
parts = []
size = 0
while size < 64 << 20:
    chunk = b"".join(
        w.encode() + rng.choice(punct) for w in rng.choices(words, k=4096)
    )
    parts.append(chunk)
    size += len(chunk)
text = b"".join(parts)
noise = rng.randbytes(16 << 20)

files = int(45000 * scale)
total = 0
for i in range(files):
    d = os.path.join(dest, f"pkg{i // 400:03d}", f"mod{(i // 40) % 10}")
    if i % 40 == 0:
        os.makedirs(d, exist_ok=True)
    if i % 20 == 19 and not small_only:
        n = int(rng.lognormvariate(11.95, 0.6))  # ~185 kB, partly binary
        n = min(n, 4 << 20)
        a = rng.randrange(len(text) - n)
        b = rng.randrange(len(noise) - n // 10)
        content = text[a : a + n - n // 10] + noise[b : b + n // 10]
    else:
        n = min(int(rng.lognormvariate(8.3, 0.9)), 256 << 10)  # ~4 kB text
        a = rng.randrange(len(text) - n)
        content = text[a : a + n]
    ext = (".js", ".json", ".d.ts", ".md", ".so")[i % 5]
    with open(os.path.join(d, f"file{i}{ext}"), "wb") as f:
        f.write(content)
    total += len(content)
print(f"{files} files, {total / 1e6:.0f} MB", file=sys.stderr)
