//! RWX's bases beyond an image: `base: {image, config}`, where `config` is a package that
//! configures the image (`rwx/base 1.1.1`), and the older `base: {os, tag}`, an image of RWX's
//! cloud that the config file may map to an image of one's own (`base-images`).

use crate::diagnostic::{Diagnostic, Location};
use crate::model::{Base, Dialect, Note, Pipeline, Task, TaskKind, TaskName};
use crate::yaml::{Node, Value};

use super::LoadOptions;
use super::sources::Lookup;

/// The task that stands for the base configuration package: a name no file can give a task.
pub const BASE_CONFIG_TASK: &str = "base.config";

fn scalar<'a>(entries: &'a [(Node, Node)], key: &str) -> Option<(&'a str, Location)> {
    entries
        .iter()
        .find_map(|(k, v)| match (&k.value, &v.value) {
            (Value::Scalar { text: name, .. }, Value::Scalar { text, .. }) if name == key => {
                Some((text.as_str(), v.at))
            }
            _ => None,
        })
}

/// Applies `base.config` and `base: {os, tag}` to the pipeline read from `root` (the run's own
/// file: an embedded run's base is not used).
/// Returns the call of the base configuration package, to be added with [`use_base_config`]
/// once the file's own calls are resolved.
pub(crate) fn apply_base(
    root: &Node,
    pipeline: &mut Pipeline,
    opts: &LoadOptions,
    errors: &mut Vec<Diagnostic>,
) -> Option<Task> {
    let mut config_task = None;
    let Value::Map(top) = &root.value else {
        return None;
    };
    let Some(Value::Map(base)) = top.iter().find_map(|(k, v)| match &k.value {
        Value::Scalar { text, .. } if text == "base" => Some(&v.value),
        _ => None,
    }) else {
        return None;
    };
    // Notes that replace what `base` itself says about `os` and `config`.
    let mut mine: Vec<Note> = Vec::new();
    if let Some((os, at)) = scalar(base, "os")
        && scalar(base, "image").is_none()
        && !os.contains("${{")
    {
        let os = os.split_whitespace().collect::<Vec<_>>().join(" ");
        let tag = scalar(base, "tag").map(|(t, _)| t.trim().to_string());
        let keys: Vec<String> = tag
            .iter()
            .map(|t| format!("{os} {t}"))
            .chain([os.clone()])
            .collect();
        // `os tag` before `os` alone.
        match keys
            .iter()
            .find_map(|w| opts.base_images.iter().find(|(k, _)| k == w))
        {
            Some((k, image)) => {
                pipeline.base = Base::Image(image.clone());
                mine.push(Note {
                    warning: false,
                    at,
                    message: format!(
                        "`base: {{os: {os}{}}}` runs on image {image} (`base-images: {k}` in the config file)",
                        tag.as_deref().map(|t| format!(", tag: {t}")).unwrap_or_default()
                    ),
                });
            }
            None => {
                mine.push(Note {
                    warning: false,
                    at,
                    message: format!(
                        "`base: {{os: {os}}}` names an image of RWX's cloud: tasks run on this machine's own filesystem (`base: host`); map it to an image with `base-images` in the config file"
                    ),
                });
            }
        }
    }
    if let Some((config, at)) = scalar(base, "config") {
        let config = config.trim();
        let mut words = config.split_whitespace();
        match (words.next(), words.next()) {
            (Some("none"), None) => {}
            (Some(name), Some(version)) => match opts.packages.find(name, version) {
                Ok(Lookup::Found { .. }) => {
                    config_task = base_config_call(config, at, errors);
                    mine.push(Note {
                        warning: false,
                        at,
                        message: format!(
                            "`base.config: {config}` is applied: its tasks (`{BASE_CONFIG_TASK}.*`) run under every task of the run"
                        ),
                    });
                }
                _ => mine.push(Note {
                    warning: false,
                    at,
                    message: format!(
                        "`base.config: {config}` is not applied: no package source holds it (give one with --packages)"
                    ),
                }),
            },
            _ => errors.push(Diagnostic::new(
                at,
                config.len().max(1),
                format!("`base.config: {config}` is not a package (`NAME VERSION`) or `none`"),
            )),
        }
    }
    if !mine.is_empty() {
        pipeline.notes.retain(|n| !n.message.starts_with("`base`"));
        pipeline.notes.extend(mine);
    }
    config_task
}

/// The call of the base configuration package, as a task named [`BASE_CONFIG_TASK`].
fn base_config_call(config: &str, at: Location, errors: &mut Vec<Diagnostic>) -> Option<Task> {
    let snippet = format!("key: base-config\ncall: {config}\n");
    let node = crate::yaml::parse(&snippet).ok()?;
    let mut unsupported = Vec::new();
    let mut notes = Vec::new();
    let mut extras = crate::parse::task::TaskExtras {
        unsupported: &mut unsupported,
        notes: &mut notes,
    };
    let mut local = Vec::new();
    let Some(mut task) =
        crate::parse::task::build_task(&node, Dialect::Rwx, &mut local, &mut extras)
    else {
        errors.extend(local);
        return None;
    };
    task.name = TaskName::new(BASE_CONFIG_TASK);
    task.at = at;
    if let TaskKind::Call(spec) = &mut task.kind {
        spec.at = at;
        spec.target.at = at;
    }
    Some(task)
}

/// Resolves the base configuration call and puts it under every task of the run, the tasks of
/// its calls included.
pub(crate) fn use_base_config(
    pipeline: &mut Pipeline,
    task: Task,
    opts: &LoadOptions,
    stack: &[std::path::PathBuf],
    read: &super::expand::ReadFile<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    let name = task.name.clone();
    let tasks = std::mem::take(&mut pipeline.tasks);
    let mut config = pipeline.clone();
    config.tasks = vec![task];
    config.notes.clear();
    config.unsupported.clear();
    super::expand(&mut config, opts, stack, read, errors);
    pipeline.notes.extend(config.notes);
    pipeline.unsupported.extend(config.unsupported);
    let mut all = config.tasks;
    for mut t in tasks {
        t.uses.insert(0, name.clone());
        all.push(t);
    }
    pipeline.tasks = all;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::PackageSources;
    use std::path::Path;

    fn parse(dir: &Path, text: &str, opts: &LoadOptions) -> Pipeline {
        crate::parse_with(&dir.join("ci.yml"), text, opts).unwrap()
    }

    #[test]
    fn a_base_config_package_runs_under_every_task_when_a_source_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("pkgs/acme/base");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(
            pkg.join("rwx-package.yml"),
            "name: acme/base\nversion: 1.0.0\ntasks:\n  - key: configure\n    run: echo\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sub.yml"),
            "tasks:\n  - key: inner\n    run: echo\n",
        )
        .unwrap();
        let text = "base:\n  image: debian:12\n  config: acme/base 1.0.0\ntasks:\n  - key: a\n    run: echo\n  - key: s\n    call: sub.yml\n";
        let p = parse(dir.path(), text, &LoadOptions::default());
        assert_eq!(p.tasks.len(), 3);
        assert!(p.notes.iter().any(|n| n.message.contains("is not applied")));
        let opts = LoadOptions {
            packages: PackageSources::new(vec![dir.path().join("pkgs")]),
            ..Default::default()
        };
        let p = parse(dir.path(), text, &opts);
        assert_eq!(p.base, Base::Image("debian:12".into()));
        assert!(p.task("base.config.configure").is_some());
        let a = p.task("a").unwrap();
        assert_eq!(a.uses[0].as_str(), BASE_CONFIG_TASK);
        // The tasks of a called run too: the base is the run's.
        let inner = p.task("s.inner").unwrap();
        assert_eq!(inner.uses[0].as_str(), BASE_CONFIG_TASK);
        assert!(p.task("base.config.configure").unwrap().uses.is_empty());
    }

    #[test]
    fn an_rwx_os_is_the_host_unless_the_config_file_maps_it() {
        let dir = tempfile::tempdir().unwrap();
        let text = "base:\n  os: ubuntu 24.04\n  tag: 1.1\ntasks:\n  - key: a\n    run: echo\n";
        let p = parse(dir.path(), text, &LoadOptions::default());
        assert_eq!(p.base, Base::default());
        assert!(p.notes.iter().any(|n| n.message.contains("base-images")));
        let opts = LoadOptions {
            base_images: vec![("ubuntu 24.04 1.1".into(), "localhost:5000/u:24".into())],
            ..Default::default()
        };
        let p = parse(dir.path(), text, &opts);
        assert_eq!(p.base, Base::Image("localhost:5000/u:24".into()));
    }
}
