//! Packages' hooks, as RWX's packages use them: a task writes executable scripts into
//! `$RWX_HOOKS_BEFORE_TASK` / `$RWX_HOOKS_AFTER_TASK`; they become part of its layer (under
//! [`HOOKS_DIR`]), and every task whose stack holds them runs the before-task scripts before
//! its command (one failing fails the task) and the after-task scripts after it, whatever its
//! status. The scripts come from the layers under the task, which are keyed: the wrapper itself
//! is not.

use std::path::{Path, PathBuf};

/// Where hooks live inside a task's filesystem.
pub(crate) const HOOKS_DIR: &str = "/var/lib/strata/hooks";
/// The outputs subdirectories a task writes hooks into, and where they go in its layer.
const KINDS: [(&str, &str); 2] = [
    ("hooks-before-task", "before-task"),
    ("hooks-after-task", "after-task"),
];

/// Whether any of `lowers` holds a hook.
pub(crate) fn present(lowers: &[PathBuf]) -> bool {
    lowers.iter().any(|l| {
        KINDS.iter().any(|(_, kind)| {
            std::fs::read_dir(l.join(HOOKS_DIR.trim_start_matches('/')).join(kind))
                .is_ok_and(|mut d| d.next().is_some())
        })
    })
}

/// `command` with the hooks of its stack around it. The command keeps `-e` (it runs in a
/// subshell that sets it again; `||` would switch it off).
pub(crate) fn wrap(command: &str) -> String {
    format!(
        "__strata_hooks() {{ for h in \"$1\"/*; do if [ -f \"$h\" ] && [ -x \"$h\" ]; then \"$h\" || return $?; fi; done; }}
__strata_hooks {HOOKS_DIR}/before-task
set +e
(
set -e
{command}
)
__strata_status=$?
__strata_hooks {HOOKS_DIR}/after-task
exit $__strata_status
"
    )
}

/// Moves the hooks a task wrote into its upper dir, so that they are part of its layer.
pub(crate) fn keep(outputs_dir: &Path, upper: &Path) -> std::io::Result<()> {
    for (output, kind) in KINDS {
        let from = outputs_dir.join(output);
        let Ok(entries) = std::fs::read_dir(&from) else {
            continue;
        };
        let mut entries = entries.peekable();
        if entries.peek().is_none() {
            continue;
        }
        let to = upper.join(HOOKS_DIR.trim_start_matches('/')).join(kind);
        std::fs::create_dir_all(&to)?;
        for e in entries {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::rename(e.path(), to.join(e.file_name()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_move_into_the_layer_and_are_found_there() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = dir.path().join("outputs");
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(outputs.join("hooks-before-task")).unwrap();
        std::fs::create_dir_all(outputs.join("hooks-after-task")).unwrap();
        std::fs::create_dir_all(&upper).unwrap();
        assert!(!present(std::slice::from_ref(&upper)));
        std::fs::write(outputs.join("hooks-before-task/login.sh"), "#!/bin/sh\n").unwrap();
        keep(&outputs, &upper).unwrap();
        assert!(
            upper
                .join("var/lib/strata/hooks/before-task/login.sh")
                .is_file()
        );
        assert!(!upper.join("var/lib/strata/hooks/after-task").exists());
        assert!(present(&[upper]));
    }

    #[test]
    fn the_wrapper_keeps_errexit_and_the_status() {
        let script = wrap("false\necho not reached");
        let out = std::process::Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &script])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
    }
}
