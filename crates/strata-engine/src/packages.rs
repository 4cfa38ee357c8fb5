//! Calls at run time: the scope a called task's expressions are evaluated in (its call's
//! `with` as `params`, `init` as `init`, each argument evaluated in the caller's scope), a
//! package's files in the task's stack (`$RWX_PACKAGE_PATH`), what a calling task hands on, and
//! package sources that are git repositories.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_key::ExportedEnv;
use strata_pipeline::calls::{CallScope, Called, PackageFiles};
use strata_pipeline::expr::{Scope, Value};
use strata_pipeline::{Task, TaskKind};

use crate::context::RunContext;
use crate::expressions::{TaskValues, resolve};
use crate::inputs::{TaskResult, flatten_stack};

/// Where a package's files are inside the stack of its tasks: `$RWX_PACKAGE_PATH` is this
/// followed by the package's content digest, so the digest is part of every key that reads it.
pub(crate) const PACKAGES_DIR: &str = "/var/lib/strata/packages";

/// `$RWX_PACKAGE_PATH` of the tasks of `package`.
pub(crate) fn package_path(package: &PackageFiles) -> String {
    format!("{PACKAGES_DIR}/{}", package.digest)
}

/// The scope (as run, as keyed) of a task of a call: the caller's scope with the call's
/// `params`/`init` and the values of the call's own tasks.
pub(crate) fn call_scopes(
    run: &Scope,
    run_key: &Scope,
    call: &CallScope,
    values: &TaskValues,
) -> Result<(Scope, Scope), String> {
    let (parent, parent_key) = match &call.parent {
        Some(p) => call_scopes(run, run_key, p, values)?,
        None => (
            crate::expressions::with_values(run, values),
            crate::expressions::with_values(run_key, values),
        ),
    };
    let mut scope = parent.clone();
    let mut key = parent_key.clone();
    let mut params = (
        Value::Object(Default::default()),
        Value::Object(Default::default()),
    );
    let mut secret_params = Vec::new();
    for arg in &call.params {
        let r = resolve(&arg.value, &parent, &parent_key)
            .map_err(|e| format!("`with.{}` of `{}`: {e}", arg.name, call.caller))?;
        insert(&mut params.0, &arg.name, r.text);
        insert(&mut params.1, &arg.name, r.keyed);
        if r.secret {
            secret_params.push(arg.name.clone());
        }
    }
    scope.insert(&["params"], params.0);
    key.insert(&["params"], params.1);
    for name in &secret_params {
        scope.mark_secret(&["params", name]);
    }
    if matches!(call.called, Called::Run { .. }) || !call.init.is_empty() {
        let inherited = |s: &Scope| {
            if call.inherit_init {
                s.get(&["init"]).cloned()
            } else {
                None
            }
            .unwrap_or(Value::Object(Default::default()))
        };
        let mut init = (inherited(&parent), inherited(&parent_key));
        let mut secret_init = Vec::new();
        for arg in &call.init {
            let r = resolve(&arg.value, &parent, &parent_key)
                .map_err(|e| format!("`init.{}` of `{}`: {e}", arg.name, call.caller))?;
            insert(&mut init.0, &arg.name, r.text);
            insert(&mut init.1, &arg.name, r.keyed);
            if r.secret {
                secret_init.push(arg.name.clone());
            }
        }
        scope.insert(&["init"], init.0);
        key.insert(&["init"], init.1);
        for name in &secret_init {
            scope.mark_secret(&["init", name]);
        }
    }
    // The call's tasks read each other's values by the names their file gives them.
    let prefix = call.prefix();
    let own: TaskValues = values
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
        .collect();
    Ok((
        crate::expressions::with_values(&scope, &own),
        crate::expressions::with_values(&key, &own),
    ))
}

fn insert(object: &mut Value, name: &str, text: String) {
    if let Value::Object(map) = object {
        map.insert(name.to_string(), Value::from(text));
    }
}

/// What a calling task hands on: the stacks and env of the tasks it stands for (its `use`),
/// and the values of the tasks its package names in `outputs.values-from`.
pub(crate) fn called_result(
    task: &Task,
    parents: &[&TaskResult],
    values: &TaskValues,
) -> TaskResult {
    let mut env = ExportedEnv::merge(parents.iter().map(|p| &p.env));
    env.values.clear();
    if let TaskKind::Called(outputs) = &task.kind {
        for from in &outputs.values_from {
            if let Some(v) = values.get(from.as_str()) {
                env.values.extend(v.clone());
            }
        }
    }
    TaskResult {
        stack: flatten_stack(parents),
        env,
    }
}

/// A directory to put under a package task's layers: the package's files at
/// [`package_path`]. Made once per digest in the cache directory (`packages/<digest>`),
/// published by a rename so a reader never sees half of it.
pub(crate) fn package_lower(
    ctx: &RunContext<'_>,
    package: &PackageFiles,
) -> Result<PathBuf, String> {
    let root = ctx.cache.content().package_dir(&package.digest);
    if root.is_dir() {
        return Ok(root);
    }
    let parent = root.parent().expect("under the cache").to_path_buf();
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
    let tmp = parent.join(format!(".tmp-{}-{}", package.digest, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let inside = tmp.join(package_path(package).trim_start_matches('/'));
    let copy = || -> std::io::Result<()> {
        std::fs::create_dir_all(&inside)?;
        for rel in &package.files {
            let from = package.dir.join(rel);
            let to = inside.join(rel);
            if let Some(d) = to.parent() {
                std::fs::create_dir_all(d)?;
            }
            let meta = std::fs::symlink_metadata(&from)?;
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else {
                std::fs::copy(&from, &to)?;
            }
        }
        Ok(())
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        format!(
            "failed to copy package {} from {}: {e}",
            package.name,
            package.dir.display()
        )
    })?;
    if let Err(e) = std::fs::rename(&tmp, &root) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another run published the same package first.
        if !root.is_dir() {
            return Err(format!("failed to publish {}: {e}", root.display()));
        }
    }
    Ok(root)
}

/// A package source that is a git repository, cloned (or brought up to date) under
/// [`strata_store::package_sources_dir`]. When fetching fails and a clone is already there, it is used
/// as it is, with a warning in `notices`.
pub fn git_package_source(
    url: &str,
    cache_dir: &Path,
    notices: &mut Vec<String>,
) -> Result<PathBuf, String> {
    let (url, reference) = match url.rsplit_once('#') {
        Some((u, r)) if !r.is_empty() => (u, Some(r)),
        _ => (url, None),
    };
    let name = blake3::hash(url.as_bytes()).to_hex();
    let dir = strata_store::package_sources_dir(cache_dir).join(&name[..16]);
    let git = |args: &[&str], cwd: Option<&Path>| -> Result<(), String> {
        let mut c = Command::new("git");
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        let out = c
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let wanted = reference.unwrap_or("HEAD");
    if dir.join(".git").is_dir() {
        let fetched = git(
            &["fetch", "--quiet", "--depth", "1", "origin", wanted],
            Some(&dir),
        )
        .and_then(|_| {
            git(
                &["checkout", "--quiet", "--force", "FETCH_HEAD"],
                Some(&dir),
            )
        });
        if let Err(e) = fetched {
            notices.push(format!(
                "package source {url}: could not update the clone in {} ({e}); using it as it is",
                dir.display()
            ));
        }
        return Ok(dir);
    }
    let parent = dir.parent().expect("a path under the cache dir");
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
    let tmp = parent.join(format!(".tmp-{}-{}", &name[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let tmp_s = tmp.display().to_string();
    let cloned = match reference {
        None => git(&["clone", "--quiet", "--depth", "1", url, &tmp_s], None),
        Some(r) => git(&["init", "--quiet", &tmp_s], None)
            .and_then(|_| git(&["remote", "add", "origin", url], Some(&tmp)))
            .and_then(|_| {
                git(
                    &["fetch", "--quiet", "--depth", "1", "origin", r],
                    Some(&tmp),
                )
            })
            .and_then(|_| git(&["checkout", "--quiet", "FETCH_HEAD"], Some(&tmp))),
    };
    if let Err(e) = cloned {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("package source {url}: {e}"));
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn pipeline(dir: &Path, with: &str) -> strata_pipeline::Pipeline {
        std::fs::create_dir_all(dir.join("pkgs/acme/greet")).unwrap();
        std::fs::write(
            dir.join("pkgs/acme/greet/rwx-package.yml"),
            "name: acme/greet\nversion: 1.0.0\nparameters:\n  who: {required: true}\n  how: {default: hello}\ntasks:\n  - key: say\n    run: echo ${{ params.how }} ${{ params.who }}\n",
        )
        .unwrap();
        let opts = strata_pipeline::LoadOptions {
            packages: strata_pipeline::PackageSources::new(vec![dir.join("pkgs")]),
            ..Default::default()
        };
        let text = format!(
            "tasks:\n  - key: v\n    run: echo\n  - key: greet\n    use: [v]\n    call: acme/greet 1.0.0\n    with:\n{with}"
        );
        strata_pipeline::parse_with(&dir.join("ci.yml"), &text, &opts).unwrap()
    }

    #[test]
    fn params_come_from_with_defaults_and_the_callers_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), "      who: ${{ tasks.v.values.name }}\n");
        let say = p
            .task("greet.say")
            .expect("the package's task, named caller.inner");
        assert!(say.value_deps.iter().any(|d| d.as_str() == "v"));
        let call = say.scope.as_ref().unwrap();
        let values = TaskValues::from_iter([(
            "v".to_string(),
            BTreeMap::from([("name".to_string(), "world".to_string())]),
        )]);
        let mut run = Scope::new();
        run.insert_secret(&["secrets", "T"], Value::from("s3cret"));
        let (scope, _) = call_scopes(&run, &run, call, &values).unwrap();
        let r = crate::expressions::render(&say.run, &scope).unwrap();
        assert_eq!(r.text, "echo hello world");
    }

    #[test]
    fn a_secret_passed_with_with_stays_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), "      who: ${{ secrets.T }}\n");
        let say = p.task("greet.say").unwrap();
        let mut run = Scope::new();
        run.insert_secret(&["secrets", "T"], Value::from("s3cret"));
        let mut key = Scope::new();
        key.insert(&["secrets", "T"], Value::from("${{ secrets.T }}"));
        let (scope, key) =
            call_scopes(&run, &key, say.scope.as_ref().unwrap(), &TaskValues::new()).unwrap();
        let r = resolve(&say.run, &scope, &key).unwrap();
        assert!(r.secret);
        assert_eq!(r.text, "echo hello s3cret");
        assert_eq!(r.keyed, "echo hello ${{ secrets.T }}");
    }
}
