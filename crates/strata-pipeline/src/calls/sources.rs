//! Package sources: directories holding `NAME/rwx-package.yml` (RWX's packages repository
//! layout, one version per package) or `NAME/VERSION/rwx-package.yml` (several versions side by
//! side); Mint's older leaves, `NAME/mint-leaf.yml` (rwx-research/mint-leaves' `leaves/`), are
//! read the same way. A git repository is cloned into such a directory before the file is read.

use std::path::{Path, PathBuf};

use super::PackageFiles;

/// The file that makes a directory a package.
pub const PACKAGE_FILE: &str = "rwx-package.yml";
/// Mint's name for it (a *leaf*), whose tasks read `$MINT_LEAF_PATH`.
pub const MINT_LEAF_FILE: &str = "mint-leaf.yml";

/// The package file of `dir`, if it is a package: `rwx-package.yml`, else `mint-leaf.yml`.
pub fn package_file_in(dir: &Path) -> Option<PathBuf> {
    [PACKAGE_FILE, MINT_LEAF_FILE]
        .iter()
        .map(|f| dir.join(f))
        .find(|f| f.is_file())
}

/// The directories searched for packages, in order: the first that holds a version wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageSources {
    pub dirs: Vec<PathBuf>,
}

/// A version of a package that a source holds.
#[derive(Debug, Clone)]
struct Candidate {
    version: String,
    dir: PathBuf,
}

/// The outcome of looking a package up.
#[derive(Debug)]
pub(crate) enum Lookup {
    Found {
        files: PackageFiles,
        /// The version asked for, when another of the same major version was taken.
        instead_of: Option<String>,
    },
    /// No source holds the package at all.
    Missing,
    /// Sources hold the package, but no version of the same major: what they hold.
    NoVersion(Vec<String>),
}

impl PackageSources {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        PackageSources { dirs }
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    fn candidates(&self, name: &str) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = Vec::new();
        for source in &self.dirs {
            let dir = source.join(name);
            let mut here = Vec::new();
            if let Some(v) = package_file_in(&dir).and_then(|f| declared_version(&f)) {
                here.push(Candidate {
                    version: v,
                    dir: dir.clone(),
                });
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let sub = e.path();
                    if let Some(v) = package_file_in(&sub).and_then(|f| declared_version(&f)) {
                        here.push(Candidate {
                            version: v,
                            dir: sub,
                        });
                    }
                }
            }
            for c in here {
                if !out.iter().any(|o| o.version == c.version) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// Whether some source holds a version of `name`.
    pub fn holds(&self, name: &str) -> bool {
        !self.candidates(name).is_empty()
    }

    /// `name` at `version`: that version, else the highest of the same major version, else
    /// what the sources hold.
    pub(crate) fn find(&self, name: &str, version: &str) -> Result<Lookup, String> {
        let candidates = self.candidates(name);
        if candidates.is_empty() {
            return Ok(Lookup::Missing);
        }
        let wanted = parse_version(version);
        let chosen = candidates
            .iter()
            .find(|c| c.version == version)
            .map(|c| (c, None))
            .or_else(|| {
                let major = wanted?.0;
                candidates
                    .iter()
                    .filter_map(|c| Some((parse_version(&c.version)?, c)))
                    .filter(|(v, _)| v.0 == major)
                    .max_by_key(|(v, _)| *v)
                    .map(|(_, c)| (c, Some(version.to_string())))
            });
        match chosen {
            Some((c, instead_of)) => Ok(Lookup::Found {
                files: package_files(name, &c.version, &c.dir)?,
                instead_of,
            }),
            None => {
                let mut found: Vec<String> = candidates.into_iter().map(|c| c.version).collect();
                found.sort_by_key(|v| parse_version(v));
                Ok(Lookup::NoVersion(found))
            }
        }
    }

    /// The package whose content digest is `digest` (RWX's pinning by digest, with strata's
    /// digest of the package's files).
    pub(crate) fn find_digest(&self, digest: &str) -> Result<Option<PackageFiles>, String> {
        for source in &self.dirs {
            for dir in package_dirs(source) {
                let Some(file) = package_file_in(&dir) else {
                    continue;
                };
                let Some(version) = declared_version(&file) else {
                    continue;
                };
                let name = declared_name(&file).unwrap_or_default();
                let files = package_files(&name, &version, &dir)?;
                if files.digest == digest {
                    return Ok(Some(files));
                }
            }
        }
        Ok(None)
    }
}

/// Every directory under `source` (two or three levels down) that holds a package file.
fn package_dirs(source: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !p.ends_with(".git"))
            .collect();
        v.sort();
        v
    };
    for ns in subdirs(source) {
        for pkg in subdirs(&ns) {
            if package_file_in(&pkg).is_some() {
                out.push(pkg.clone());
            }
            for version in subdirs(&pkg) {
                if package_file_in(&version).is_some() {
                    out.push(version);
                }
            }
        }
    }
    out
}

/// A top-level scalar of a package file (`version`, `name`), or the same key of its `package:`
/// block.
fn declared(file: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let root = crate::yaml::parse(&text).ok()?;
    let crate::yaml::Value::Map(entries) = &root.value else {
        return None;
    };
    let scalar = |entries: &[(crate::yaml::Node, crate::yaml::Node)], k: &str| {
        entries
            .iter()
            .find_map(|(name, v)| match (&name.value, &v.value) {
                (
                    crate::yaml::Value::Scalar { text: n, .. },
                    crate::yaml::Value::Scalar { text, .. },
                ) if n == k => Some(text.clone()),
                _ => None,
            })
    };
    scalar(entries, key).or_else(|| {
        entries
            .iter()
            .find_map(|(name, v)| match (&name.value, &v.value) {
                (crate::yaml::Value::Scalar { text: n, .. }, crate::yaml::Value::Map(inner))
                    if n == "package" =>
                {
                    scalar(inner, key)
                }
                _ => None,
            })
    })
}

fn declared_version(file: &Path) -> Option<String> {
    declared(file, "version")
}

fn declared_name(file: &Path) -> Option<String> {
    declared(file, "name")
}

/// `MAJOR.MINOR.PATCH` as numbers (missing parts are 0).
pub(crate) fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    parts.next().is_none().then_some((major, minor, patch))
}

fn package_files(name: &str, version: &str, dir: &Path) -> Result<PackageFiles, String> {
    let (files, digest) = content_digest(dir)?;
    Ok(PackageFiles {
        name: name.to_string(),
        version: version.to_string(),
        dir: dir.to_path_buf(),
        files,
        digest,
        mint_leaf: package_file_in(dir).is_some_and(|f| f.ends_with(MINT_LEAF_FILE)),
    })
}

/// The files of a package directory (`.git` and nested versions left out), sorted, and a BLAKE3
/// digest over each one's path, kind, executable bit and content (a symlink's target).
pub fn content_digest(dir: &Path) -> Result<(Vec<PathBuf>, String), String> {
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)
        .map_err(|e| format!("cannot read package directory {}: {e}", dir.display()))?;
    files.sort();
    let mut h = blake3::Hasher::new();
    h.update(b"strata-package/1\0");
    for rel in &files {
        let path = dir.join(rel);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update(b"\0");
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            h.update(b"l");
            h.update(target.to_string_lossy().as_bytes());
        } else {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            h.update(if exec { b"x" } else { b"f" });
            let content =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            h.update(&(content.len() as u64).to_le_bytes());
            h.update(&content);
        }
        h.update(b"\0");
    }
    Ok((files, h.finalize().to_hex().to_string()))
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let rel = rel.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            // Another version of the package beside this one is not part of it.
            if package_file_in(&root.join(&rel)).is_some() {
                continue;
            }
            walk(root, &rel, out)?;
        } else if kind.is_file() || kind.is_symlink() {
            out.push(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(root: &Path, rel: &str, version: &str) {
        let dir = root.join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(PACKAGE_FILE),
            format!("name: acme/tool\nversion: {version}\ntasks:\n  - key: a\n    run: 'true'\n"),
        )
        .unwrap();
    }

    #[test]
    fn exact_version_else_same_major_else_what_was_found() {
        let root = tempfile::tempdir().unwrap();
        package(root.path(), "acme/tool", "1.2.0");
        package(root.path(), "acme/tool/1.0.3", "1.0.3");
        package(root.path(), "acme/tool/2.0.0", "2.0.0");
        let sources = PackageSources::new(vec![root.path().to_path_buf()]);
        match sources.find("acme/tool", "1.0.3").unwrap() {
            Lookup::Found { files, instead_of } => {
                assert_eq!(files.version, "1.0.3");
                assert_eq!(instead_of, None);
            }
            other => panic!("{other:?}"),
        }
        match sources.find("acme/tool", "1.9.0").unwrap() {
            Lookup::Found { files, instead_of } => {
                assert_eq!(files.version, "1.2.0");
                assert_eq!(instead_of.as_deref(), Some("1.9.0"));
                // The version beside it is not one of its files.
                assert_eq!(files.files, vec![PathBuf::from(PACKAGE_FILE)]);
            }
            other => panic!("{other:?}"),
        }
        match sources.find("acme/tool", "3.0.0").unwrap() {
            Lookup::NoVersion(found) => assert_eq!(found, ["1.0.3", "1.2.0", "2.0.0"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            sources.find("acme/other", "1.0.0").unwrap(),
            Lookup::Missing
        ));
    }

    #[test]
    fn digest_follows_content_and_finds_the_package() {
        let root = tempfile::tempdir().unwrap();
        package(root.path(), "acme/tool", "1.0.0");
        let dir = root.path().join("acme/tool");
        let (_, d1) = content_digest(&dir).unwrap();
        std::fs::write(dir.join("helper.sh"), "echo hi\n").unwrap();
        let (files, d2) = content_digest(&dir).unwrap();
        assert_ne!(d1, d2);
        assert_eq!(files.len(), 2);
        let sources = PackageSources::new(vec![root.path().to_path_buf()]);
        let found = sources.find_digest(&d2).unwrap().unwrap();
        assert_eq!(found.name, "acme/tool");
        assert!(sources.find_digest(&d1).unwrap().is_none());
    }
}
