//! The identity of the base filesystem, part of every key, and the inventory of a host base
//! that lets `explain` say what changed in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{BaseId, WorkspaceDigest};
use crate::stat_cache::StatCache;
use crate::tree::{TreeError, tree_digest};
use crate::workspace::{FileKind, Selection, Workspace, WorkspaceError, WorkspaceFile};

/// Files whose content says what a host is: the OS release and the package databases, so that
/// installing or upgrading a package changes the identity.
const HOST_IDENTITY_FILES: &[&str] = &[
    "etc/os-release",
    "usr/lib/os-release",
    "var/lib/dpkg/status",
    "var/lib/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "lib/apk/db/installed",
];

/// A host path named by `base: {host: {key-paths: [...]}}`, as found when the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPath {
    pub path: PathBuf,
    /// The digest of the files under it (paths, modes, contents); `None` when it does not exist.
    pub digest: Option<WorkspaceDigest>,
}

impl KeyPath {
    /// Hashes every file under `path` (or `path` itself), reading only what `known` cannot vouch
    /// for; also returns the stat cache to keep when it changed. `exclude` lists absolute paths
    /// to leave out (the cache directory). Ignore files are not honoured, and `.git` directories
    /// are left out.
    pub fn capture(
        path: &Path,
        exclude: &[PathBuf],
        known: &StatCache,
    ) -> Result<(KeyPath, Option<StatCache>), WorkspaceError> {
        let found = |digest| KeyPath {
            path: path.to_path_buf(),
            digest,
        };
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((found(None), None)),
            Err(source) => Err(WorkspaceError::Read {
                path: path.to_path_buf(),
                source,
            }),
            Ok(meta) if meta.is_dir() => {
                let selection = Selection {
                    no_ignore: true,
                    ..Selection::default()
                };
                let (tree, stats) = Workspace::capture_selected(path, exclude, known, &selection)?;
                Ok((found(Some(Workspace::digest(tree.files.iter()))), stats))
            }
            Ok(meta) => {
                // One file: keyed by its mode and content (or a symlink's target).
                let kind = if meta.is_symlink() {
                    let target =
                        std::fs::read_link(path).map_err(|source| WorkspaceError::Read {
                            path: path.to_path_buf(),
                            source,
                        })?;
                    FileKind::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    }
                } else {
                    FileKind::File {
                        digest: crate::file_id::file_id(path)?,
                        size: meta.len(),
                    }
                };
                let file = WorkspaceFile {
                    path: "".into(),
                    mode: std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
                    kind,
                };
                Ok((found(Some(Workspace::digest(std::iter::once(&file)))), None))
            }
        }
    }
}

/// A host base (`/`): the architecture, the OS release and the package databases, and the
/// content of the key paths the pipeline names.
pub fn host_identity(key_paths: &[KeyPath]) -> Result<BaseId, TreeError> {
    identity_of_root(Path::new("/"), key_paths)
}

/// A `rootfs` base: the content digest of the directory tree.
pub fn rootfs_identity(dir: &Path) -> Result<BaseId, TreeError> {
    Ok(BaseId::from_hash(blake3::hash(
        format!("rootfs\0{}", tree_digest(dir)?).as_bytes(),
    )))
}

/// An image base: its manifest digest (`sha256:...`), which names its layers and config exactly.
/// A tag that moves to another image changes the identity.
pub fn image_identity(manifest_digest: &str) -> BaseId {
    BaseId::from_hash(blake3::hash(format!("image\0{manifest_digest}").as_bytes()))
}

fn identity_of_root(root: &Path, key_paths: &[KeyPath]) -> Result<BaseId, TreeError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"host\0");
    hasher.update(std::env::consts::ARCH.as_bytes());
    hasher.update(b"\0");
    for rel in HOST_IDENTITY_FILES {
        let path = root.join(rel);
        match std::fs::read(&path) {
            Ok(content) => {
                hasher.update(rel.as_bytes());
                hasher.update(b"\0");
                hasher.update(blake3::hash(&content).as_bytes());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TreeError { path, source }),
        }
    }
    // Without key paths the identity is what it always was.
    for k in key_paths {
        hasher.update(b"key-path\0");
        hasher.update(k.path.as_os_str().as_encoded_bytes());
        hasher.update(b"\0");
        match &k.digest {
            Some(d) => hasher.update(d.to_hex().as_bytes()),
            None => hasher.update(b"absent"),
        };
        hasher.update(b"\0");
    }
    Ok(BaseId::from_hash(hasher.finalize()))
}

/// What a host base is made of, recorded once per base identity so that `explain` can name the
/// packages that changed rather than say "the base changed".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInventory {
    pub arch: String,
    /// `PRETTY_NAME` of os-release (or its `ID` and `VERSION_ID`).
    pub os: String,
    /// Installed packages by name (`name:arch` when dpkg has several architectures of it), with
    /// their versions, from dpkg's or apk's database.
    pub packages: BTreeMap<String, String>,
    /// The key paths and their digests (`None`: absent).
    pub key_paths: BTreeMap<String, Option<String>>,
}

impl HostInventory {
    /// Reads the inventory of the root at `root`.
    pub fn read(root: &Path, key_paths: &[KeyPath]) -> HostInventory {
        let read = |rel: &str| std::fs::read_to_string(root.join(rel)).ok();
        let os = read("etc/os-release")
            .or_else(|| read("usr/lib/os-release"))
            .map(|t| os_name(&t))
            .unwrap_or_default();
        let mut packages = BTreeMap::new();
        if let Some(status) = read("var/lib/dpkg/status") {
            packages.extend(dpkg_packages(&status));
        }
        if let Some(installed) = read("lib/apk/db/installed") {
            packages.extend(apk_packages(&installed));
        }
        HostInventory {
            arch: std::env::consts::ARCH.to_string(),
            os,
            packages,
            key_paths: key_paths
                .iter()
                .map(|k| {
                    (
                        k.path.display().to_string(),
                        k.digest.map(|d| d.to_hex().to_string()),
                    )
                })
                .collect(),
        }
    }

    /// What differs from `old` to `self`, packages by name.
    pub fn changes_since(&self, old: &HostInventory) -> Vec<BaseChange> {
        let mut out = Vec::new();
        if old.arch != self.arch {
            out.push(BaseChange::Arch {
                old: old.arch.clone(),
                new: self.arch.clone(),
            });
        }
        if old.os != self.os {
            out.push(BaseChange::Os {
                old: old.os.clone(),
                new: self.os.clone(),
            });
        }
        for (name, version) in &self.packages {
            match old.packages.get(name) {
                None => out.push(BaseChange::PackageAdded {
                    name: name.clone(),
                    version: version.clone(),
                }),
                Some(v) if v != version => out.push(BaseChange::PackageChanged {
                    name: name.clone(),
                    old: v.clone(),
                    new: version.clone(),
                }),
                Some(_) => {}
            }
        }
        for (name, version) in &old.packages {
            if !self.packages.contains_key(name) {
                out.push(BaseChange::PackageRemoved {
                    name: name.clone(),
                    version: version.clone(),
                });
            }
        }
        for (path, digest) in &self.key_paths {
            match old.key_paths.get(path) {
                None => out.push(BaseChange::KeyPathNamed { path: path.clone() }),
                Some(d) if d != digest => out.push(BaseChange::KeyPathChanged {
                    path: path.clone(),
                    exists: digest.is_some(),
                }),
                Some(_) => {}
            }
        }
        for path in old.key_paths.keys() {
            if !self.key_paths.contains_key(path) {
                out.push(BaseChange::KeyPathDropped { path: path.clone() });
            }
        }
        out
    }
}

/// One way a host base changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseChange {
    Arch {
        old: String,
        new: String,
    },
    Os {
        old: String,
        new: String,
    },
    PackageAdded {
        name: String,
        version: String,
    },
    PackageRemoved {
        name: String,
        version: String,
    },
    PackageChanged {
        name: String,
        old: String,
        new: String,
    },
    KeyPathNamed {
        path: String,
    },
    KeyPathDropped {
        path: String,
    },
    KeyPathChanged {
        path: String,
        exists: bool,
    },
    /// The package database changed in a way the versions do not show (a package's state or
    /// files), or the earlier base is not recorded on this machine.
    Unexplained(String),
}

impl std::fmt::Display for BaseChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseChange::Arch { old, new } => write!(f, "architecture {old} -> {new}"),
            BaseChange::Os { old, new } => write!(f, "OS {old:?} -> {new:?}"),
            BaseChange::PackageAdded { name, version } => {
                write!(f, "package {name}: installed ({version})")
            }
            BaseChange::PackageRemoved { name, version } => {
                write!(f, "package {name}: removed (was {version})")
            }
            BaseChange::PackageChanged { name, old, new } => {
                write!(f, "package {name}: {old} -> {new}")
            }
            BaseChange::KeyPathNamed { path } => write!(f, "key path {path}: newly named"),
            BaseChange::KeyPathDropped { path } => write!(f, "key path {path}: no longer named"),
            BaseChange::KeyPathChanged { path, exists: true } => {
                write!(f, "key path {path}: content changed")
            }
            BaseChange::KeyPathChanged {
                path,
                exists: false,
            } => write!(f, "key path {path}: now absent"),
            BaseChange::Unexplained(why) => f.write_str(why),
        }
    }
}

fn os_name(os_release: &str) -> String {
    let field = |name: &str| {
        os_release.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
    };
    field("PRETTY_NAME").unwrap_or_else(|| {
        format!(
            "{} {}",
            field("ID").unwrap_or_default(),
            field("VERSION_ID").unwrap_or_default()
        )
        .trim()
        .to_string()
    })
}

/// Installed packages of a dpkg status file: stanzas separated by blank lines, whose `Status`
/// ends in `installed`.
fn dpkg_packages(status: &str) -> Vec<(String, String)> {
    let mut stanzas: Vec<(String, String, String, bool)> = Vec::new();
    for stanza in status.split("\n\n") {
        let (mut name, mut version, mut arch, mut installed) = ("", "", "", false);
        for line in stanza.lines() {
            if let Some((k, v)) = line.split_once(": ") {
                match k {
                    "Package" => name = v.trim(),
                    "Version" => version = v.trim(),
                    "Architecture" => arch = v.trim(),
                    "Status" => installed = v.trim().ends_with(" installed"),
                    _ => {}
                }
            }
        }
        if installed && !name.is_empty() {
            stanzas.push((name.into(), version.into(), arch.into(), false));
        }
    }
    // A package installed for several architectures is named with its architecture.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &stanzas {
        *counts.entry(s.0.as_str()).or_default() += 1;
    }
    let several: Vec<String> = counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name.to_string())
        .collect();
    for s in &mut stanzas {
        s.3 = several.contains(&s.0);
    }
    stanzas
        .into_iter()
        .map(|(name, version, arch, qualify)| {
            let name = if qualify {
                format!("{name}:{arch}")
            } else {
                name
            };
            (name, version)
        })
        .collect()
}

/// Installed packages of apk's database: stanzas of `X:value` lines, `P` the name, `V` the
/// version.
fn apk_packages(installed: &str) -> Vec<(String, String)> {
    installed
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |k: &str| stanza.lines().find_map(|l| l.strip_prefix(k));
            Some((field("P:")?.to_string(), field("V:")?.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n\nPackage: jq\nStatus: deinstall ok config-files\nVersion: 1.6-2\n\nPackage: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.2.13\n\nPackage: zlib1g\nStatus: install ok installed\nArchitecture: i386\nVersion: 1:1.2.13\n";

    #[test]
    fn dpkg_lists_installed_packages_only() {
        let p: BTreeMap<_, _> = dpkg_packages(STATUS).into_iter().collect();
        assert_eq!(p.get("libc6").map(String::as_str), Some("2.36-9"));
        assert!(!p.contains_key("jq"), "config-files only is not installed");
        assert!(p.contains_key("zlib1g:amd64") && p.contains_key("zlib1g:i386"));
    }

    #[test]
    fn apk_database() {
        let db = "C:Q1abc\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox\nV:1.36.1-r5\n";
        let p = apk_packages(db);
        assert_eq!(
            p,
            vec![
                ("musl".into(), "1.2.4-r2".into()),
                ("busybox".into(), "1.36.1-r5".into())
            ]
        );
    }

    #[test]
    fn changes_name_packages_and_paths() {
        let old = HostInventory {
            arch: "x86_64".into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            packages: [("libc6", "2.36-9"), ("curl", "7.88")]
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect(),
            key_paths: [("/opt/tool".to_string(), Some("aa".to_string()))].into(),
        };
        let mut new = old.clone();
        new.packages.insert("libc6".into(), "2.36-10".into());
        new.packages.remove("curl");
        new.packages.insert("jq".into(), "1.6".into());
        new.key_paths.insert("/opt/tool".into(), Some("bb".into()));
        let shown: Vec<String> = new
            .changes_since(&old)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            shown,
            vec![
                "package jq: installed (1.6)",
                "package libc6: 2.36-9 -> 2.36-10",
                "package curl: removed (was 7.88)",
                "key path /opt/tool: content changed",
            ]
        );
    }

    #[test]
    fn key_paths_join_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::create_dir(&tool).unwrap();
        std::fs::write(tool.join("bin"), "v1").unwrap();
        let take = || {
            KeyPath::capture(&tool, &[], &StatCache::default())
                .unwrap()
                .0
        };
        let id = |k: &[KeyPath]| identity_of_root(dir.path(), k).unwrap();
        let first = take();
        assert_ne!(id(&[]), id(std::slice::from_ref(&first)));
        std::fs::write(tool.join("bin"), "v2").unwrap();
        let second = take();
        assert_ne!(first.digest, second.digest);
        assert_ne!(id(&[first]), id(&[second]));
        let absent = KeyPath::capture(&dir.path().join("nope"), &[], &StatCache::default())
            .unwrap()
            .0;
        assert_eq!(absent.digest, None);
        // Ignore files do not hide a host path's files.
        std::fs::write(tool.join(".gitignore"), "bin\n").unwrap();
        let with_ignore = take();
        std::fs::write(tool.join("bin"), "v3").unwrap();
        assert_ne!(with_ignore.digest, take().digest);
    }

    #[test]
    fn inventory_of_a_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("var/lib/dpkg/status"), STATUS).unwrap();
        std::fs::write(
            root.path().join("etc/os-release"),
            "PRETTY_NAME=\"Test OS 1\"\n",
        )
        .unwrap();
        let inv = HostInventory::read(root.path(), &[]);
        assert_eq!(inv.os, "Test OS 1");
        assert_eq!(inv.packages.len(), 3);
        assert_eq!(inv.arch, std::env::consts::ARCH);
        // The identity follows the package database.
        let before = identity_of_root(root.path(), &[]).unwrap();
        std::fs::write(
            root.path().join("var/lib/dpkg/status"),
            STATUS.replace("2.36-9", "2.36-10"),
        )
        .unwrap();
        assert_ne!(before, identity_of_root(root.path(), &[]).unwrap());
    }

    #[test]
    fn os_names() {
        assert_eq!(
            os_name("ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_name("ID=alpine\nVERSION_ID=3.19.1\n"), "alpine 3.19.1");
    }
}
