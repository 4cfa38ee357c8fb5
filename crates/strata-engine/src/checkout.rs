//! What git says about the workspace: its commit, branch and remotes. This is what a
//! `git/clone` of the workspace exports, what `event.git.*` is outside CI, and what `ref` is
//! checked against. Read with the `git` command, as a user would; a workspace that is not a git
//! checkout (or a machine without git) simply has none of it.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkout {
    /// The commit checked out (`HEAD`), 40 hex digits.
    pub sha: String,
    /// The branch checked out, when `HEAD` is on one (`main`).
    pub branch: Option<String>,
    /// A tag pointing at `HEAD`, if any.
    pub tag: Option<String>,
    /// Fetch URLs of the remotes.
    pub remotes: Vec<String>,
    pub message: String,
    pub committer_name: String,
    pub committer_email: String,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// The top level of the git checkout holding `dir`, if any.
pub fn git_toplevel(dir: &Path) -> Option<PathBuf> {
    // Walk up rather than ask git: it works without git installed, and `.git` may be a file
    // (worktrees, submodules).
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.join(".git").exists() {
            return Some(p.to_path_buf());
        }
        d = p.parent();
    }
    None
}

impl Checkout {
    /// Reads the checkout at `root`; `None` when it is not a git checkout with a commit.
    pub fn inspect(root: &Path) -> Option<Checkout> {
        let sha = git(root, &["rev-parse", "--verify", "-q", "HEAD"])?;
        let branch = git(root, &["symbolic-ref", "-q", "--short", "HEAD"]);
        let tag = git(root, &["tag", "--points-at", "HEAD"])
            .and_then(|t| t.lines().next().map(str::to_string));
        let remotes = git(root, &["remote", "-v"])
            .map(|out| {
                let mut urls: Vec<String> = out
                    .lines()
                    .filter(|l| l.ends_with("(fetch)"))
                    .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
                    .collect();
                urls.dedup();
                urls
            })
            .unwrap_or_default();
        let field = |format: &str| git(root, &["log", "-1", &format!("--format={format}")]);
        Some(Checkout {
            sha,
            branch,
            tag,
            remotes,
            message: field("%B").unwrap_or_default(),
            committer_name: field("%an").unwrap_or_default(),
            committer_email: field("%ae").unwrap_or_default(),
        })
    }

    /// The ref RWX reports for this checkout: the branch, else a tag, else the sha.
    pub fn git_ref(&self) -> String {
        match (&self.branch, &self.tag) {
            (Some(b), _) => format!("refs/heads/{b}"),
            (None, Some(t)) => format!("refs/tags/{t}"),
            (None, None) => self.sha.clone(),
        }
    }

    /// Whether `url` names one of this checkout's remotes (ignoring the scheme, user, a trailing
    /// `.git` or `/`, and the `host:path` vs `host/path` spelling).
    pub fn has_remote(&self, url: &str) -> bool {
        let want = normalize_remote(url);
        self.remotes.iter().any(|r| normalize_remote(r) == want)
    }
}

/// One spelling per repository (shared with the check of a `git/clone` when the file is read).
pub(crate) use strata_pipeline::calls::normalize_remote;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_spellings_compare_equal() {
        let a = normalize_remote("https://github.com/Owner/Repo.git");
        assert_eq!(a, "github.com/owner/repo");
        assert_eq!(normalize_remote("git@github.com:owner/repo"), a);
        assert_eq!(normalize_remote("ssh://git@github.com/owner/repo/"), a);
        assert_ne!(normalize_remote("https://github.com/owner/other"), a);
        assert_eq!(
            normalize_remote("http://localhost:3000/o/r.git"),
            "localhost:3000/o/r"
        );
    }

    #[test]
    fn inspects_a_real_checkout() {
        let d = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(d.path())
                .args(args)
                .output()
                .expect("git must be installed for this test")
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q", "-b", "trunk"]);
        run(&["remote", "add", "origin", "https://example.com/o/r.git"]);
        std::fs::write(d.path().join("f"), "x").unwrap();
        run(&["add", "f"]);
        run(&[
            "-c",
            "user.name=Ann",
            "-c",
            "user.email=ann@example.com",
            "commit",
            "-q",
            "-m",
            "first line\n\nbody",
        ]);
        let c = Checkout::inspect(d.path()).expect("a checkout with a commit");
        assert_eq!(c.sha.len(), 40);
        assert_eq!(c.branch.as_deref(), Some("trunk"));
        assert_eq!(c.git_ref(), "refs/heads/trunk");
        assert_eq!(c.committer_name, "Ann");
        assert!(c.message.starts_with("first line"));
        assert!(c.has_remote("git@example.com:o/r"));
        assert_eq!(
            git_toplevel(&d.path().join("f")),
            Some(d.path().to_path_buf())
        );
        let plain = tempfile::tempdir().unwrap();
        assert_eq!(Checkout::inspect(plain.path()), None);
    }
}
