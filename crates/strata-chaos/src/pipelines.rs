//! The pipelines the trials run. Their files depend only on the pipeline's shape, never on the
//! run: a salt changes every key (and one small `salt` file per layer) so that each trial builds,
//! publishes and restores for real, while the `verify` task's listing stays comparable with the
//! one of a fresh reference build.

/// The salt of the reference builds; a trial's expected listing is the reference's with this
/// replaced by its own salt.
pub const REFERENCE_SALT: &str = "salt-reference";

/// Lists `dir` as the tasks that use the layers see it: every path (shell-quoted, so newlines and
/// invalid UTF-8 survive), its type and mode, and for files their size, link count and content
/// hash, for symlinks their target, for devices their numbers. `salt` files print their content.
fn listing(dir: &str) -> String {
    format!(
        r#"cd {dir}
      find . -print0 | LC_ALL=C sort -z | while IFS= read -r -d '' p; do
        case "$p" in */salt) printf 'salt %q %s\n' "$p" "$(cat -- "$p")"; continue;; esac
        t=$(stat -c '%F %a' -- "$p")
        if [ -L "$p" ]; then x="-> $(readlink -- "$p")"
        elif [ -f "$p" ]; then x="$(stat -c '%s %h' -- "$p") $(sha256sum < "$p" | cut -c1-16)"
        elif [ -b "$p" ] || [ -c "$p" ]; then x=$(stat -c '%t:%T' -- "$p")
        else x=""; fi
        printf '%q %s %s\n' "$p" "$t" "$x"
      done"#
    )
}

/// Four tasks in a diamond, then `verify`: a 12 MB incompressible file (two S3 chunks), a
/// whiteout and a changed file over a parent's, a hard link, an exported variable.
pub fn main(salt: &str, marker: &str) -> String {
    let sleep = format!("sleep 0.3{marker}");
    format!(
        r#"base: host
tasks:
  - key: gen
    run: |
      # {salt} {marker}
      mkdir -p /out/gen
      echo {salt} > /out/gen/salt
      for i in $(seq 1 30); do seq $((i * 500)) > /out/gen/f$i; done
      perl -e 'srand(7); print pack("N*", map {{ int(rand(4294967296)) }} 1 .. 3000000)' > /out/gen/big
      {sleep}
  - key: lib
    use: [gen]
    run: |
      # {salt} {marker}
      mkdir -p /out/lib
      echo {salt} > /out/lib/salt
      sha256sum /out/gen/f* /out/gen/big > /out/lib/sums
      ln /out/lib/sums /out/lib/sums.link
      rm /out/gen/f1
      echo changed > /out/gen/f2
      {sleep}
  - key: tool
    run: |
      # {salt} {marker}
      mkdir -p /out/tool/bin
      echo {salt} > /out/tool/salt
      printf '#!/bin/sh\necho tool\n' > /out/tool/bin/t
      chmod 755 /out/tool/bin/t
      ln -s bin/t /out/tool/link
      echo v1 > "$STRATA_ENV/TOOL_VERSION"
      {sleep}
  - key: app
    use: [lib, tool]
    run: |
      # {salt} {marker}
      mkdir -p /out/app
      echo {salt} > /out/app/salt
      cat /out/lib/sums /out/gen/f2 > /out/app/all
      echo "$TOOL_VERSION" > /out/app/version
      rm -rf /out/gen/f3
  - key: verify
    use: [app]
    cache: false
    run: |
      # {marker}
      echo "TOOL_VERSION=$TOOL_VERSION"
      {listing}
"#,
        listing = listing("/out")
    )
}

/// Odd names and file types: a newline and invalid UTF-8 in names, a ~3,900-byte path, a fifo,
/// devices, hard links, setuid and setgid files, symlinks (one dangling), a Unix socket (which a
/// layer leaves out), odd characters.
pub fn odd(salt: &str, marker: &str) -> String {
    format!(
        r#"base: host
tasks:
  - key: odd
    run: |
      # {salt} {marker}
      mkdir -p /odd && cd /odd
      echo {salt} > salt
      printf x > "$(printf 'new\nline')"
      printf y > "$(printf 'bad\377\376utf8')"
      printf z > "$(printf 'tab\there')"
      touch ' space' -- '-dash' '*star' 'quote"s' "back\\slash"
      d=$(printf 'd%.0s' $(seq 1 200)); p=/odd/long
      for i in $(seq 1 19); do p="$p/$d"; done
      mkdir -p "$p" && echo deep > "$p/f"
      mkdir -p gone/sub && echo old > gone/sub/f && echo old > gone/g
      mkfifo fifo
      mknod chardev c 1 3
      mknod blockdev b 7 200
      echo h > hard1 && ln hard1 hard2 && ln hard1 "$(printf 'hard\nthree')"
      echo s > setuid && chmod 4755 setuid
      echo g > setgid && chmod 2750 setgid
      echo t > sticky && chmod 1777 sticky
      ln -s hard1 symlink && ln -s /nonexistent dangling
      perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Type=>SOCK_STREAM(), Local=>"/odd/sock", Listen=>1) or die $!'
      test -S sock
  - key: over
    use: [odd]
    run: |
      # {salt} {marker}
      mkdir -p /odd/stamp && echo {salt} > /odd/stamp/salt
      rm /odd/hard2 && echo again >> /odd/hard1
      rm -rf /odd/gone && mkdir /odd/gone && echo new > /odd/gone/f
  - key: verify
    use: [over]
    cache: false
    run: |
      # {marker}
      {listing}
"#,
        listing = listing("/odd")
    )
}

/// A task that fills the disk, then fails or not.
pub fn filler(salt: &str, marker: &str, megabytes: u64, fail: bool) -> String {
    let end = if fail { "false" } else { "true" };
    format!(
        r#"base: host
tasks:
  - key: fill
    run: |
      # {salt} {marker}
      dd if=/dev/zero of=/fill bs=1M count={megabytes} status=none
      {end}
"#
    )
}

/// A pipeline that `yaml-bomb` trials feed to `check`, `plan` and `run`.
pub fn bomb(kind: &str, rng: &mut crate::rng::Rng) -> Vec<u8> {
    match kind {
        // Billion laughs: 9 levels of 9 aliases, 454 bytes that expand to 387 million nodes.
        "laughs" => {
            let mut s = String::from(
                "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
            );
            for i in 1..10 {
                let p = format!("*a{}", i - 1);
                s.push_str(&format!("a{i}: &a{i} [{}]\n", vec![p; 9].join(",")));
            }
            s.push_str("tasks:\n  - key: t\n    run: true\n    env: {X: *a9}\n");
            s.into_bytes()
        }
        // Deep nesting of flow sequences.
        "deep" => {
            let depth = rng.range(10_000, 200_000) as usize;
            let mut s = String::from("tasks:\n  - key: t\n    run: true\n    filter: ");
            s.push_str(&"[".repeat(depth));
            s.push_str(&"]".repeat(depth));
            s.push('\n');
            s.into_bytes()
        }
        // A very large document (one huge value).
        "huge" => {
            let mb = rng.range(20, 60) as usize;
            let mut s = String::from("tasks:\n  - key: t\n    run: \"");
            s.push_str(&"x".repeat(mb << 20));
            s.push_str("\"\n    nosuchkey: 1\n");
            s.into_bytes()
        }
        // Many anchors, each used many times, in an unused key.
        _ => {
            let mut s = String::from("x-unused:\n");
            s.push_str("  - &b0 [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]\n");
            for i in 1..30 {
                s.push_str(&format!("  - &b{i} [*b{0}, *b{0}]\n", i - 1));
            }
            s.push_str("tasks:\n  - key: t\n    run: true\n");
            s.into_bytes()
        }
    }
}

/// A task that prints `megabytes` of output, in lines or as one line.
pub fn output(salt: &str, marker: &str, megabytes: u64, one_line: bool) -> String {
    let producer = if one_line {
        format!("head -c {megabytes}M /dev/zero | tr '\\0' x; echo")
    } else {
        // Not `yes | head`: with pipefail, `yes` dying of SIGPIPE would fail the task.
        format!(
            "head -c {megabytes}M < <(yes 'a line of task output, as a compiler or a test runner prints them')"
        )
    };
    format!(
        r#"base: host
tasks:
  - key: talk
    run: |
      # {salt} {marker}
      {producer}
"#
    )
}

/// A task that tries to reach the host the way issue 11 found it could; each attempt that works
/// prints `ESCAPED`. Every write puts back the value it read, so a hole harms nothing.
pub fn sandbox(salt: &str, marker: &str) -> String {
    format!(
        r#"base: host
tasks:
  - key: probe
    run: |
      # {salt} {marker}
      try() {{ if ( eval "$1" ) >/dev/null 2>&1; then echo "ESCAPED: $1"; else echo "held: $1"; fi; }}
      try 'cat /proc/sys/kernel/printk_ratelimit > /proc/sys/kernel/printk_ratelimit'
      try 'mount -o remount,rw /sys'
      try 'for f in /sys/block/*/queue/read_ahead_kb; do cat $f > $f || exit 1; done; ls /sys/block/*/queue/read_ahead_kb'
      try 'mkdir /sys/fs/cgroup/chaos-{marker} || mkdir /sys/fs/cgroup/memory/chaos-{marker}'
      try 'test -c /dev/kmsg && echo chaos-probe > /dev/kmsg'
      try 'mount -t tmpfs none /mnt && umount /mnt'
      try 'mknod /tmp/mem c 1 1 && head -c1 /tmp/mem'
      try 'cat /proc/kcore | head -c1 | grep -q .'
      true
"#
    )
}
