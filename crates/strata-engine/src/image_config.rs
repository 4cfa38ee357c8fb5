//! What a task writes into `$RWX_IMAGE`: on RWX, the configuration of the image its files make
//! — `user` and `workspace` (the user and directory later tasks run as and in: RWX's
//! `rwx/base` package writes both), `shell`, `command`/`entrypoint` (and their `.json` forms),
//! `labels/<key>`. strata keeps none of it: every task runs as root, in [`WORKSPACE_DIR`],
//! with bash, and an exported image gets its command from `strata export`. So each file a
//! task wrote is said in a warning naming the task and the file, unless what it asks for is
//! what strata does anyway.

use std::path::Path;

use crate::inputs::WORKSPACE_DIR;

/// The warnings for what `task` left in its `$RWX_IMAGE` directory `dir`, one per entry
/// (a directory such as `labels/` once), in name order.
pub(crate) fn warnings(task: &str, dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<(String, bool)> = entries
        .flatten()
        .map(|e| {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect();
    entries.sort();
    entries
        .into_iter()
        .filter_map(|(name, is_dir)| {
            if is_dir {
                return Some(format!(
                    "`{task}` wrote `$RWX_IMAGE/{name}/`: strata keeps no image configuration \
                     and ignores it"
                ));
            }
            let value = std::fs::read(dir.join(&name)).unwrap_or_default();
            let value = String::from_utf8_lossy(&value).trim().to_string();
            let why = match name.as_str() {
                "user" if ["root", "0"].contains(&value.as_str()) => return None,
                "user" => "strata runs every task as root".to_string(),
                "workspace" if value.trim_end_matches('/') == WORKSPACE_DIR => return None,
                "workspace" => format!("strata runs every task in `{WORKSPACE_DIR}`"),
                "shell" => "strata runs commands with `bash -e -o pipefail`".to_string(),
                _ => "strata keeps no image configuration".to_string(),
            };
            Some(format!(
                "`{task}` wrote `$RWX_IMAGE/{name}` ({}): {why} and does not honour it",
                shown(&value)
            ))
        })
        .collect()
}

/// A value as a warning quotes it: its first line, cut at 60 characters.
fn shown(value: &str) -> String {
    let line = value.lines().next().unwrap_or_default();
    let mut shown: String = line.chars().take(60).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    format!("`{shown}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir
    }

    #[test]
    fn what_strata_does_anyway_is_not_warned_about() {
        let dir = written(&[("user", "root\n"), ("workspace", "/workspace/\n")]);
        assert_eq!(warnings("t", dir.path()), Vec::<String>::new());
        let dir = written(&[("user", "0")]);
        assert_eq!(warnings("t", dir.path()), Vec::<String>::new());
    }

    #[test]
    fn what_would_change_later_tasks_is_named_with_the_task_and_the_file() {
        let dir = written(&[
            ("workspace", "/var/mint-workspace\n"),
            ("user", "ubuntu\n"),
            ("shell", "/bin/bash -l -e -o pipefail\n"),
            ("labels/org.opencontainers.image.source", "x"),
            ("command", "server --port 80\nsecond line"),
        ]);
        assert_eq!(
            warnings("base.config.configure", dir.path()),
            [
                "`base.config.configure` wrote `$RWX_IMAGE/command` (`server --port 80…`): \
                 strata keeps no image configuration and does not honour it",
                "`base.config.configure` wrote `$RWX_IMAGE/labels/`: strata keeps no image \
                 configuration and ignores it",
                "`base.config.configure` wrote `$RWX_IMAGE/shell` (`/bin/bash -l -e -o \
                 pipefail`): strata runs commands with `bash -e -o pipefail` and does not \
                 honour it",
                "`base.config.configure` wrote `$RWX_IMAGE/user` (`ubuntu`): strata runs every \
                 task as root and does not honour it",
                "`base.config.configure` wrote `$RWX_IMAGE/workspace` (`/var/mint-workspace`): \
                 strata runs every task in `/workspace` and does not honour it",
            ]
        );
    }

    #[test]
    fn an_empty_directory_says_nothing() {
        let dir = written(&[]);
        assert!(warnings("t", dir.path()).is_empty());
        assert!(warnings("t", &dir.path().join("absent")).is_empty());
    }
}
