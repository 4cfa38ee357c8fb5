//! A call becomes tasks of the calling pipeline: what it names is found (a package from a
//! package source, or another run definition), the file is read and checked on its own, and
//! `splice.rs` adds its tasks as `caller.inner`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::expr::{Scope, Value, parse_template};
use crate::model::{Note, Pipeline, Task, TaskKind, Unsupported};

use super::sources::Lookup;
use super::{CallSpec, Called, LoadOptions};

/// The name inside a local package for whatever its caller `use`s.
pub(crate) const PACKAGE_USE: &str = "package.use";

/// What a `call:` names.
enum Target {
    Package {
        name: String,
        version: String,
    },
    Digest(String),
    File(PathBuf),
    /// Known only when the run starts (`${{ tasks.x.artifacts.y }}`).
    AtRunTime,
}

/// `run.dir` (and `run.mint-dir`): the directory of the run's definitions, the `.rwx` (or
/// `.mint`) directory holding the run's file, else that file's directory. RWX's own files
/// under `.rwx/integration/` call `${{ run.dir }}/integration/...`.
pub fn run_dir(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new("."));
    dir.ancestors()
        .find(|d| {
            matches!(
                d.file_name().and_then(|n| n.to_str()),
                Some(".rwx" | ".mint")
            )
        })
        .unwrap_or(dir)
        .to_path_buf()
}

/// What `spec` calls, from `file` in a run whose own file is `run_file`.
fn classify(spec: &CallSpec, file: &Path, run_file: &Path) -> Target {
    let raw = spec.target.raw.trim();
    let mut words = raw.split_whitespace();
    if let (Some(name), Some(version), None) = (words.next(), words.next(), words.next())
        && is_package_name(name)
    {
        return Target::Package {
            name: name.to_string(),
            version: version.to_string(),
        };
    }
    if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Target::Digest(raw.to_ascii_lowercase());
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let path = if raw.contains("${{") {
        // Only the run's directory is known before the run starts.
        let mut scope = Scope::new();
        for field in ["dir", "mint-dir"] {
            scope.insert(
                &["run", field],
                Value::from(run_dir(run_file).display().to_string()),
            );
        }
        let only_run_dir = parse_template(raw).ok().filter(|t| {
            t.references()
                .iter()
                .all(|r| r.path.first().map(String::as_str) == Some("run"))
        });
        match only_run_dir.and_then(|t| t.render(&scope).ok()) {
            Some(r) => PathBuf::from(r.text),
            None => return Target::AtRunTime,
        }
    } else {
        PathBuf::from(raw)
    };
    Target::File(if path.is_relative() {
        dir.join(path)
    } else {
        path
    })
}

/// `namespace/name`, as RWX spells packages.
fn is_package_name(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    matches!(s.split_once('/'), Some((a, b)) if ok(a) && ok(b))
}

/// Reads and checks a called file (with its own calls resolved).
pub(crate) type ReadFile<'a> =
    dyn Fn(&Path, &[PathBuf]) -> Result<Pipeline, crate::diagnostic::Diagnostics> + 'a;

/// Resolves every call of `pipeline` (read from `stack.last()`), adding the called tasks.
pub(crate) fn expand(
    pipeline: &mut Pipeline,
    opts: &LoadOptions,
    stack: &[PathBuf],
    read: &ReadFile<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    let clones_elsewhere = opts.workspace_remotes.is_some();
    if !pipeline
        .tasks
        .iter()
        .any(|t| matches!(t.kind, TaskKind::Call(_)) || (clones_elsewhere && t.is_source()))
    {
        return;
    }
    let tasks = std::mem::take(&mut pipeline.tasks);
    let mut out = Vec::with_capacity(tasks.len());
    for mut task in tasks {
        if let Some(spec) = clone_of_another_repository(&task, opts, errors) {
            task.kind = TaskKind::Call(spec);
        }
        let TaskKind::Call(spec) = &task.kind else {
            out.push(task);
            continue;
        };
        let spec = spec.clone();
        let refuse = |pipeline: &mut Pipeline, why: String| {
            pipeline.unsupported.push(Unsupported {
                key: format!("`call: {}` ({why})", spec.target.raw.trim()),
                task: Some(task.name.clone()),
                at: spec.at,
            })
        };
        let at_target = |message: String| {
            Diagnostic::new(spec.target.at, spec.target.raw.len().max(1), message)
        };
        let run_file = stack
            .first()
            .map_or(pipeline.path.as_path(), PathBuf::as_path);
        let (called, path) = match classify(&spec, &pipeline.path, run_file) {
            Target::AtRunTime => {
                refuse(pipeline, "a run definition known only at run time".into());
                out.push(task);
                continue;
            }
            Target::Package { name, version } => match opts.packages.find(&name, &version) {
                Ok(Lookup::Found { files, instead_of }) => {
                    if let Some(asked) = instead_of {
                        pipeline.notes.push(Note {
                            warning: true,
                            at: spec.target.at,
                            message: format!(
                                "no package source holds `{name} {asked}`; using {} of the same major version from {}",
                                files.version,
                                files.dir.display()
                            ),
                        });
                    }
                    let path = files.file();
                    (Called::Package(Arc::new(files)), path)
                }
                Ok(Lookup::Missing) => {
                    refuse(
                        pipeline,
                        if opts.packages.is_empty() {
                            "no package source: give one with --packages DIR|GIT-URL, $STRATA_PACKAGES or `packages:` in the config file".into()
                        } else {
                            format!(
                                "no package source holds `{name}`; searched {}",
                                sources_list(opts)
                            )
                        },
                    );
                    out.push(task);
                    continue;
                }
                Ok(Lookup::NoVersion(found)) => {
                    errors.push(
                        at_target(format!(
                            "no version of `{name}` matches {version}: the package sources hold {}",
                            found.join(", ")
                        ))
                        .with_help(format!(
                            "call one of those versions, or add a source holding {name} {version} (searched {})",
                            sources_list(opts)
                        )),
                    );
                    out.push(task);
                    continue;
                }
                Err(e) => {
                    errors.push(at_target(e));
                    out.push(task);
                    continue;
                }
            },
            Target::Digest(digest) => match opts.packages.find_digest(&digest) {
                Ok(Some(files)) => {
                    let path = files.file();
                    (Called::Package(Arc::new(files)), path)
                }
                Ok(None) => {
                    refuse(
                        pipeline,
                        "no package source holds a package with this digest (strata's digest of its files)".into(),
                    );
                    out.push(task);
                    continue;
                }
                Err(e) => {
                    errors.push(at_target(e));
                    out.push(task);
                    continue;
                }
            },
            Target::File(path) => {
                if !path.is_file() {
                    errors.push(at_target(format!(
                        "the called run definition {} does not exist",
                        path.display()
                    )));
                    out.push(task);
                    continue;
                }
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                (
                    Called::Run {
                        path: path.clone(),
                        local_package: false,
                    },
                    path,
                )
            }
        };
        if stack.contains(&path) {
            errors.push(at_target(format!(
                "{} calls itself (through {})",
                path.display(),
                stack
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            )));
            out.push(task);
            continue;
        }
        let mut inner_stack = stack.to_vec();
        inner_stack.push(path.clone());
        let inner = match read(&path, &inner_stack) {
            Ok(p) => p,
            Err(d) => {
                errors.push(at_target(format!(
                    "the called file has errors:\n{}",
                    d.to_string().trim_end()
                )));
                out.push(task);
                continue;
            }
        };
        super::splice::splice(pipeline, task, &spec, called, inner, &mut out, errors);
    }
    pipeline.tasks = out;
}

/// A `git/clone` whose `repository` is not the workspace's: a call of the package when a
/// source holds it, an error otherwise (strata serves only the workspace's own repository).
fn clone_of_another_repository(
    task: &Task,
    opts: &LoadOptions,
    errors: &mut Vec<Diagnostic>,
) -> Option<CallSpec> {
    let TaskKind::Source(source) = &task.kind else {
        return None;
    };
    let remotes = opts.workspace_remotes.as_ref()?;
    let repo = source.repository.as_ref()?;
    let url = repo.raw.trim();
    if url.is_empty() || url.contains("${{") {
        return None;
    }
    let want = super::normalize_remote(url);
    if remotes.iter().any(|r| super::normalize_remote(r) == want) {
        return None;
    }
    let spec = source.call.clone()?;
    let name = spec
        .target
        .raw
        .split_whitespace()
        .next()
        .unwrap_or_default();
    if !opts.packages.holds(name) {
        errors.push(
            Diagnostic::new(repo.at, url.len().max(1), format!(
                "`repository: {url}` is not the workspace's repository ({}): strata serves only that one from the checkout",
                if remotes.is_empty() { "it has no remote".to_string() } else { remotes.join(", ") }
            ))
            .with_help(format!(
                "to clone another repository, give a package source holding `{name}` (--packages)"
            )),
        );
        return None;
    }
    Some(spec)
}

fn sources_list(opts: &LoadOptions) -> String {
    opts.packages
        .dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `outputs.values-from` names tasks of the package file.
pub(crate) fn check_outputs(pipeline: &Pipeline, errors: &mut Vec<Diagnostic>) {
    let Some(decl) = &pipeline.package else {
        return;
    };
    for (name, at) in &decl.values_from {
        if pipeline.task(name.as_str()).is_none() {
            errors.push(Diagnostic::new(
                *at,
                name.as_str().len().max(1),
                format!("`outputs.values-from` names `{name}`, which is not a task of this file"),
            ));
        }
    }
}

/// A package file run or checked on its own: `package.use` names nothing.
pub(crate) fn strip_package_use(pipeline: &mut Pipeline) {
    for t in &mut pipeline.tasks {
        t.uses.retain(|u| u.as_str() != PACKAGE_USE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::PackageSources;
    use crate::model::TaskName;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn parse(dir: &Path, text: &str) -> Result<Pipeline, String> {
        let opts = LoadOptions {
            packages: PackageSources::new(vec![dir.join("pkgs")]),
            ..Default::default()
        };
        crate::parse_with(&dir.join("ci.yml"), text, &opts).map_err(|d| d.to_string())
    }

    const PACKAGE: &str = "name: acme/build
version: 2.3.1
parameters:
  target: {required: true}
outputs:
  values-from: [compile]
tasks:
  - key: deps
    run: echo deps
  - key: compile
    use: deps
    run: echo ${{ params.target }}
  - key: lint
    after: deps
    run: echo lint
";

    #[test]
    fn called_tasks_are_named_after_the_caller_and_it_stands_for_the_final_ones() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "pkgs/acme/build/rwx-package.yml", PACKAGE);
        let p = parse(
            dir.path(),
            "tasks:
  - key: tools
    run: echo
  - key: b
    use: tools
    after: [tools]
    env: {MODE: fast}
    filter: [src]
    cache: false
    call: acme/build 2.3.1
    with: {target: x86}
  - key: t
    use: [b, b.deps]
    run: echo
",
        )
        .unwrap();
        let names: Vec<&str> = p.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["tools", "b.deps", "b.compile", "b.lint", "b", "t"]);
        let b = p.task("b").unwrap();
        let names = |v: &[TaskName]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // Final tasks: used by no other task of the package.
        assert_eq!(names(&b.uses), ["b.compile", "b.lint"]);
        assert_eq!(names(&b.after), ["b.deps"]);
        assert!(b.value_deps.iter().any(|d| d.as_str() == "b.compile"));
        let compile = p.task("b.compile").unwrap();
        // The call's `use`, `after`, `env` and `filter` apply to each of its tasks.
        assert_eq!(names(&compile.uses), ["tools", "b.deps"]);
        assert!(compile.after.iter().any(|a| a.as_str() == "tools"));
        assert_eq!(compile.env[0].name, "MODE");
        assert!(compile.filter.is_some());
        assert!(!compile.cache.enabled);
        let scope = compile.scope.as_ref().unwrap();
        assert_eq!(scope.package().unwrap().version, "2.3.1");
        assert_eq!(scope.params[0].value.raw, "x86");
    }

    #[test]
    fn a_call_inside_an_embedded_run_is_scoped_under_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "pkgs/acme/build/rwx-package.yml", PACKAGE);
        write(
            dir.path(),
            "sub.yml",
            "tasks:\n  - key: b\n    call: acme/build 2.0.0\n    with:\n      target: ${{ init.arch }}\n",
        );
        let p = parse(
            dir.path(),
            "tasks:\n  - key: s\n    call: ${{ run.dir }}/sub.yml\n    init: {arch: arm}\n",
        )
        .unwrap();
        let compile = p.task("s.b.compile").expect("nested names");
        let scope = compile.scope.as_ref().unwrap();
        assert_eq!(scope.caller.as_str(), "s.b");
        let parent = scope
            .parent
            .as_ref()
            .expect("evaluated in the embedded run's scope");
        assert_eq!(parent.caller.as_str(), "s");
        assert_eq!(parent.init[0].name, "arch");
        assert!(
            p.notes
                .iter()
                .any(|n| n.message.contains("same major version"))
        );
    }

    #[test]
    fn an_embedded_run_with_a_base_of_its_own_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "leg.yml",
            "base:\n  image: ruby:${{ init.v }}\ntasks:\n  - key: t\n    run: ruby -v\n",
        );
        write(
            dir.path(),
            "same.yml",
            "base: host\ntasks:\n  - key: t\n    run: echo\n",
        );
        let p = parse(
            dir.path(),
            "base: host\ntasks:
  - key: legs
    parallel:
      matrix:
        v: [\"3.2\", \"3.3\"]
    call: ${{ run.dir }}/leg.yml
    init:
      v: ${{ parallel.v }}
  - key: plain
    call: ${{ run.dir }}/same.yml
",
        )
        .unwrap();
        let said: Vec<&str> = p
            .notes
            .iter()
            .map(|n| n.message.as_str())
            .filter(|m| m.contains("is not used when the file is called"))
            .collect();
        // Once for the two legs, and not for the file whose base is the caller's.
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("leg.yml:2:"), "{}", said[0]);
    }

    #[test]
    fn an_embedded_run_with_a_base_config_of_its_own_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let called = |config: &str| {
            format!(
                "base:\n  image: debian:12\n  config: {config}\ntasks:\n  - key: t\n    run: echo\n"
            )
        };
        write(dir.path(), "other.yml", &called("acme/base  2.0.0"));
        write(dir.path(), "same.yml", &called("acme/base 1.0.0"));
        write(dir.path(), "none.yml", &called("none"));
        let said = |caller_config: &str, file: &str| -> Vec<String> {
            let p = parse(
                dir.path(),
                &format!(
                    "base:\n  image: debian:12\n  config: {caller_config}\ntasks:\n  - key: c\n    call: ${{{{ run.dir }}}}/{file}\n"
                ),
            )
            .unwrap();
            p.notes
                .iter()
                .map(|n| n.message.clone())
                .filter(|m| m.contains("is not used when the file is called"))
                .collect()
        };
        // Another package than the caller's, on the same image: its setup would not run.
        let other = said("acme/base 1.0.0", "other.yml");
        assert_eq!(other.len(), 1, "{other:?}");
        assert!(
            other[0].contains("other.yml:3:") && other[0].contains("`base.config`"),
            "{}",
            other[0]
        );
        // A caller without one, and one with `none`, do not apply it either.
        assert_eq!(said("none", "same.yml").len(), 1);
        // The caller's own package (however spaced), and `none` in the called file: nothing
        // is left out.
        assert!(said("acme/base  1.0.0", "same.yml").is_empty());
        assert!(said("acme/base 1.0.0", "none.yml").is_empty());
    }

    #[test]
    fn a_package_pinned_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "pkgs/acme/build/rwx-package.yml", PACKAGE);
        let (_, digest) =
            crate::calls::content_digest(&dir.path().join("pkgs/acme/build")).unwrap();
        let p = parse(
            dir.path(),
            &format!("tasks:\n  - key: b\n    call: {digest}\n    with: {{target: x}}\n"),
        )
        .unwrap();
        let scope = p.task("b.compile").unwrap().scope.clone().unwrap();
        assert_eq!(scope.package().unwrap().digest, digest);
    }

    #[test]
    fn calls_that_cannot_be_resolved() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "pkgs/acme/build/rwx-package.yml", PACKAGE);
        write(
            dir.path(),
            "self.yml",
            "tasks:\n  - key: again\n    call: self.yml\n",
        );
        let e = parse(dir.path(), "tasks:\n  - key: s\n    call: self.yml\n").unwrap_err();
        assert!(e.contains("calls itself"), "{e}");
        let e = parse(dir.path(), "tasks:\n  - key: s\n    call: missing.yml\n").unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let e = parse(
            dir.path(),
            "tasks:\n  - key: s\n    call: self.yml\n    target: nope\n",
        )
        .unwrap_err();
        assert!(
            e.contains("called file has errors") || e.contains("no task `nope`"),
            "{e}"
        );
        // A run-time target and a package no source holds are accepted, and refused by `run`.
        let p = parse(
            dir.path(),
            "tasks:\n  - key: x\n    call: ${{ tasks.y.values.file }}\n  - key: y\n    run: echo\n  - key: z\n    call: acme/other 1.0.0\n",
        )
        .unwrap();
        let report = p.unsupported_report().unwrap();
        assert!(report.contains("known only at run time"), "{report}");
        assert!(
            report.contains("no package source holds `acme/other`"),
            "{report}"
        );
        let e = crate::parse_str(
            &dir.path().join("p.yml"),
            "name: a/b\nversion: 1.0.0\noutputs:\n  values-from: [nope]\ntasks:\n  - key: t\n    run: echo\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`outputs.values-from` names `nope`") && e.contains("p.yml:4:17"),
            "{e}"
        );
    }
}
