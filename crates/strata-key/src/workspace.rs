//! The workspace as captured when a run starts: every file the pipeline may see (honouring
//! `.gitignore`, never `.git`), with its mode and content digest.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_pipeline::Filter;

use crate::digest::{ContentDigest, WorkspaceDigest};
use crate::stat_cache::{Stamp, StatCache};
use crate::tree::hash_file;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File { digest: ContentDigest, size: u64 },
    Symlink { target: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceFile {
    /// Relative to the workspace root, `/`-separated.
    pub path: String,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub kind: FileKind,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("failed to read workspace {root}")]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
    #[error("failed to read workspace file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("workspace path {path} is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    /// Sorted by path.
    pub files: Vec<WorkspaceFile>,
}

impl Workspace {
    /// Walks and hashes the workspace. `exclude` lists absolute paths to leave out (the cache
    /// directory when it lives inside the workspace).
    pub fn capture(root: &Path, exclude: &[PathBuf]) -> Result<Workspace, WorkspaceError> {
        Self::capture_with(root, exclude, &StatCache::default()).map(|(ws, _)| ws)
    }

    /// The same, reading only files that `known` cannot vouch for; returns the stat cache to keep
    /// for the next capture.
    pub fn capture_with(
        root: &Path,
        exclude: &[PathBuf],
        known: &StatCache,
    ) -> Result<(Workspace, StatCache), WorkspaceError> {
        let mut fresh = StatCache::starting_now();
        let root = root.to_path_buf();
        let exclude = exclude.to_vec();
        let walker = ignore::WalkBuilder::new(&root)
            .hidden(false)
            .git_ignore(true)
            .git_exclude(true)
            .git_global(false)
            .require_git(false)
            .parents(false)
            .filter_entry(move |e| {
                e.file_name() != ".git" && !exclude.iter().any(|x| e.path() == x)
            })
            .build();
        let mut found = Vec::new();
        for entry in walker {
            let entry = entry.map_err(|source| WorkspaceError::Walk {
                root: root.clone(),
                source,
            })?;
            let Some(ft) = entry.file_type() else {
                continue;
            };
            if ft.is_dir() || !(ft.is_file() || ft.is_symlink()) {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&root)
                .expect("walk stays under its root");
            let rel = rel
                .to_str()
                .ok_or_else(|| WorkspaceError::NotUtf8 {
                    path: entry.path().to_path_buf(),
                })?
                .to_string();
            found.push((rel, ft.is_symlink()));
        }
        found.sort();
        let hashed = hash_in_parallel(&root, &found, known)?;
        let mut files = Vec::with_capacity(hashed.len());
        for (file, stamp) in hashed {
            if let (Some(stamp), FileKind::File { digest, .. }) = (stamp, &file.kind) {
                fresh.insert(file.path.clone(), stamp, *digest);
            }
            files.push(file);
        }
        Ok((Workspace { root, files }, fresh))
    }

    /// The files a task with this filter sees.
    pub fn select<'a>(
        &'a self,
        filter: Option<&'a Filter>,
    ) -> impl Iterator<Item = &'a WorkspaceFile> {
        self.files
            .iter()
            .filter(move |f| filter.is_none_or(|flt| flt.matches(&f.path)))
    }

    /// Digest of a selection of files: paths, modes and contents, in path order.
    pub fn digest<'a>(files: impl Iterator<Item = &'a WorkspaceFile>) -> WorkspaceDigest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"strata-workspace-v1\0");
        for f in files {
            hasher.update(f.path.as_bytes());
            hasher.update(format!("\0{:o}\0", f.mode).as_bytes());
            match &f.kind {
                FileKind::File { digest, .. } => hasher.update(format!("f {digest}\0").as_bytes()),
                FileKind::Symlink { target } => hasher.update(format!("l {target}\0").as_bytes()),
            };
        }
        WorkspaceDigest::from_hash(hasher.finalize())
    }
}

/// One file, and the stamp its digest can be remembered under (regular files only).
fn hash_one(
    root: &Path,
    rel: &str,
    is_symlink: bool,
    known: &StatCache,
) -> Result<(WorkspaceFile, Option<Stamp>), WorkspaceError> {
    let path = root.join(rel);
    let read_err = |source| WorkspaceError::Read {
        path: path.clone(),
        source,
    };
    let meta = std::fs::symlink_metadata(&path).map_err(read_err)?;
    let mut stamp = None;
    let kind = if is_symlink {
        let target = std::fs::read_link(&path).map_err(read_err)?;
        FileKind::Symlink {
            target: target.to_string_lossy().into_owned(),
        }
    } else {
        let now = Stamp::of(&meta);
        let digest = match known.lookup(rel, &now) {
            Some(d) => d,
            None => hash_file(&path).map_err(|e| WorkspaceError::Read {
                path: e.path,
                source: e.source,
            })?,
        };
        stamp = Some(now);
        FileKind::File {
            digest,
            size: meta.len(),
        }
    };
    Ok((
        WorkspaceFile {
            path: rel.to_string(),
            mode: meta.mode() & 0o7777,
            kind,
        },
        stamp,
    ))
}

fn hash_in_parallel(
    root: &Path,
    found: &[(String, bool)],
    known: &StatCache,
) -> Result<Vec<(WorkspaceFile, Option<Stamp>)>, WorkspaceError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = found.len().div_ceil(threads).max(64);
    std::thread::scope(|s| {
        let handles: Vec<_> = found
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(rel, link)| hash_one(root, rel, *link, known))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut files = Vec::with_capacity(found.len());
        for h in handles {
            files.extend(h.join().expect("hashing thread panicked")?);
        }
        Ok(files)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn honours_gitignore_and_skips_git() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(root.join(".gitignore"), "target/\n*.log\n").unwrap();
        std::fs::create_dir(root.join("target")).unwrap();
        std::fs::write(root.join("target/out"), "x").unwrap();
        std::fs::write(root.join("build.log"), "x").unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("src/main.c"), "int main;").unwrap();
        let ws = Workspace::capture(root, &[]).unwrap();
        let paths: Vec<&str> = ws.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec![".gitignore", "src/main.c"]);
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "one").unwrap();
        std::fs::write(d.path().join("b"), "two").unwrap();
        let (_, cache) = Workspace::capture_with(d.path(), &[], &StatCache::default()).unwrap();
        assert_eq!(cache.len(), 2);
        // A cache that vouches for `a` with a made-up digest: a capture that trusts it reports
        // the made-up digest, which proves it did not read `a`.
        let made_up = ContentDigest::from_hash(blake3::hash(b"made up"));
        let cache = cache.settled_with("a", made_up);
        let digest_of = |ws: &Workspace, i: usize| match &ws.files[i].kind {
            FileKind::File { digest, .. } => *digest,
            FileKind::Symlink { .. } => unreachable!(),
        };
        let (ws, _) = Workspace::capture_with(d.path(), &[], &cache).unwrap();
        assert_eq!(digest_of(&ws, 0), made_up);
        // Any change to the file (content, size, mode: ctime moves) makes it read again.
        std::fs::write(d.path().join("a"), "one!").unwrap();
        let (ws, _) = Workspace::capture_with(d.path(), &[], &cache).unwrap();
        assert_eq!(
            digest_of(&ws, 0),
            ContentDigest::from_hash(blake3::hash(b"one!"))
        );
        std::fs::set_permissions(d.path().join("b"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let cache = Workspace::capture_with(d.path(), &[], &StatCache::default())
            .unwrap()
            .1
            .settled_with("b", made_up);
        std::fs::set_permissions(d.path().join("b"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let (ws, _) = Workspace::capture_with(d.path(), &[], &cache).unwrap();
        assert_eq!(
            digest_of(&ws, 1),
            ContentDigest::from_hash(blake3::hash(b"two"))
        );
    }

    #[test]
    fn filter_narrows_and_changes_digest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "a").unwrap();
        std::fs::write(d.path().join("b.txt"), "b").unwrap();
        let ws = Workspace::capture(d.path(), &[]).unwrap();
        let only_a = Filter::new(&["a.txt"]).unwrap();
        assert_eq!(ws.select(Some(&only_a)).count(), 1);
        let before = Workspace::digest(ws.select(Some(&only_a)));
        std::fs::write(d.path().join("b.txt"), "changed").unwrap();
        let ws2 = Workspace::capture(d.path(), &[]).unwrap();
        assert_eq!(before, Workspace::digest(ws2.select(Some(&only_a))));
        assert_ne!(
            Workspace::digest(ws.select(None)),
            Workspace::digest(ws2.select(None))
        );
    }
}
