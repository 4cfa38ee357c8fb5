//! `privileged: true`, strata's opt-in for a task that needs more than Docker's defaults.

use std::path::Path;

use strata_pipeline::parse_str;

#[test]
fn privileged_is_a_strata_task_key_and_off_by_default() {
    let text = "tasks:\n  - key: dind\n    privileged: true\n    run: dockerd &\n  - key: plain\n    run: make\n";
    let p = parse_str(Path::new("strata.yml"), text).unwrap();
    assert!(p.task("dind").unwrap().privileged);
    assert!(!p.task("plain").unwrap().privileged);
}

#[test]
fn privileged_must_be_a_boolean() {
    let text = "tasks:\n  - key: a\n    privileged: sometimes\n    run: x\n";
    let err = parse_str(Path::new("strata.yml"), text)
        .expect_err("a non-boolean is refused")
        .to_string();
    assert!(err.contains("`privileged`"), "{err}");
    assert!(err.contains("3:17"), "{err}");
}

#[test]
fn an_rwx_file_does_not_know_privileged() {
    let text = "tasks:\n  - key: a\n    privileged: true\n    run: x\n";
    let err = parse_str(Path::new(".rwx/ci.yml"), text)
        .expect_err("RWX has no such key")
        .to_string();
    assert!(err.contains("privileged"), "{err}");
}
