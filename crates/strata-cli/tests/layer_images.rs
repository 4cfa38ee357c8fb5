//! Layers restored from a shared cache kept as erofs images (`--layer-images on`), end to end
//! as root against a real S3 server (`s3s-fs`) and real mounts: machine A builds a deep stack
//! and publishes it; machine B, with an empty local cache, restores it as images, and the task
//! that runs on top sees exactly what it sees on A.

mod common;

use std::path::{Path, PathBuf};

use common::{CacheDir, Counter, Fixture, RunResult};
use strata_testkit::Server;

/// A stack of six layers (`deps` at the bottom): files of every kind, a hard link, a symlink, a
/// setuid program, a workspace file the filtered `top` reads, an artifact `top` reads; higher
/// layers delete a file (a whiteout) and replace a directory (opaque). `top` prints what it
/// sees.
fn pipeline(counter: &Counter) -> String {
    let mut p = format!(
        r#"tasks:
  - key: deps
    filter: [deps.txt]
    run: |
      {ping}
      mkdir -p /opt/deps/bin /opt/deps/empty /opt/deps/old gen
      cp deps.txt /opt/deps/
      head -c 300000 /dev/urandom > /opt/deps/blob
      ln /opt/deps/blob /opt/deps/blob-link
      ln -s blob /opt/deps/blob-sym
      echo gone > /opt/deps/old/file
      printf '#!/bin/sh\necho tool ok\n' > /opt/deps/bin/tool && chmod 4755 /opt/deps/bin/tool
      echo generated > gen/out.txt
    outputs:
      artifacts:
        - {{key: blob, path: /opt/deps/blob}}
"#,
        ping = counter.ping("deps")
    );
    for n in 2..=6 {
        let change = match n {
            3 => "rm /opt/deps/deps.txt".to_string(),
            4 => "rm -rf /opt/deps/old && mkdir /opt/deps/old && echo new > /opt/deps/old/new"
                .to_string(),
            _ => format!("echo {n} > /opt/deps/level-{n}"),
        };
        p.push_str(&format!(
            "  - key: l{n}\n    use: [{}]\n    filter: [deps.txt]\n    run: |\n      {}\n      {change}\n",
            if n == 2 {
                "deps".to_string()
            } else {
                format!("l{}", n - 1)
            },
            counter.ping(&format!("l{n}")),
        ));
    }
    p.push_str(&format!(
        r#"  - key: top
    use: [l6]
    filter: [src.txt, gen]
    run: |
      {ping}
      cat src.txt gen/out.txt
      cd /opt/deps && find . -printf '%p %y %m %U %l\n' | sort
      find . -type f -printf '%p size %s links %n\n' | sort
      sha256sum blob bin/tool old/new
      bin/tool
      sha256sum < ${{{{ tasks.deps.artifacts.blob }}}}
"#,
        ping = counter.ping("top")
    ));
    p
}

fn workspace() -> (Fixture, Counter) {
    let f = Fixture::new();
    let counter = Counter::start();
    f.write("strata.yml", &pipeline(&counter));
    f.write("deps.txt", "left-pad 1.3\n");
    f.write("src.txt", "one\n");
    (f, counter)
}

fn run(f: &Fixture, cache: &Path, remote: &str, extra: &[&str]) -> RunResult {
    f.run_remote(cache, remote, extra)
}

fn with_images(f: &Fixture, cache: &Path, remote: &str) -> RunResult {
    run(f, cache, remote, &["--layer-images", "on"])
}

/// What `layers/` holds: (directories, images), by name.
fn stored(cache: &Path) -> (Vec<String>, Vec<String>) {
    let mut dirs = Vec::new();
    let mut images = Vec::new();
    for e in std::fs::read_dir(cache.join("layers")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            dirs.push(name);
        } else {
            images.push(name);
        }
    }
    dirs.sort();
    images.sort();
    (dirs, images)
}

/// erofs mounts whose mount point is under `dir`, as (mount point, source).
fn erofs_mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            (f[dash + 1] == "erofs").then(|| (PathBuf::from(f[4]), f[dash + 2].to_string()))
        })
        .filter(|(p, _)| p.starts_with(dir))
        .collect()
}

fn layer_of(r: &RunResult, task: &str) -> String {
    r.event("task-passed", task)
        .or_else(|| r.event("task-restored", task))
        .and_then(|e| e["layer"].as_str())
        .unwrap_or_else(|| panic!("no layer for {task}"))
        .to_string()
}

/// What `top` printed on A, for another content of `src.txt` (its first line).
fn with_source(seen_on_a: &[String], src: &str) -> Vec<String> {
    let mut v = seen_on_a.to_vec();
    assert_eq!(v[0], "two");
    v[0] = src.to_string();
    v
}

/// Machine A built and published everything; machine B restored the stack as images and ran
/// `top` over it (a changed `src.txt`). Returns both runs' `top` outputs.
struct Shared {
    _server: Server,
    url: String,
    f: Fixture,
    counter: Counter,
    b: CacheDir,
}

fn built_on_a() -> (Shared, Vec<String>) {
    let server = Server::s3("strata-ci");
    let url = format!("s3://strata-ci/img?endpoint={}", server.endpoint());
    let (f, counter) = workspace();
    let a = run(&f, f.cache.path(), &url, &[]);
    assert_eq!(a.code, 0, "{}{:?}", a.stderr, a.events);
    assert_eq!(
        counter.take(),
        ["deps", "l2", "l3", "l4", "l5", "l6", "top"]
    );
    // What `top` sees on A, over directory layers, for the second source file.
    f.write("src.txt", "two\n");
    let a2 = run(&f, f.cache.path(), &url, &[]);
    assert_eq!(a2.code, 0, "{}", a2.stderr);
    assert_eq!(counter.take(), ["top"]);
    let seen_on_a = a2.output("top");
    let b = CacheDir::new("strata-cache-img-");
    (
        Shared {
            _server: server,
            url,
            f,
            counter,
            b,
        },
        seen_on_a,
    )
}

/// Machine B restores the stack as images (and runs `top` over a third source); then, as after
/// a reboot, the six images stay in its cache and none is mounted. Returns B's cache, resolved.
fn restored_as_images_then_unmounted(s: &Shared) -> PathBuf {
    s.f.write("src.txt", "three\n");
    let b = with_images(&s.f, s.b.path(), &s.url);
    assert_eq!(b.code, 0, "{}", b.stderr);
    s.counter.take();
    let root = std::fs::canonicalize(s.b.path()).unwrap();
    assert_eq!(strata_testkit::unmount_all_under(&root.join("mounts")), 6);
    root
}

#[test]
fn a_cold_s3_hit_lands_as_an_image_and_a_deep_stack_of_images_reads_as_on_the_builder() {
    let (s, seen_on_a) = built_on_a();
    assert!(seen_on_a.contains(&"tool ok".to_string()), "{seen_on_a:?}");
    assert!(
        seen_on_a.contains(&"generated".to_string()),
        "{seen_on_a:?}"
    );

    // A content of src.txt that A never built: `top` runs over the six restored images.
    s.f.write("src.txt", "three\n");
    let b = with_images(&s.f, s.b.path(), &s.url);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert_eq!(s.counter.take(), ["top"], "only top runs on B");
    assert_eq!(b.status("l6"), "restored");
    let (dirs, images) = stored(s.b.path());
    // The six restored layers are images; `top`, which ran here, is a directory.
    assert_eq!(images.len(), 6, "images {images:?}, dirs {dirs:?}");
    assert_eq!(dirs, [layer_of(&b, "top")]);
    for task in ["deps", "l2", "l3", "l4", "l5", "l6"] {
        let layer = layer_of(&b, task);
        assert!(
            images.contains(&format!("{layer}.erofs")),
            "{task}: {images:?}"
        );
    }
    // Each image is mounted from its own file, at mounts/<digest>.
    let root = std::fs::canonicalize(s.b.path()).unwrap();
    let mut mounts = erofs_mounts_under(&root.join("mounts"));
    mounts.sort();
    assert_eq!(mounts.len(), 6, "{mounts:?}");
    for (at, source) in &mounts {
        let hex = at.file_name().unwrap().to_string_lossy();
        assert_eq!(
            Path::new(source),
            root.join("layers").join(format!("{hex}.erofs"))
        );
    }

    // Exactly A's view, but for the source line.
    let seen_on_b = b.output("top");
    assert_eq!(seen_on_b, with_source(&seen_on_a, "three"));
    assert!(
        seen_on_b.iter().any(|l| l == "./bin/tool f 4755 0 "),
        "{seen_on_b:?}"
    );
    assert!(
        seen_on_b
            .iter()
            .any(|l| l == "./blob-link size 300000 links 2"),
        "the hard link is one inode with two names: {seen_on_b:?}"
    );
    assert!(
        !seen_on_b.iter().any(|l| l.starts_with("./deps.txt")),
        "a whiteout in an image hides the file below: {seen_on_b:?}"
    );
    assert!(
        !seen_on_b.iter().any(|l| l.starts_with("./old/file")),
        "an opaque directory in an image hides the one below: {seen_on_b:?}"
    );

    // The layer images are the same layers: `cache verify` hashes them through their mounts.
    let out =
        s.f.command(&["cache", "verify", "--json"])
            .env("STRATA_CACHE_DIR", s.b.path())
            .output()
            .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["layers"], 7, "{report}");
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{report}");
}

#[test]
fn a_layer_whose_mount_is_gone_is_mounted_again_on_next_use() {
    let (s, seen_on_a) = built_on_a();
    let root = restored_as_images_then_unmounted(&s);
    assert!(erofs_mounts_under(&root).is_empty());

    // `top` runs again (another source), over images mounted anew.
    s.f.write("src.txt", "four\n");
    let again = run(&s.f, s.b.path(), &s.url, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(s.counter.take(), ["top"]);
    assert_eq!(again.output("top"), with_source(&seen_on_a, "four"));
    assert_eq!(erofs_mounts_under(&root.join("mounts")).len(), 6);
}

#[test]
fn prune_and_repair_detach_an_image_before_removing_it() {
    let (s, _) = built_on_a();
    s.f.write("src.txt", "three\n");
    let b = with_images(&s.f, s.b.path(), &s.url);
    assert_eq!(b.code, 0, "{}", b.stderr);
    let root = std::fs::canonicalize(s.b.path()).unwrap();
    let cache = |args: &[&str]| {
        let mut all = vec!["cache"];
        all.extend_from_slice(args);
        all.push("--json");
        let out =
            s.f.command(&all)
                .env("STRATA_CACHE_DIR", s.b.path())
                .output()
                .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        (out.status.code(), v)
    };

    // A corrupt image (its file overwritten in place, as a bad disk would): verify finds it,
    // repair detaches its mount and removes it.
    let l6 = layer_of(&b, "l6");
    let image = root.join("layers").join(format!("{l6}.erofs"));
    let len = std::fs::metadata(&image).unwrap().len();
    // Unmounted first: the mounted image would keep serving what it cached.
    strata_testkit::unmount_all_under(&root.join("mounts").join(&l6));
    std::fs::write(&image, vec![0u8; len as usize]).unwrap();
    let (code, found) = cache(&["verify"]);
    assert_eq!(code, Some(1), "{found}");
    assert_eq!(found["problems"][0]["kind"], "corrupt-layer", "{found}");
    let (code, repaired) = cache(&["verify", "--repair"]);
    assert_eq!(code, Some(0), "{repaired}");
    assert!(!image.exists());
    assert!(!root.join("mounts").join(&l6).exists());

    // Everything else, once nothing names it: prune takes every entry, detaches every mount
    // and removes every image.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, report) = cache(&["prune", "--older-than", "1s", "--grace", "0s"]);
    assert_eq!(code, Some(0), "{report}");
    let (dirs, images) = stored(s.b.path());
    assert!(images.is_empty() && dirs.is_empty(), "{images:?} {dirs:?}");
    assert!(erofs_mounts_under(&root).is_empty(), "a mount is left");
    assert_eq!(std::fs::read_dir(root.join("mounts")).unwrap().count(), 0);
}

#[test]
fn a_corrupt_download_leaves_no_image_and_no_entry() {
    let (s, _) = built_on_a();
    // Every layer archive in the bucket cut short: B cannot restore any of them.
    let mut cut = 0;
    for entry in walk(s._server.data_dir()) {
        let len = std::fs::metadata(&entry).unwrap().len();
        if len > 100_000 {
            let bytes = std::fs::read(&entry).unwrap();
            std::fs::write(&entry, &bytes[..bytes.len() / 2]).unwrap();
            cut += 1;
        }
    }
    assert!(cut >= 1, "no layer archive found to cut");
    s.f.write("src.txt", "one\n");
    let b = with_images(&s.f, s.b.path(), &s.url);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert!(
        b.events.iter().any(|e| e["event"] == "warning"
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("failed to restore")),
        "{:?}",
        b.events
    );
    // `deps` was built here instead (a directory); no image of it, nothing half-written.
    let (dirs, images) = stored(s.b.path());
    let deps = layer_of(&b, "deps");
    assert!(dirs.contains(&deps), "{dirs:?}");
    assert!(!images.contains(&format!("{deps}.erofs")), "{images:?}");
    let tmp: Vec<_> = std::fs::read_dir(s.b.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn artifacts_and_workspace_files_of_an_image_layer_are_copied_across_the_mount() {
    let (s, seen_on_a) = built_on_a();
    // `top` runs over images: its workspace tree takes gen/out.txt from the image of `deps`,
    // and its artifact view the blob (links into the image fail with EXDEV: copies).
    s.f.write("src.txt", "three\n");
    let out = s.f.ws().join("artifacts-out");
    let b = run(
        &s.f,
        s.b.path(),
        &s.url,
        &["--layer-images", "on", "--artifacts", out.to_str().unwrap()],
    );
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert_eq!(s.counter.take(), ["top"]);
    assert_eq!(b.output("top"), with_source(&seen_on_a, "three"));
    let (_, images) = stored(s.b.path());
    assert_eq!(images.len(), 6, "{images:?}");
    let root = std::fs::canonicalize(s.b.path()).unwrap();
    let deps = layer_of(&b, "deps");
    let in_image = root.join("mounts").join(&deps).join("opt/deps/blob");
    let copied = std::fs::read_dir(out.join("deps"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("blob");
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        std::fs::read(&in_image).unwrap()
    );
}

#[test]
fn an_oci_export_of_an_image_layer_equals_that_of_the_directory_layer() {
    let (s, _) = built_on_a();
    s.f.write("src.txt", "three\n");
    let b = with_images(&s.f, s.b.path(), &s.url);
    assert_eq!(b.code, 0, "{}", b.stderr);
    let export = |cache: &Path, dir: &Path| {
        let out =
            s.f.command(&["export", "l6", "--oci", dir.to_str().unwrap()])
                .env("STRATA_CACHE_DIR", cache)
                .output()
                .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The manifest's layers, bottom first, by digest.
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let manifest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("blobs/sha256").join(&manifest["sha256:".len()..])).unwrap(),
        )
        .unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // The tasks' layers; not the two an export makes of the workspace as `l6`'s filter shows
    // it (a mask and a tree, below `l6`'s own layer), which carry the time of the export and
    // differ between any two exports.
    let tasks_layers = |mut layers: Vec<String>| {
        assert_eq!(layers.len(), 8, "{layers:?}");
        layers.drain(5..7);
        layers
    };
    // Machine C restores the same layers as directories; A built them.
    let c = CacheDir::new("strata-cache-dirs-");
    let restored = run(&s.f, c.path(), &s.url, &["--layer-images", "off"]);
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert!(stored(c.path()).1.is_empty(), "C holds no image");
    let dirs = tempfile::tempdir().unwrap();
    let from_dirs = tasks_layers(export(c.path(), &dirs.path().join("c")));
    let from_images = tasks_layers(export(s.b.path(), &dirs.path().join("b")));
    assert_eq!(from_dirs, from_images, "the same layer blobs");
    let from_builder = tasks_layers(export(s.f.cache.path(), &dirs.path().join("a")));
    assert_eq!(
        from_builder, from_images,
        "the same layer blobs as the builder's"
    );
}

/// A cache whose layers are images, used where they cannot be mounted (a cache carried to a
/// machine whose kernel has no erofs; here: images that no longer mount): the tasks are not
/// taken from those layers but built again, as directories, with a warning; then all is hits.
#[test]
fn image_layers_that_cannot_be_mounted_here_are_built_again_as_directories() {
    let (s, _) = built_on_a();
    let root = restored_as_images_then_unmounted(&s);
    let (_, images) = stored(&root);
    assert_eq!(images.len(), 6);
    for image in &images {
        std::fs::write(root.join("layers").join(image), b"not an erofs image").unwrap();
    }

    let local = |f: &Fixture| {
        RunResult::of(
            &f.command(&["run", "--json", "--no-remote"])
                .env("STRATA_CACHE_DIR", s.b.path())
                .output()
                .unwrap(),
        )
    };
    let again = local(&s.f);
    assert_eq!(again.code, 0, "{}\n{:?}", again.stderr, again.events);
    assert_eq!(
        s.counter.take(),
        ["deps", "l2", "l3", "l4", "l5", "l6", "top"]
    );
    let warnings = again.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`deps`") && w.contains("cannot mount")),
        "{warnings:?}"
    );
    assert!(again.output("top").iter().any(|l| l == "tool ok"));
    // What was built is kept as directories, and used from now on.
    let (dirs, _) = stored(&root);
    for task in ["deps", "l6", "top"] {
        assert!(dirs.contains(&layer_of(&again, task)), "{task}: {dirs:?}");
    }
    let last = local(&s.f);
    assert_eq!(last.code, 0, "{}", last.stderr);
    assert_eq!(s.counter.take(), Vec::<String>::new());
}
