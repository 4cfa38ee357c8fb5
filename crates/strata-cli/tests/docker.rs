//! `docker: true`: a Docker daemon private to the task (Debian's `docker.io`), its data root
//! outside the overlay, no bridge and no iptables; containers of a tiny busybox image imported
//! from files (no registry is reachable). As root, with the real daemon.

mod common;

use std::path::Path;

use common::{Fixture, processes_with};

fn assert_docker() {
    for program in ["/usr/sbin/dockerd", "/usr/bin/containerd", "/usr/sbin/runc"] {
        assert!(
            Path::new(program).exists(),
            "this test needs {program} (Debian's `docker.io` package)"
        );
    }
    assert!(
        Path::new("/bin/busybox").exists(),
        "this test needs a static /bin/busybox (Debian's `busybox-static`) to build an image from"
    );
}

/// Imports a one-binary busybox image as `tiny:local` unless the daemon has it.
const IMPORT_TINY: &str = "      if docker image inspect tiny:local >/dev/null 2>&1; then
        echo image already there
      else
        mkdir -p /tmp/rootfs/bin && cp /bin/busybox /tmp/rootfs/bin/
        for c in sh echo cat sleep test; do ln -s busybox /tmp/rootfs/bin/$c; done
        tar -C /tmp/rootfs -c . | docker import - tiny:local >/dev/null
        echo image imported
      fi
";

/// Daemons of the task `task` of any run (their `--cgroup-parent` ends with the task's name;
/// other tests' daemons may be running).
fn daemons_of(task: &str) -> Vec<u32> {
    processes_with("--cgroup-parent /strata-docker-")
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .trim_end_matches('\0')
                    .ends_with(&format!("-{task}"))
            })
        })
        .collect()
}

/// The cgroups, in any hierarchy, that a daemon of the task `task` created.
fn leftover_cgroups(task: &str) -> Vec<String> {
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dirs = std::fs::read_dir(hierarchy.path())
            .into_iter()
            .flatten()
            .flatten();
        for d in dirs {
            let name = d.file_name().to_string_lossy().into_owned();
            if name.starts_with("strata-docker-") && name.ends_with(&format!("-{task}")) {
                found.push(d.path().display().to_string());
            }
        }
    }
    found
}

#[test]
fn two_tasks_each_run_containers_on_a_daemon_of_their_own() {
    assert_docker();
    let f = Fixture::new();
    let task = |name: &str| {
        format!(
            "  - key: {name}
    docker: true
    run: |
      echo DOCKER_HOST=$DOCKER_HOST
      docker info --format 'driver={{{{.Driver}}}} root={{{{.DockerRootDir}}}}'
{IMPORT_TINY}      docker run --rm --network none tiny:local sh -c 'echo hello from a container of {name}; cat /proc/self/cgroup' > /tmp/out
      cat /tmp/out
      grep -q strata-docker- /tmp/out && echo containers in the cgroup parent of the task
      if ip link show docker0 >/dev/null 2>&1; then echo docker0 exists; fi
      echo FROM tiny:local > /tmp/Dockerfile
      echo 'RUN echo built in {name} > /built' >> /tmp/Dockerfile
      docker build --quiet --network host -t built:local -f /tmp/Dockerfile /tmp >/dev/null
      docker run --rm built:local cat /built
"
        )
    };
    f.write(
        "strata.yml",
        &format!("tasks:\n{}{}", task("one"), task("two")),
    );
    // What a daemon of a killed strata left: removed by the next Docker task.
    let dead_pid = (4_000_000..4_194_304)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    // A v1 hierarchy where there is one, else the cgroup2 root.
    let stale = if Path::new("/sys/fs/cgroup/pids").exists() {
        "/sys/fs/cgroup/pids"
    } else {
        "/sys/fs/cgroup"
    };
    let stale = Path::new(stale).join(format!("strata-docker-{dead_pid}-stale"));
    std::fs::create_dir_all(stale.join("container")).unwrap();
    let r = f.run(&["-j", "2"]);
    assert!(!r.events.is_empty(), "{}", r.stderr);
    assert!(
        !stale.exists(),
        "a dead strata's daemon cgroup was left: {}",
        stale.display()
    );
    for name in ["one", "two"] {
        let output = r.output(name);
        let own: Vec<&String> = output
            .iter()
            .filter(|l| !l.starts_with("[dockerd]"))
            .collect();
        assert_eq!(
            r.status(name),
            "ran",
            "{own:#?}\n{:?}",
            r.event("task-failed", name)
        );
        let has = |l: &str| output.iter().any(|o| o == l);
        assert!(
            has("DOCKER_HOST=unix:///var/run/docker.sock"),
            "{output:#?}"
        );
        // overlay2 works: the data root is a directory of the host's filesystem, bound in.
        assert!(has("driver=overlay2 root=/var/lib/docker"), "{output:#?}");
        assert!(has("image imported"), "{output:#?}");
        assert!(
            has(&format!("hello from a container of {name}")),
            "{output:#?}"
        );
        assert!(
            has("containers in the cgroup parent of the task"),
            "{output:#?}"
        );
        assert!(!has("docker0 exists"), "{output:#?}");
        assert!(has(&format!("built in {name}")), "{output:#?}");
        assert!(
            output
                .iter()
                .any(|l| l.starts_with("[dockerd] ") && l.contains("API listen on")),
            "{output:#?}"
        );
    }
    // Everything went with the tasks: daemons, their data roots, their cgroups, no bridge.
    for name in ["one", "two"] {
        assert!(daemons_of(name).is_empty(), "a daemon outlived its task");
        assert!(
            leftover_cgroups(name).is_empty(),
            "{:?}",
            leftover_cgroups(name)
        );
    }
    let runs = f.cache.path().join("runs");
    let data_roots: Vec<_> = walkdir_named(&runs, "docker-data");
    assert!(data_roots.is_empty(), "{data_roots:?}");
    assert!(!Path::new("/sys/class/net/docker0").exists() || docker0_predates());
}

/// Directories named `name` under `root`, two levels of tasks deep at most.
fn walkdir_named(root: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name() == name {
                    found.push(e.path());
                } else if depth < 4 {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    found
}

/// A host with its own Docker has a docker0 of its own: not ours to judge.
fn docker0_predates() -> bool {
    Path::new("/var/run/docker.pid").exists()
}

#[test]
fn preserve_data_keeps_images_for_the_next_execution_and_for_the_tasks_that_use_it() {
    assert_docker();
    let f = Fixture::new();
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: images
    cache: false
    docker: preserve-data
    run: |
{IMPORT_TINY}      docker run --rm --network none tiny:local echo ran from the kept image
  - key: tests
    use: [images]
    cache: false
    docker: true
    background-processes:
      - key: db
        run: docker run --rm --name db --health-cmd 'test -f /up' --health-interval 1s tiny:local sh -c 'trap \"exit 0\" TERM; sleep 2; echo > /up; echo db up; while true; do sleep 0.2; done'
        ready-check: rwx-docker-ready-check
    run: |
      docker inspect -f 'db is {{{{.State.Health.Status}}}}' db
      docker run --rm tiny:local echo a task using images has its images too
"
        ),
    );
    let first = f.run(&[]);
    let output = first.output("images");
    assert_eq!(first.code, 0, "{output:#?}\n{}", first.stderr);
    assert!(
        output.contains(&"image imported".to_string()),
        "{output:#?}"
    );
    let second = f.run(&[]);
    let output = second.output("images");
    assert_eq!(second.code, 0, "{output:#?}\n{}", second.stderr);
    assert!(
        output.contains(&"image already there".to_string()),
        "{output:#?}"
    );
    assert!(
        output.contains(&"ran from the kept image".to_string()),
        "{output:#?}"
    );
    assert!(f.cache.path().join("docker/images.data/image").is_dir());
    // A task that uses it starts from a copy of what it kept (RWX: images pulled by a
    // preserve-data task are there for the tasks that use it); its own copy goes afterwards.
    for r in [&first, &second] {
        let output = r.output("tests");
        assert_eq!(r.status("tests"), "ran", "{output:#?}");
        assert!(
            output.contains(&"a task using images has its images too".to_string()),
            "{output:#?}"
        );
        // RWX's ready check for containers: the command starts once the container is healthy.
        assert!(output.contains(&"db is healthy".to_string()), "{output:#?}");
        assert!(output.contains(&"[db] db up".to_string()), "{output:#?}");
    }
    // On the terminal, the daemons' own log is left out, and said to be in the task's log;
    // a background process's lines are shown.
    let out = f.output(&["run", "strata.yml"]);
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("ran from the kept image"), "{shown}");
    assert!(shown.contains("[db] db up"), "{shown}");
    assert!(!shown.contains("[dockerd]"), "{shown}");
    // `cache: false`: no entry keeps the log, so the lines are in `--json` (as the runs above
    // read them).
    assert!(
        shown.contains("lines of its Docker daemon's log not shown: `strata run --json` has them"),
        "{shown}"
    );
    assert!(daemons_of("tests").is_empty(), "a daemon outlived its task");
    assert!(
        daemons_of("images").is_empty(),
        "a daemon outlived its task"
    );
    assert!(
        leftover_cgroups("images").is_empty(),
        "{:?}",
        leftover_cgroups("images")
    );
}

#[test]
fn docker_without_dockerd_in_the_task_filesystem_says_what_is_missing() {
    let f = Fixture::new();
    // A base with a shell and nothing of Docker.
    let rootfs = f.ws().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    f.write(
        "strata.yml",
        &format!(
            "base:\n  rootfs: {}\ntasks:\n  - key: needs-docker\n    docker: true\n    run: echo ran\n",
            rootfs.display()
        ),
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let failed = r
        .event("task-failed", "needs-docker")
        .expect("the task failed");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("background process `dockerd` exited with status 127 before it was ready")
            && reason.contains("Debian's `docker.io` package"),
        "{reason}"
    );
    assert!(!r.output("needs-docker").contains(&"ran".to_string()));
}
