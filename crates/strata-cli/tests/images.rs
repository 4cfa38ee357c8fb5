//! Base images and image export, with independent tools on both sides: images are built with
//! umoci and pushed with skopeo to a real `docker-registry`; exported images are checked with
//! skopeo and unpacked with umoci.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Counter, Fixture};
use strata_testkit::Server;

fn sh(cmd: &str) {
    let out = Command::new("bash").arg("-ec").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A busybox image built with umoci in the layout `dir`, tagged `tag`, with `extra` (a shell
/// snippet run in the rootfs directory) applied.
fn busybox_image(dir: &Path, tag: &str, extra: &str) {
    let bundle = dir.with_extension(format!("bundle-{tag}"));
    let layout = dir.display();
    let b = bundle.display();
    sh(&format!(
        "[ -d {layout} ] || umoci init --layout {layout}
         umoci new --image {layout}:{tag}
         umoci unpack --image {layout}:{tag} {b}
         cd {b}/rootfs
         mkdir -p bin etc
         cp /bin/busybox bin/busybox
         for a in $(/bin/busybox --list); do [ -e bin/$a ] || ln -s busybox bin/$a; done
         echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd
         {extra}
         cd /
         umoci repack --image {layout}:{tag} {b}
         umoci config --image {layout}:{tag} --config.env PATH=/bin:/usr/bin --config.workingdir /
         rm -rf {b}"
    ));
}

fn push(layout: &Path, tag: &str, registry: &Server, reference: &str) {
    sh(&format!(
        "skopeo copy --quiet --dest-tls-verify=false oci:{}:{tag} docker://{}/{reference}",
        layout.display(),
        registry.host()
    ));
}

/// `skopeo inspect ARGS`, which must succeed, as JSON.
fn skopeo_inspect(args: &[String]) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn image_pipeline(base: &str, counter: &Counter) -> String {
    format!(
        r#"base: {{image: "{base}"}}
tasks:
  - key: greet
    run: |
      {}
      echo "PATH=$PATH"
      test ! -e /usr/bin/apt-get
      echo hello > /greeting
  - key: read
    use: [greet]
    run: {}; cat /greeting; busybox | head -1
"#,
        counter.ping_nc("greet"),
        counter.ping_nc("read")
    )
}

#[test]
fn a_pipeline_runs_on_an_image_pulled_from_a_registry() {
    let f = Fixture::new();
    let registry = Server::registry();
    let layout = f.ws().join("img");
    busybox_image(&layout, "1", "");
    push(&layout, "1", &registry, "tools/busybox:1");
    std::fs::remove_dir_all(&layout).unwrap();
    let counter = Counter::start();
    let base = format!("{}/tools/busybox:1", registry.host());
    f.write("strata.yml", &image_pipeline(&base, &counter));

    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(counter.take(), vec!["greet", "read"]);
    assert_eq!(r.output("greet"), vec!["PATH=/bin:/usr/bin"]);
    assert_eq!(r.output("read")[0], "hello");
    assert!(
        r.output("read")[1].starts_with("BusyBox"),
        "{:?}",
        r.output("read")
    );
    // Unchanged: restored.
    let r = f.run(&[]);
    assert_eq!(r.status("greet"), "restored");
    assert_eq!(r.status("read"), "restored");
    assert!(counter.take().is_empty());

    // The tag moves to another image: the base identity changes, everything runs again.
    let layout = f.ws().join("img2");
    busybox_image(&layout, "1", "echo v2 > etc/release");
    push(&layout, "1", &registry, "tools/busybox:1");
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(counter.take(), vec!["greet", "read"]);
}

#[test]
fn a_pipeline_runs_on_an_image_layout_directory() {
    let f = Fixture::new();
    let counter = Counter::start();
    busybox_image(&f.ws().join("img"), "stable", "");
    f.write("strata.yml", &image_pipeline("oci:img:stable", &counter));
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("read")[0], "hello");
    let r = f.run(&[]);
    assert_eq!(r.status("read"), "restored");
}

#[test]
fn an_image_reference_may_read_init_values() {
    // `image: ruby:${{ init.ruby-version }}`, as real RWX files write it.
    let f = Fixture::new();
    let counter = Counter::start();
    busybox_image(&f.ws().join("img"), "v2", "");
    f.write(
        "strata.yml",
        &image_pipeline("oci:img:${{ init.tag }}", &counter),
    );
    let out = f.output(&["check", "strata.yml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = f.run(&["--init", "tag=v2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("read")[0], "hello");
    let r = f.run(&["--init", "tag=v3"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("v3"), "{}", r.stderr);
}

#[test]
fn a_missing_image_is_a_clear_error() {
    let f = Fixture::new();
    let registry = Server::registry();
    let counter = Counter::start();
    f.write(
        "strata.yml",
        &image_pipeline(&format!("{}/nothing/here:1", registry.host()), &counter),
    );
    let r = f.run(&[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("nothing/here"), "{}", r.stderr);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
}

/// Lists a filesystem with busybox tools, the same way inside the sandbox and outside. What the
/// sandbox provides at run time, as a container runtime does, is not in the image and not
/// listed: the pseudo-filesystems and the files of /etc bound over the stack's.
const LISTING: &str = r#"cd / && find . \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp -o -path ./run -o -path ./etc/hosts -o -path ./etc/hostname -o -path ./etc/resolv.conf \) -prune -o -print | sort | while read f; do if [ -f "$f" ] && [ ! -L "$f" ]; then echo "$f $(stat -c '%a %u %g %s' "$f") $(md5sum < "$f" | cut -c1-32)"; elif [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f $(stat -c '%F %a %u %g' "$f")"; fi; done"#;

#[test]
fn an_exported_image_is_valid_and_holds_what_the_task_saw() {
    let f = Fixture::new();
    busybox_image(
        &f.ws().join("img"),
        "1",
        "mkdir -p opt && echo base > opt/base-file",
    );
    f.write("src/app.txt", "workspace file\n");
    f.write(
        "strata.yml",
        &format!(
            r#"base: {{image: "oci:img:1"}}
tasks:
  - key: a
    run: |
      mkdir -p /opt/a && echo from-a > /opt/a/file
      echo /opt/a/bin > $STRATA_ENV/PATH
      echo yes > $STRATA_ENV/FROM_A
  - key: b
    use: [a]
    filter: [src]
    run: |
      rm /opt/base-file /bin/true
      echo from-b > /opt/b && chmod 750 /opt/b
      ln /opt/b /opt/b-link
      {LISTING}
"#
        ),
    );
    let out_dir = f.ws().join("out");
    let out = f.output(&[
        "export",
        "strata.yml",
        "b",
        "--oci",
        out_dir.to_str().unwrap(),
        "--tag",
        "v1",
        "--cmd",
        "sh",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // What the task saw, from its log.
    let log = f.output(&["logs", "strata.yml", "b"]);
    let saw = String::from_utf8_lossy(&log.stdout).into_owned();
    assert!(saw.contains("./opt/a/file"), "{saw}");

    // skopeo accepts the image and reads its config.
    let config = skopeo_inspect(&["--config".into(), format!("oci:{}:v1", out_dir.display())]);
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"FROM_A=yes"), "{env:?}");
    assert!(env.contains(&"PATH=/opt/a/bin:/bin:/usr/bin"), "{env:?}");
    assert_eq!(config["config"]["WorkingDir"], "/workspace");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));

    // umoci unpacks it into exactly the filesystem the task saw.
    let bundle: PathBuf = f.ws().join("bundle");
    sh(&format!(
        "umoci unpack --image {}:v1 {}",
        out_dir.display(),
        bundle.display()
    ));
    let listed = Command::new("chroot")
        .arg(bundle.join("rootfs"))
        .args(["/bin/busybox", "sh", "-c", LISTING])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let exported = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(!exported.contains("./opt/base-file"), "a whiteout was lost");
    assert!(exported.contains("./workspace/src/app.txt"));
    assert_eq!(exported, saw);
}

#[test]
fn export_pushes_to_a_registry() {
    let f = Fixture::new();
    let registry = Server::registry();
    busybox_image(&f.ws().join("img"), "1", "");
    f.write(
        "strata.yml",
        "base: {image: \"oci:img:1\"}\ntasks:\n  - key: a\n    run: echo a > /a\n",
    );
    let reference = format!("{}/exports/a:v1", registry.host());
    let out = f.output(&[
        "export",
        "strata.yml",
        "a",
        "--push",
        &reference,
        "--compression",
        "zstd",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = skopeo_inspect(&[
        "--raw".into(),
        "--tls-verify=false".into(),
        format!("docker://{reference}"),
    ]);
    // Base layer, workspace layer, the task's layer.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{manifest}");
    assert!(
        layers
            .iter()
            .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd")
    );
    // And skopeo can copy it out of the registry (reading every blob) into a layout.
    let copy = f.ws().join("copy");
    sh(&format!(
        "skopeo copy --quiet --src-tls-verify=false docker://{reference} oci:{}:v1",
        copy.display()
    ));
}

#[test]
fn without_its_registry_a_pipeline_uses_the_image_as_last_pulled() {
    let f = Fixture::new();
    let registry = Server::registry();
    busybox_image(&f.ws().join("img"), "1", "");
    push(&f.ws().join("img"), "1", &registry, "tools/busybox:1");
    let counter = Counter::start();
    let base = format!("{}/tools/busybox:1", registry.host());
    f.write("strata.yml", &image_pipeline(&base, &counter));
    assert_eq!(f.run(&[]).code, 0);
    counter.take();
    drop(registry);
    // The registry is gone: the run goes on with the image it last resolved to, and says so.
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("read"), "restored");
    let warned = r.events.iter().any(|e| {
        e["event"] == "warning" && e["message"].as_str().unwrap_or("").contains("unreachable")
    });
    assert!(warned, "{:?}", r.events);
    // A reference never pulled cannot be guessed: a clear error.
    let other = format!("{}/tools/never:1", base.split('/').next().unwrap());
    f.write("strata.yml", &image_pipeline(&other, &counter));
    let r = f.run(&[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("unreachable"), "{}", r.stderr);
}

/// An image without `/etc/hosts` and `/etc/hostname`, whose `/etc/resolv.conf` is a dangling
/// symlink into `/run` (as systemd-resolved's images have it), as registry images come: the
/// runtime provides these files. glibc's `getent` (its NSS files and dns modules are part of
/// libc) reads what the task is given.
#[test]
fn a_task_on_an_image_without_etc_files_gets_hosts_hostname_and_the_host_s_resolver() {
    let f = Fixture::new();
    busybox_image(
        &f.ws().join("img"),
        "1",
        "mkdir -p usr/bin lib/x86_64-linux-gnu lib64
         cp /usr/bin/getent usr/bin/
         cp /lib/x86_64-linux-gnu/libc.so.6 lib/x86_64-linux-gnu/
         cp /lib64/ld-linux-x86-64.so.2 lib64/
         echo 'hosts: files dns' > etc/nsswitch.conf
         ln -s ../run/systemd/resolve/stub-resolv.conf etc/resolv.conf",
    );
    f.write(
        "strata.yml",
        r#"base: {image: "oci:img:1"}
tasks:
  - key: lookup
    run: |
      getent hosts localhost
      getent hosts "$(hostname)"
      echo "hostname=$(cat /etc/hostname)"
      cat /etc/resolv.conf
      # Edits of these files are the task's own, not its layer's.
      echo "10.9.9.9 edited" >> /etc/hosts
      echo "nameserver 10.9.9.9" >> /etc/resolv.conf
      echo edited > /etc/hostname
      echo kept > /marker
  - key: next
    use: [lookup]
    run: |
      getent hosts "$(hostname)"
      echo "hostname=$(cat /etc/hostname)"
      grep -c edited /etc/hosts || true
"#,
    );
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.output("lookup");
    let localhost = out[0].split_whitespace().collect::<Vec<_>>();
    assert!(
        ["::1", "127.0.0.1"].contains(&localhost[0]) && localhost.contains(&"localhost"),
        "{out:#?}"
    );
    assert_eq!(
        out[1].split_whitespace().collect::<Vec<_>>(),
        ["127.0.1.1", "lookup"]
    );
    assert_eq!(out[2], "hostname=lookup");
    assert_eq!(out[3..].join("\n"), host_resolv.trim_end(), "{out:#?}");
    // The next task sees its own files, none of the edits.
    assert_eq!(
        r.output("next"),
        ["127.0.1.1       next", "hostname=next", "0"]
    );

    // Nothing of /etc is in the layer: not the files, not the mount points made for them, not
    // the whiteout that hid the image's symlink, not /etc copied up for them.
    let layer = f.cache.path().join("layers").join(layer_of(&r, "lookup"));
    assert!(layer.join("marker").exists(), "{}", layer.display());
    assert!(
        std::fs::symlink_metadata(layer.join("etc")).is_err(),
        "{:?}",
        std::fs::read_dir(layer.join("etc")).map(|d| d.count())
    );

    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("lookup"), "restored");
    assert_eq!(r.status("next"), "restored");
    // The restored layer hides nothing of the image's /etc either.
    let layer = f.cache.path().join("layers").join(layer_of(&r, "lookup"));
    assert!(std::fs::symlink_metadata(layer.join("etc")).is_err());
}

fn layer_of(r: &common::RunResult, task: &str) -> String {
    r.event("task-passed", task)
        .or_else(|| r.event("task-restored", task))
        .and_then(|e| e["layer"].as_str())
        .unwrap_or_else(|| panic!("no layer for {task}"))
        .to_string()
}

/// `base: {image, config}` with a configuration package that records image settings in
/// `$RWX_IMAGE`, as RWX's `rwx/base` does: the directory is there, the run goes on, and what
/// strata does not honour is said, naming the task and the file; what it does anyway is not.
#[test]
fn a_base_config_package_writes_rwx_image_and_is_told_what_strata_does_not_honour() {
    let f = Fixture::new();
    busybox_image(&f.ws().join("img"), "1", "");
    f.write(
        "pkgs/demo/base/rwx-package.yml",
        r#"name: demo/base
version: 1.0.0
tasks:
  - key: configure
    run: |
      set -u
      echo 1000 > "$RWX_IMAGE/user"
      echo /var/mint-workspace > "$RWX_IMAGE/workspace"
"#,
    );
    f.write(
        "strata.yml",
        r#"base:
  image: "oci:img:1"
  config: demo/base 1.0.0
tasks:
  - key: hello
    run: |
      echo "image=$RWX_IMAGE"
      ls -A "$RWX_IMAGE" | wc -l
      echo root > "$RWX_IMAGE/user"
      echo /workspace > "$RWX_IMAGE/workspace"
"#,
    );
    let r = f.run(&["--packages", "pkgs"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("base.config.configure"), "ran");
    // Each task gets an empty directory of its own, outside its layer.
    assert_eq!(r.output("hello"), ["image=/run/strata/image", "0"]);
    let warnings: Vec<String> = r
        .warnings()
        .into_iter()
        .filter(|w| w.contains("RWX_IMAGE"))
        .collect();
    assert_eq!(
        warnings,
        [
            "`base.config.configure` wrote `$RWX_IMAGE/user` (`1000`): strata runs every task \
             as root and does not honour it",
            "`base.config.configure` wrote `$RWX_IMAGE/workspace` (`/var/mint-workspace`): \
             strata runs every task in `/workspace` and does not honour it",
        ]
    );
    let layer = f
        .cache
        .path()
        .join("layers")
        .join(layer_of(&r, "base.config.configure"));
    assert!(!layer.join("run").exists());
}
