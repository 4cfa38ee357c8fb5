//! `${{ tasks.X.artifacts.KEY }}` end to end, as root: a file and a directory artifact read by
//! another task that sees nothing else of X, keyed by the artifact's content, restored from the
//! local cache and from an S3 server, and the errors at line and column.

mod common;

use common::{CacheDir, Fixture, RunResult};

/// `build` makes a directory artifact and a file artifact from workspace files, and writes
/// other files that are not artifacts; `deploy` reads both artifacts.
fn pipeline(deploy_extra: &str) -> String {
    format!(
        "tasks:
  - key: build
    filter: [app.js, version.txt, unrelated.txt]
    run: |
      mkdir -p dist/sub /opt/other
      cp app.js dist/app.js
      echo deep > dist/sub/x
      cat unrelated.txt > /opt/other/file
      printf '#!/bin/sh\\necho kd %s\\n' \"$(cat version.txt)\" > /tmp/kd
      chmod +x /tmp/kd
    outputs:
      artifacts:
        - {{key: dist, path: dist}}
        - {{key: kd-binary, path: /tmp/kd}}
  - key: deploy
    run: |
      echo \"file=${{{{ tasks.build.artifacts.kd-binary }}}}\"
      echo \"dir=${{{{ tasks.build.artifacts.dist }}}}\"
      cp ${{{{ tasks.build.artifacts.kd-binary }}}} /usr/local/bin/kd
      kd
      cat ${{{{ tasks.build.artifacts.dist }}}}/app.js ${{{{ tasks.build.artifacts.dist }}}}/sub/x
      if [ -e /opt/other/file ] || [ -e dist ] || [ -e /tmp/kd ] || [ -e /var/lib/strata/artifacts ]; then echo SEES-BUILD; fi
      {deploy_extra}
"
    )
}

fn write_sources(f: &Fixture) {
    f.write("app.js", "console.log(1)\n");
    f.write("version.txt", "1.0\n");
    f.write("unrelated.txt", "one\n");
}

fn assert_deploy_read_the_artifacts(r: &RunResult, version: &str, app: &str) {
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.output("deploy");
    assert!(
        out.contains(&"file=/var/lib/strata/task-artifacts/build/kd-binary/kd".to_string()),
        "{out:?}"
    );
    assert!(
        out.contains(&"dir=/var/lib/strata/task-artifacts/build/dist".to_string()),
        "{out:?}"
    );
    assert!(out.contains(&format!("kd {version}")), "{out:?}");
    assert!(out.contains(&app.to_string()), "{out:?}");
    assert!(out.contains(&"deep".to_string()), "{out:?}");
    assert!(
        !out.iter().any(|l| l.contains("SEES-BUILD")),
        "the reader must see the artifacts and nothing else of build: {out:?}"
    );
}

#[test]
fn a_file_and_a_directory_artifact_are_read_by_another_task_that_sees_nothing_else() {
    let f = Fixture::new();
    write_sources(&f);
    f.write("strata.yml", &pipeline(""));
    let r = f.run(&[]);
    assert_deploy_read_the_artifacts(&r, "1.0", "console.log(1)");
    assert_eq!(r.status("build"), "ran");
    assert_eq!(r.status("deploy"), "ran");
    // The layer of build is intact: the reader's links into it never wrote through.
    let again = f.run(&["--artifacts", f.ws().join("out").to_str().unwrap()]);
    assert_eq!(again.status("deploy"), "restored");
    assert_eq!(
        std::fs::read_to_string(f.ws().join("out/build/dist/app.js")).unwrap(),
        "console.log(1)\n"
    );
    assert_eq!(
        std::fs::read_to_string(f.ws().join("out/build/kd-binary/kd")).unwrap(),
        "#!/bin/sh\necho kd 1.0\n"
    );
}

#[test]
fn the_reader_reruns_when_the_artifact_changes_and_only_then() {
    let f = Fixture::new();
    write_sources(&f);
    f.write("strata.yml", &pipeline(""));
    assert_eq!(f.run(&[]).code, 0);

    // build re-runs, but its artifacts are what they were: deploy is restored.
    f.write("unrelated.txt", "two\n");
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("build"), "ran");
    assert_eq!(r.status("deploy"), "restored");

    // The file artifact changes: deploy runs, and says why.
    f.write("version.txt", "2.0\n");
    let r = f.run(&[]);
    assert_deploy_read_the_artifacts(&r, "2.0", "console.log(1)");
    assert_eq!(r.status("deploy"), "ran");
    let reasons = r.event("task-missed", "deploy").expect("task-missed")["reasons"].to_string();
    assert!(
        reasons.contains("artifact build.kd-binary changed"),
        "{reasons}"
    );
    assert!(!reasons.contains("build.dist"), "{reasons}");

    // The directory artifact changes.
    f.write("app.js", "console.log(2)\n");
    let r = f.run(&[]);
    assert_deploy_read_the_artifacts(&r, "2.0", "console.log(2)");
    assert_eq!(r.status("deploy"), "ran");
    let reasons = r.event("task-missed", "deploy").expect("task-missed")["reasons"].to_string();
    assert!(reasons.contains("artifact build.dist changed"), "{reasons}");
}

#[test]
fn a_reader_that_runs_reads_the_artifact_of_a_task_restored_from_the_local_cache() {
    let f = Fixture::new();
    write_sources(&f);
    f.write("strata.yml", &pipeline(""));
    assert_eq!(f.run(&[]).code, 0);
    f.write("strata.yml", &pipeline("echo changed"));
    let r = f.run(&[]);
    assert_eq!(r.status("build"), "restored");
    assert_eq!(r.status("deploy"), "ran");
    assert_deploy_read_the_artifacts(&r, "1.0", "console.log(1)");
}

#[test]
fn a_reader_that_runs_reads_the_artifact_of_a_task_restored_from_s3() {
    let server = strata_testkit::Server::s3("strata-ci");
    let url = format!(
        "s3://strata-ci/artifact-refs?endpoint={}",
        server.endpoint()
    );
    let f = Fixture::new();
    write_sources(&f);
    let run = |cache: &std::path::Path| {
        let out = f
            .command(&["run", "--json", "--remote", &url])
            .env("STRATA_CACHE_DIR", cache)
            .env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY)
            .output()
            .unwrap();
        RunResult {
            code: out.status.code().unwrap_or(-1),
            events: String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            wall: std::time::Duration::ZERO,
        }
    };
    let (a, b, c) = (
        CacheDir::new("strata-cache-a-"),
        CacheDir::new("strata-cache-b-"),
        CacheDir::new("strata-cache-c-"),
    );
    f.write("strata.yml", &pipeline(""));
    let first = run(a.path());
    assert_deploy_read_the_artifacts(&first, "1.0", "console.log(1)");

    // Another machine: both entries come from S3.
    let second = run(b.path());
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.status("build"), "restored");
    assert_eq!(second.status("deploy"), "restored");

    // Another machine where the reader changed: build's layer is fetched from S3 while the
    // run goes on, and the reader waits for it.
    f.write("strata.yml", &pipeline("echo changed"));
    let third = run(c.path());
    assert_eq!(third.status("build"), "restored");
    assert_ne!(
        third.event("task-restored", "build").unwrap()["from"],
        "local"
    );
    assert_eq!(third.status("deploy"), "ran");
    assert_deploy_read_the_artifacts(&third, "1.0", "console.log(1)");
}

#[test]
fn a_file_written_into_rwx_artifacts_is_read_by_its_name() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: report
    run: echo 'all good' > \"$RWX_ARTIFACTS/summary\"
  - key: show
    run: cat ${{ tasks.report.artifacts.summary }}
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("show"), vec!["all good".to_string()]);
}

#[test]
fn an_artifact_the_task_did_not_produce_fails_the_reader_naming_it() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: report
    run: 'true # RWX_ARTIFACTS may be written'
  - key: show
    run: cat ${{ tasks.report.artifacts.summary }}
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let failed = r
        .event("task-failed", "show")
        .expect("task-failed")
        .to_string();
    assert!(
        failed.contains("task `report` produced no artifact `summary`"),
        "{failed}"
    );
}

fn check_error(f: &Fixture, yaml: &str) -> String {
    f.write("strata.yml", yaml);
    let out = f.output(&["check", "strata.yml"]);
    assert!(!out.status.success(), "check accepted:\n{yaml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_references_are_errors_at_their_line_and_column() {
    let f = Fixture::new();
    let producer = "tasks:
  - key: build
    run: mkdir dist
    outputs:
      artifacts:
        - {key: dist, path: dist}
";
    let e = check_error(
        &f,
        &format!("{producer}  - key: deploy\n    run: ls ${{{{ tasks.biuld.artifacts.dist }}}}\n"),
    );
    assert!(e.contains("strata.yml:8:17"), "{e}");
    assert!(e.contains("there is no task `biuld`"), "{e}");

    let e = check_error(
        &f,
        &format!("{producer}  - key: deploy\n    run: ls ${{{{ tasks.build.artifacts.dsit }}}}\n"),
    );
    assert!(e.contains("strata.yml:8:17"), "{e}");
    assert!(
        e.contains("task `build` declares no artifact `dsit`"),
        "{e}"
    );
    assert!(e.contains("dist"), "the help names the declared key: {e}");

    let e = check_error(
        &f,
        &format!("{producer}  - key: deploy\n    run: ls ${{{{ tasks.build.artifacts }}}}\n"),
    );
    assert!(e.contains("strata.yml:8:17"), "{e}");
    assert!(e.contains("needs an artifact key"), "{e}");

    // A task cannot wait for one that waits for it.
    let e = check_error(
        &f,
        "tasks:
  - key: build
    use: [deploy]
    run: mkdir dist
    outputs:
      artifacts:
        - {key: dist, path: dist}
  - key: deploy
    run: ls ${{ tasks.build.artifacts.dist }}
",
    );
    assert!(e.contains("cycle"), "{e}");
    assert!(e.contains("strata.yml:9:17"), "at the reference: {e}");

    let e = check_error(
        &f,
        "tasks:
  - key: build
    run: ls ${{ tasks.build.artifacts.dist }}
    outputs:
      artifacts:
        - {key: dist, path: dist}
",
    );
    assert!(e.contains("strata.yml:3:17"), "{e}");
    assert!(e.contains("reads its own artifact `dist`"), "{e}");
}

#[test]
fn the_artifact_of_a_parallel_task_gathers_every_generated_task_s() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: build
    parallel:
      matrix:
        target: [amd64, arm64]
    run: |
      mkdir -p dist
      echo ${{ parallel.target }} > dist/app-${{ parallel.target }}.tar.gz
    outputs:
      artifacts:
        - {key: dist, path: dist}
  - key: publish
    env:
      ASSETS: ${{ tasks.build.artifacts.dist }}
    run: |
      echo \"assets=$ASSETS\"
      find \"$ASSETS\" -type f -name '*.tar.gz' | sort | xargs cat
      ls \"$ASSETS\" | wc -l
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.output("publish"),
        vec![
            "assets=/var/lib/strata/task-artifacts/build/dist".to_string(),
            "amd64".to_string(),
            "arm64".to_string(),
            "2".to_string(),
        ],
        "one directory per generated task, each with its artifact"
    );
    assert_eq!(f.run(&[]).status("publish"), "restored");
}

/// Artifact and test-results paths may read another task's values (RWX's
/// `path: ext-${{ tasks.version.values.version }}.vsix`): resolved as the task starts, keyed as
/// resolved, and a file artifact is read by its resolved name.
#[test]
fn artifact_and_test_results_paths_may_read_task_values() {
    let f = Fixture::new();
    f.write("v.txt", "1.2.3\n");
    f.write(
        "strata.yml",
        "tasks:
  - key: version
    filter: [v.txt]
    run: tr -d '\\n' < v.txt > $RWX_VALUES/version
  - key: package
    run: |
      for v in 1.2.3 1.2.4; do echo \"ext $v\" > ext-$v.vsix; done
      mkdir -p reports-1.2.3 reports-1.2.4
      for v in 1.2.3 1.2.4; do
        echo \"<testsuite name='s' tests='1'><testcase name='t-$v'/></testsuite>\" > reports-$v/r.xml
      done
    outputs:
      artifacts:
        - key: ext
          path: ext-${{ tasks.version.values.version }}.vsix
      test-results:
        - path: reports-${{ tasks.version.values.version }}/*.xml
  - key: publish
    run: cat ${{ tasks.package.artifacts.ext }}
",
    );
    let out = f.ws().join("out");
    let r = f.run(&["--artifacts", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("publish"), ["ext 1.2.3"]);
    assert_eq!(
        std::fs::read_to_string(out.join("package/ext/ext-1.2.3.vsix")).unwrap(),
        "ext 1.2.3\n"
    );
    let results = r
        .event("task-test-results", "package")
        .unwrap_or_else(|| panic!("no test results: {:?}", r.events))
        .to_string();
    assert!(
        results.contains("t-1.2.3") && !results.contains("t-1.2.4"),
        "{results}"
    );

    // The value changes, the command does not: the key follows the resolved path.
    f.write("v.txt", "1.2.4\n");
    let r = f.run(&["--artifacts", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("package"), "ran");
    assert_eq!(r.output("publish"), ["ext 1.2.4"]);
    assert!(out.join("package/ext/ext-1.2.4.vsix").exists());

    // Unchanged: everything restored, the artifact still read by its resolved name.
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("package"), "restored");
    assert_eq!(r.status("publish"), "restored");
}
