//! Ids of clean tracked files, taken from git's index instead of read from disk: what makes the
//! key of a fresh clone cost about what `git status` costs.
//!
//! An entry's id stands for the file only when git would call the file clean without reading
//! it, and its bytes are exactly what git hashed:
//! - the stat data git recorded (ctime, mtime, device, inode, mode, owner, size; each as git
//!   stores it, truncated to 32 bits) all equal the file's. All of them, always: stricter than
//!   git under `core.trustctime=false` or `core.checkStat=minimal`, which only costs a read;
//! - the entry is stage 0 and neither `assume-unchanged`, `skip-worktree` nor intent-to-add;
//! - it is not *racily clean*: a file modified no earlier than the index was written could
//!   have changed within the same timestamp after git looked, so it is read;
//! - no conversion between the blob and the file can apply: `core.autocrlf` unset or false,
//!   and no attribute among `text`, `eol`, `crlf`, `filter`, `ident`,
//!   `working-tree-encoding` set by an attributes file. A `.gitattributes` that sets one makes
//!   every file under its directory read; one in `.git/info/attributes`, `core.attributesFile`
//!   (or its default) or `/etc/gitattributes`, a macro (`[attr]`) that sets one, or
//!   `attr.tree`, makes every file read. This is coarser than git's pattern matching, never
//!   wrong in the other direction.
//!
//! Anything unexpected (no `git` to read the config, a SHA-256 repository, a split or sparse
//! index, an index this reader does not understand) means no index: every file is read, as
//! outside git.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::file_id::FileId;
use crate::git_index::GitIndex;
use crate::workspace::Seen;

/// Attributes that can make a file's bytes differ from its blob.
const CONVERSIONS: [&str; 6] = [
    "text",
    "eol",
    "crlf",
    "filter",
    "ident",
    "working-tree-encoding",
];

#[derive(Debug)]
pub(crate) struct GitCheckout {
    index: GitIndex,
    /// When the index was written: files modified since (or at the same instant) are racy.
    index_mtime: (i64, u32),
    /// Directories (relative, `/`-terminated; `""` is the root) whose `.gitattributes` sets a
    /// conversion, sorted: their files are read.
    converted: Vec<String>,
}

impl GitCheckout {
    /// The checkout whose work tree is `root` (`root/.git` is its git directory, or a file
    /// naming it), or `None` when its index cannot be trusted for ids.
    pub(crate) fn open(root: &Path) -> Option<GitCheckout> {
        let git_dir = git_dir(root)?;
        let config = Config::read(root)?;
        if config.object_format_other_than_sha1 || config.autocrlf || config.attr_tree {
            return None;
        }
        let common = std::fs::read_to_string(git_dir.join("commondir"))
            .ok()
            .map(|c| git_dir.join(c.trim_end()));
        let mut global_sources = vec![
            git_dir.join("info/attributes"),
            PathBuf::from("/etc/gitattributes"),
        ];
        global_sources.extend(common.map(|c| c.join("info/attributes")));
        global_sources.extend(config.attributes_file);
        for source in global_sources {
            if let Some(text) = read_attributes(&source)?
                && scan_attributes(&text) != Scan::Plain
            {
                return None;
            }
        }

        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        // git replaces its index by renaming a new one over it: the mtime and the bytes read
        // from one open file belong together.
        let mut file = std::fs::File::open(git_dir.join("index")).ok()?;
        let meta = file.metadata().ok()?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes).ok()?;
        let index = GitIndex::parse(&bytes, true).ok()?;
        let index_mtime = (meta.mtime(), meta.mtime_nsec() as u32);

        // Every directory holding a tracked file, with its ancestors, may hold a
        // `.gitattributes` (tracked or not, ignored or not: git reads it from the work tree).
        let mut dirs = BTreeSet::new();
        dirs.insert(String::new());
        for path in index.paths() {
            let mut p = path;
            while let Some((up, _)) = p.rsplit_once('/') {
                if !dirs.insert(format!("{up}/")) {
                    break;
                }
                p = up;
            }
        }
        let mut converted = Vec::new();
        for dir in dirs {
            let Some(text) = read_attributes(&root.join(&dir).join(".gitattributes"))? else {
                continue;
            };
            match scan_attributes(&text) {
                Scan::Plain => {}
                Scan::Converts => converted.push(dir),
                // A macro applies wherever it is used: nothing can be trusted.
                Scan::DefinesConvertingMacro => return None,
            }
        }
        Some(GitCheckout {
            index,
            index_mtime,
            converted,
        })
    }

    /// The id of `rel` from the index, when git vouches that the file `st` describes has
    /// exactly that content.
    pub(crate) fn clean_id(&self, rel: &str, st: &Seen, cursor: &mut usize) -> Option<FileId> {
        if !self.converted.is_empty() {
            // `converted` is sorted: look each of the file's directories up.
            let under = |dir: &str| self.converted.binary_search_by(|c| c.as_str().cmp(dir));
            let mut ancestors = rel.match_indices('/').map(|(i, _)| &rel[..=i]);
            if under("").is_ok() || ancestors.any(|dir| under(dir).is_ok()) {
                return None;
            }
        }
        let e = self.index.entry_near(rel, cursor)?;
        if e.unverified {
            return None;
        }
        let is_file = st.mode & 0o170000 == 0o100000;
        let mode = if st.mode & 0o100 != 0 {
            0o100755
        } else {
            0o100644
        };
        let s = &e.stat;
        let same = is_file
            && s.mode == mode
            && s.mtime == (st.mtime.0 as u32, st.mtime.1)
            && s.ctime == (st.ctime.0 as u32, st.ctime.1)
            && s.dev == st.dev as u32
            && s.ino == st.ino as u32
            && s.uid == st.uid
            && s.gid == st.gid
            && s.size == st.size as u32;
        let racy = st.mtime >= self.index_mtime;
        (same && !racy).then_some(e.id)
    }
}

/// An attributes file's text: `Some(None)` when there is none, `None` when it exists but cannot
/// be read (then nothing can be trusted). Not necessarily UTF-8: git does not require it.
fn read_attributes(path: &Path) -> Option<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Some(None)
        }
        Err(_) => None,
    }
}

/// How many entries the index of the checkout at `root` has, from its header alone (no parse,
/// no check: a hint for whether to read it at all).
pub(crate) fn index_entries(root: &Path) -> Option<u32> {
    use std::io::Read;
    let mut header = [0u8; 12];
    std::fs::File::open(git_dir(root)?.join("index"))
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    (&header[..4] == b"DIRC")
        .then(|| u32::from_be_bytes(header[8..12].try_into().expect("4 bytes")))
}

/// The git directory of a work tree rooted at `root`: `root/.git`, or where a `.git` file
/// (`gitdir: PATH`, a linked worktree or a submodule) points.
fn git_dir(root: &Path) -> Option<PathBuf> {
    let dot_git = root.join(".git");
    let meta = std::fs::symlink_metadata(&dot_git).ok()?;
    if meta.is_dir() {
        return Some(dot_git);
    }
    let text = std::fs::read_to_string(&dot_git).ok()?;
    let target = text.strip_prefix("gitdir:")?.trim();
    Some(root.join(target))
}

/// The settings that decide whether index ids can be used, as git itself resolves them
/// (system, global, repository and worktree files, includes): read by running `git config`.
#[derive(Debug, Default)]
struct Config {
    autocrlf: bool,
    object_format_other_than_sha1: bool,
    attr_tree: bool,
    attributes_file: Option<PathBuf>,
}

impl Config {
    fn read(root: &Path) -> Option<Config> {
        let mut cmd = Command::new("git");
        // strata runs as root over a checkout the CI's user cloned. Unless run through sudo,
        // git then skips the repository as another user's (`safe.directory`) and answers from
        // the global config alone, as if `core.autocrlf` were unset in it: ids would be taken
        // for converted files. Reading these values runs nothing the repository's config
        // names, so the repository is allowed here.
        cmd.arg("-C")
            .arg(root)
            .args(["-c", "safe.directory=*"])
            .args([
                "config",
                "-z",
                "--includes",
                "--get-regexp",
                r"^(core\.autocrlf|core\.attributesfile|extensions\.objectformat|attr\.tree)$",
            ]);
        // The checkout at `root`, whatever the environment points git at.
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_COMMON_DIR",
            "GIT_CEILING_DIRECTORIES",
        ] {
            cmd.env_remove(var);
        }
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        // 1: none of these is set. Anything else (no repository, a repository git will not
        // read as this user) means git's view is unknown.
        match out.status.code() {
            Some(0) | Some(1) => {}
            _ => return None,
        }
        let mut config = Config::default();
        let mut attributes_file = None;
        for item in out.stdout.split(|&b| b == 0).filter(|i| !i.is_empty()) {
            let item = String::from_utf8_lossy(item);
            // `name\nvalue`, or `name` alone for a bare boolean (true).
            let (name, value) = item.split_once('\n').unwrap_or((&item, "true"));
            match name {
                "core.autocrlf" => {
                    config.autocrlf = !matches!(
                        value.to_ascii_lowercase().as_str(),
                        "false" | "no" | "off" | "0"
                    )
                }
                "extensions.objectformat" => {
                    config.object_format_other_than_sha1 = !value.eq_ignore_ascii_case("sha1")
                }
                "attr.tree" => config.attr_tree = true,
                "core.attributesfile" => attributes_file = Some(value.to_string()),
                _ => {}
            }
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        config.attributes_file = match attributes_file {
            Some(f) => match f.strip_prefix("~/") {
                Some(rest) => home.map(|h| h.join(rest)),
                None => Some(root.join(f)),
            },
            None => std::env::var_os("XDG_CONFIG_HOME")
                .filter(|x| !x.is_empty())
                .map(|x| PathBuf::from(x).join("git/attributes"))
                .or_else(|| home.map(|h| h.join(".config/git/attributes"))),
        };
        Some(config)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Scan {
    Plain,
    /// Some line sets a conversion attribute.
    Converts,
    /// A macro definition (`[attr]name ...`) sets one: it may be used anywhere.
    DefinesConvertingMacro,
}

/// Whether an attributes file can set a conversion. Every token of every line is looked at,
/// pattern included: a pattern that happens to read `text` makes it answer yes, which only
/// costs reads.
fn scan_attributes(text: &str) -> Scan {
    let mut scan = Scan::Plain;
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sets_conversion = line.split_ascii_whitespace().any(|token| {
            let token = token.trim_start_matches('"');
            if token.starts_with('-') || token.starts_with('!') {
                return false;
            }
            let name = token.split_once('=').map_or(token, |(n, _)| n);
            let name = name.trim_start_matches("[attr]");
            CONVERSIONS.contains(&name)
        });
        if sets_conversion {
            if line.starts_with("[attr]") {
                return Scan::DefinesConvertingMacro;
            }
            scan = Scan::Converts;
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_attributes_for_conversions() {
        assert_eq!(
            scan_attributes("# text eol\n*.png binary\n*.c -text diff\n"),
            Scan::Plain
        );
        assert_eq!(scan_attributes("*.c !eol\n"), Scan::Plain);
        assert_eq!(
            scan_attributes("*.bin filter=lfs diff=lfs -text\n"),
            Scan::Converts
        );
        assert_eq!(scan_attributes("*.txt text eol=crlf\n"), Scan::Converts);
        assert_eq!(scan_attributes("* text=auto\n"), Scan::Converts);
        assert_eq!(scan_attributes("*.c ident\n"), Scan::Converts);
        assert_eq!(
            scan_attributes("*.txt working-tree-encoding=UTF-16\n"),
            Scan::Converts
        );
        assert_eq!(scan_attributes("*.c crlf\n"), Scan::Converts);
        assert_eq!(
            scan_attributes("[attr]lfs filter=lfs -text\n*.bin lfs\n"),
            Scan::DefinesConvertingMacro
        );
        assert_eq!(scan_attributes("[attr]nodiff -diff\n"), Scan::Plain);
    }
}
