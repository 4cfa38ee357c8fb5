//! A task's `outputs` around its command: what is collected inside the sandbox once the
//! command ends (artifacts, test result files), what of its upper dir becomes its layer
//! (`outputs.filesystem`), where artifacts are kept (in the layer, so they travel with the
//! entry wherever it goes), and `strata run --artifacts DIR`.

use std::path::{Path, PathBuf};

use strata_key::LayerDigest;
use strata_pipeline::{FilesystemFilter, FilesystemOutput, Task, TaskOutputs};

use crate::inputs::WORKSPACE_DIR;

/// Where a task's artifacts are kept in its layer, one directory per artifact key.
pub(crate) const ARTIFACTS_DIR: &str = "/var/lib/strata/artifacts";
/// Outputs subdirectories the collection step writes (the host side reads them).
const DECLARED_ARTIFACTS: &str = "declared-artifacts";
const MISSING_ARTIFACTS: &str = "missing-artifacts";
const DECLARED_TEST_RESULTS: &str = "declared-test-results";
/// Lines `NAME<TAB>PATH`: where each collected test results file was found.
const TEST_RESULTS_LIST: &str = "declared-test-results.list";

/// Whether the command needs the collection step after it.
pub(crate) fn collects(outputs: &TaskOutputs) -> bool {
    !outputs.artifacts.is_empty() || !outputs.test_results.is_empty()
}

/// `command` followed by the collection of the task's declared artifacts and test result
/// files, run inside the sandbox where the task's whole filesystem is visible. Collected
/// whatever the command's status (a failed test run's report is what one needs), and the
/// command's status is the script's. The command keeps `-e` in its subshell.
pub(crate) fn wrap(command: &str, outputs: &TaskOutputs) -> String {
    let out = strata_sandbox::SandboxSpec::OUTPUTS_DIR;
    let mut s = format!(
        "set +e\n(\nset -e\n{command}\n)\n__strata_status=$?\ncd {WORKSPACE_DIR} 2>/dev/null\nshopt -s globstar nullglob 2>/dev/null\n"
    );
    for a in &outputs.artifacts {
        let path = quote(&a.path.raw);
        let dest = quote(&format!("{out}/{DECLARED_ARTIFACTS}/{}", a.key));
        let missing = quote(&format!("{out}/{MISSING_ARTIFACTS}"));
        let key = quote(&a.key);
        s.push_str(&format!(
            "if [ -e {path} ] || [ -L {path} ]; then mkdir -p {dest}; \
             if [ -d {path} ] && [ ! -L {path} ]; then cp -a {path}/. {dest}/; else cp -a {path} {dest}/; fi; \
             else mkdir -p {missing} && : > {missing}/{key}; fi\n"
        ));
    }
    if !outputs.test_results.is_empty() {
        let dest = format!("{out}/{DECLARED_TEST_RESULTS}");
        s.push_str(&format!("mkdir -p {}\n__strata_n=0\n", quote(&dest)));
        for t in &outputs.test_results {
            s.push_str(&format!(
                "for __strata_f in {}; do if [ -f \"$__strata_f\" ]; then __strata_n=$((__strata_n+1)); \
                 cp \"$__strata_f\" {}/$__strata_n; printf '%s\\t%s\\n' \"$__strata_n\" \"$__strata_f\" >> {}; fi; done\n",
                glob_words(&t.path.raw),
                quote(&dest),
                quote(&format!("{out}/{TEST_RESULTS_LIST}")),
            ));
        }
    }
    s.push_str("exit $__strata_status\n");
    s
}

/// A shell word for `s`, nothing expanded.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A glob as shell words: its wildcards active, every other character literal.
fn glob_words(pattern: &str) -> String {
    pattern
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "/._-*?[]".contains(c) {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// The declared artifacts the command did not produce, by key.
pub(crate) fn missing_artifacts(outputs_dir: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(outputs_dir.join(MISSING_ARTIFACTS))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    keys.sort();
    keys
}

/// The test result files of a finished task: those `outputs.test-results` named, as the task
/// saw them, then those it wrote into `$RWX_TEST_RESULTS`.
pub(crate) fn test_result_files(outputs_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    if let Ok(list) = std::fs::read_to_string(outputs_dir.join(TEST_RESULTS_LIST)) {
        for line in list.lines() {
            if let Some((n, shown)) = line.split_once('\t') {
                files.push((
                    shown.to_string(),
                    outputs_dir.join(DECLARED_TEST_RESULTS).join(n),
                ));
            }
        }
    }
    let mut own: Vec<PathBuf> = std::fs::read_dir(outputs_dir.join("test-results"))
        .into_iter()
        .flatten()
        .flatten()
        // Regular files only: a symlink would be followed on the host, outside the sandbox.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    own.sort();
    for p in own {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        files.push((format!("$RWX_TEST_RESULTS/{name}"), p.clone()));
    }
    files
}

/// The variables the failed attempt left for the next one under
/// `$RWX_RETRY_ACTIONS/<action>/env/` (RWX's retry actions).
pub(crate) fn retry_action_env(outputs_dir: &Path, action: &str) -> Vec<(String, String)> {
    if !strata_pipeline::valid_artifact_key(action) {
        return Vec::new();
    }
    let dir = outputs_dir.join("retry-actions").join(action).join("env");
    let mut vars: Vec<(String, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let value = std::fs::read_to_string(e.path()).ok()?;
            valid.then(|| (name, value.strip_suffix('\n').unwrap_or(&value).to_string()))
        })
        .collect();
    vars.sort();
    vars
}

/// Applies `outputs.filesystem` to a finished task's upper dir, before it is hashed: what is
/// removed here is in neither the local layer nor its archive, and not in the key of any
/// dependent.
pub(crate) fn filter_upper(upper: &Path, filesystem: &FilesystemOutput) -> std::io::Result<()> {
    match filesystem {
        FilesystemOutput::All => Ok(()),
        FilesystemOutput::None => {
            for e in std::fs::read_dir(upper)? {
                remove(&e?.path())?;
            }
            Ok(())
        }
        FilesystemOutput::Filtered(f) => {
            let ws = WORKSPACE_DIR.trim_start_matches('/');
            prune(upper, "", f, ws).map(|_| ())
        }
    }
}

/// Removes what `filter` drops under `dir` (`rel` its path from the root); returns whether
/// anything is left in it.
fn prune(dir: &Path, rel: &str, filter: &FilesystemFilter, ws: &str) -> std::io::Result<bool> {
    let mut left = false;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let kept = filter.keeps(&path, ws);
        if e.file_type()?.is_dir() {
            if !kept && !filter.may_keep_under(&path, ws) {
                std::fs::remove_dir_all(e.path())?;
                continue;
            }
            let inner = prune(&e.path(), &path, filter, ws)?;
            if !inner && !kept {
                std::fs::remove_dir(e.path())?;
                continue;
            }
            left = true;
        } else if kept {
            left = true;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(left)
}

fn remove(path: &Path) -> std::io::Result<()> {
    if path.symlink_metadata()?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Moves the task's artifacts — those `outputs.artifacts` collected and those it wrote into
/// `$RWX_ARTIFACTS` — into its upper dir under [`ARTIFACTS_DIR`], after `outputs.filesystem`
/// was applied: they are part of its layer whatever the filter. Returns their keys.
pub(crate) fn keep_artifacts(outputs_dir: &Path, upper: &Path) -> Result<Vec<String>, String> {
    let to = upper.join(ARTIFACTS_DIR.trim_start_matches('/'));
    let mut keys = Vec::new();
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    // Declared ones first: a `$RWX_ARTIFACTS` entry of the same name is refused below.
    for source in [DECLARED_ARTIFACTS, "artifacts"] {
        let Ok(entries) = std::fs::read_dir(outputs_dir.join(source)) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let key = e.file_name().to_string_lossy().into_owned();
            if !strata_pipeline::valid_artifact_key(&key) {
                return Err(format!(
                    "`{key}` in $RWX_ARTIFACTS is not a valid artifact name (letters, digits, `.`, `_`, `-`)"
                ));
            }
            if keys.contains(&key) {
                return Err(format!(
                    "artifact `{key}` is both declared in `outputs.artifacts` and written into $RWX_ARTIFACTS"
                ));
            }
            std::fs::create_dir_all(&to).map_err(|err| io(&to, err))?;
            let dest = to.join(&key);
            let is_dir = e.file_type().map_err(|err| io(&e.path(), err))?.is_dir();
            // Only a real directory is taken whole; anything else (a symlink the task put in
            // place of one) is wrapped, so that nothing later follows it on the host.
            if is_dir {
                std::fs::rename(e.path(), &dest).map_err(|err| io(&dest, err))?;
            } else {
                // A file written as `$RWX_ARTIFACTS/NAME` is artifact NAME holding that file.
                std::fs::create_dir_all(&dest).map_err(|err| io(&dest, err))?;
                std::fs::rename(e.path(), dest.join(&key)).map_err(|err| io(&dest, err))?;
            }
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The artifacts a committed layer holds, by key.
pub(crate) fn artifacts_in(layer_dir: &Path) -> Vec<String> {
    let mut keys: Vec<String> =
        std::fs::read_dir(layer_dir.join(ARTIFACTS_DIR.trim_start_matches('/')))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    keys.sort();
    keys
}

/// What `strata run --artifacts DIR` copies once the run is over (restored layers have
/// arrived by then).
#[derive(Default)]
pub(crate) struct ArtifactLedger {
    layers: std::sync::Mutex<Vec<(String, LayerSource)>>,
    /// Artifact paths written with expressions, as each task resolved them: (task, key) ->
    /// path. A file artifact is known by its file's name (`artifact_refs.rs`).
    resolved: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
}

/// Where a noted task's artifacts are. (A failed task's are copied at once from its
/// scratch by [`deliver_failed`]: a retry would replace them.)
pub(crate) enum LayerSource {
    /// A passing or restored task's layer, in the local cache.
    Layer(LayerDigest),
}

impl ArtifactLedger {
    /// Keeps the paths of `task`'s artifacts that were written with expressions, as resolved.
    pub(crate) fn note_paths(&self, task: &Task, resolved: &strata_pipeline::TaskOutputs) {
        let written = task.outputs.artifacts.iter().zip(&resolved.artifacts);
        let templated: Vec<_> = written
            .filter(|(w, _)| w.path.raw.contains("${{"))
            .collect();
        if templated.is_empty() {
            return;
        }
        if let Ok(mut paths) = self.resolved.lock() {
            for (_, r) in templated {
                paths.insert((task.name.to_string(), r.key.clone()), r.path.raw.clone());
            }
        }
    }

    /// The path `task` resolved for its artifact `key`, if it was written with an expression.
    pub(crate) fn resolved_path(&self, task: &str, key: &str) -> Option<String> {
        let paths = self.resolved.lock().ok()?;
        paths.get(&(task.to_string(), key.to_string())).cloned()
    }

    pub(crate) fn note(&self, task: &Task, source: LayerSource) {
        if let Ok(mut l) = self.layers.lock() {
            l.push((task.name.to_string(), source));
        }
    }

    /// Copies every noted task's artifacts to `dir/<task>/<key>/`; returns, per task, the keys
    /// copied, and the warnings.
    pub(crate) fn deliver(
        &self,
        cache: &strata_store::LocalCache,
        dir: &Path,
    ) -> (Vec<(String, Vec<String>)>, Vec<String>) {
        let mut copied = Vec::new();
        let mut warnings = Vec::new();
        let noted = self
            .layers
            .lock()
            .map(|l| {
                l.iter()
                    .map(|(t, LayerSource::Layer(d))| (t.clone(), *d))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for (task, layer) in noted {
            let layer_dir = cache.layers().path(&layer);
            let keys = artifacts_in(&layer_dir);
            if keys.is_empty() {
                continue;
            }
            let from = layer_dir.join(ARTIFACTS_DIR.trim_start_matches('/'));
            match copy_task_artifacts(&from, &keys, &dir.join(&task)) {
                Ok(()) => copied.push((task, keys)),
                Err(e) => warnings.push(format!("could not copy the artifacts of `{task}`: {e}")),
            }
        }
        (copied, warnings)
    }
}

/// Copies the artifacts of a failed task straight from its outputs dir.
pub(crate) fn deliver_failed(
    outputs_dir: &Path,
    task: &str,
    dir: &Path,
) -> Result<Vec<String>, String> {
    let scratch = outputs_dir.join("failed-artifacts");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let keys = keep_artifacts(outputs_dir, &scratch)?;
    if !keys.is_empty() {
        let from = scratch.join(ARTIFACTS_DIR.trim_start_matches('/'));
        copy_task_artifacts(&from, &keys, &dir.join(task)).map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(keys)
}

/// `from/<key>` → `to/<key>`, replacing what an earlier run left there.
fn copy_task_artifacts(from: &Path, keys: &[String], to: &Path) -> std::io::Result<()> {
    for key in keys {
        // A layer from a shared cache is untrusted: an artifact that is not a directory
        // (a symlink to the host's files) is not followed.
        if !from.join(key).symlink_metadata()?.is_dir() {
            return Err(std::io::Error::other(format!(
                "artifact `{key}` is not a directory in the layer"
            )));
        }
        let dest = to.join(key);
        if dest.symlink_metadata().is_ok() {
            remove(&dest)?;
        }
        std::fs::create_dir_all(&dest)?;
        copy_tree(&from.join(key), &dest)?;
    }
    Ok(())
}

/// Copies a directory's contents: files, directories and symlinks as they are (a layer's
/// whiteouts are not artifacts' business: an artifact directory is written fresh).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dest) = (e.path(), to.join(e.file_name()));
        let ty = e.file_type()?;
        if ty.is_dir() {
            std::fs::create_dir_all(&dest)?;
            copy_tree(&src, &dest)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dest)?;
        } else if ty.is_file() {
            std::fs::copy(&src, &dest)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(yaml_outputs: &str) -> TaskOutputs {
        let text = format!("tasks:\n  - key: t\n    run: 'true'\n    outputs:\n{yaml_outputs}");
        strata_pipeline::parse_str(Path::new("p.yml"), &text)
            .unwrap()
            .tasks[0]
            .outputs
            .clone()
    }

    #[test]
    fn a_filter_keeps_what_it_selects_and_the_directories_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        for f in [
            "root/.npm/_cacache/index",
            "root/.npmrc",
            "workspace/node_modules/a/index.js",
            "workspace/src/main.js",
            "tmp/junk",
        ] {
            std::fs::create_dir_all(upper.join(f).parent().unwrap()).unwrap();
            std::fs::write(upper.join(f), "x").unwrap();
        }
        let o = outputs(
            "      filesystem:\n        filter:\n          workspace: ['node_modules']\n          system: ['!/root/.npm', '!/tmp/**']\n",
        );
        filter_upper(upper, &o.filesystem).unwrap();
        assert!(!upper.join("root/.npm").exists());
        assert!(upper.join("root/.npmrc").is_file());
        assert!(upper.join("workspace/node_modules/a/index.js").is_file());
        assert!(!upper.join("workspace/src").exists());
        assert!(!upper.join("tmp/junk").exists());
    }

    #[test]
    fn filesystem_false_empties_the_upper_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        filter_upper(dir.path(), &FilesystemOutput::None).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_wrapper_collects_after_a_failure_and_keeps_the_status() {
        let o = outputs(
            "      artifacts: [{key: out, path: \"my dir\"}, {key: gone, path: nope}]\n      test-results: [{path: '**/*.xml'}]\n",
        );
        let script = wrap(
            "mkdir -p 'my dir' r; echo hi > 'my dir/f'; echo '<x/>' > r/a.xml; exit 4",
            &o,
        )
        .replace("'/run/strata", "\"$OUT\"'")
        .replace("cd /workspace", "cd \"$WS\"");
        let dir = tempfile::tempdir().unwrap();
        let (ws, out) = (dir.path().join("ws"), dir.path().join("out"));
        std::fs::create_dir_all(&ws).unwrap();
        let status = std::process::Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &script])
            .current_dir(&ws)
            .env("OUT", &out)
            .env("WS", &ws)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(4));
        assert_eq!(
            std::fs::read_to_string(out.join("declared-artifacts/out/f")).unwrap(),
            "hi\n"
        );
        assert_eq!(missing_artifacts(&out), vec!["gone"]);
        let files = test_result_files(&out);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "r/a.xml");
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(out.join("artifacts")).unwrap();
        std::fs::write(out.join("artifacts/report.txt"), "r").unwrap();
        assert_eq!(
            keep_artifacts(&out, &upper).unwrap(),
            vec!["out", "report.txt"]
        );
        let kept = upper.join("var/lib/strata/artifacts");
        assert!(kept.join("out/f").is_file() && kept.join("report.txt/report.txt").is_file());
    }
}
