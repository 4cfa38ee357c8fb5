//! Calls of packages and of other run definitions (RWX's `call:`): where packages come from
//! (`sources.rs`), what a package file declares (`declare.rs`), and how a call becomes tasks of
//! the calling pipeline, named `caller.inner` (`expand.rs`).
//!
//! A call is resolved when the file is read: its tasks join the pipeline like any other, each
//! with the [`CallScope`] its expressions are evaluated in, and the calling task stands for
//! them ([`CallOutputs`]).

mod base;
mod declare;
mod expand;
mod sources;
mod splice;

use std::path::PathBuf;
use std::sync::Arc;

use crate::diagnostic::Location;
use crate::model::{TaskName, Text};

pub use base::BASE_CONFIG_TASK;
pub(crate) use base::{apply_base, use_base_config};
pub(crate) use declare::{PACKAGE_KEYS, declare};
pub use expand::run_dir;
pub(crate) use expand::{PACKAGE_USE, check_outputs, expand, strip_package_use};
pub use sources::{PackageSources, content_digest};

/// One `with:` or `init:` entry of a call, as written in the caller's file.
#[derive(Debug, Clone)]
pub struct CallArg {
    pub name: String,
    /// Evaluated in the caller's scope.
    pub value: Text,
    /// Where the name is.
    pub at: Location,
}

/// A `call:` as written, before it is resolved.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// `NAME VERSION`, a digest, or a run definition's path.
    pub target: Text,
    /// Where `call:` is.
    pub at: Location,
    /// `with:` (a package's parameters) and where it is.
    pub with: Vec<CallArg>,
    pub with_at: Option<Location>,
    /// `init:` (an embedded run's init values).
    pub init: Vec<CallArg>,
    pub init_at: Option<Location>,
    /// `inherit-init: true`: the caller's init values, under `init:`.
    pub inherit_init: bool,
    /// `target:`: the tasks of an embedded run to run (with what they need); empty: all.
    pub targets: Vec<(String, Location)>,
}

/// What a call called.
#[derive(Debug, Clone)]
pub enum Called {
    /// A package from a package source.
    Package(Arc<PackageFiles>),
    /// Another run definition (an embedded run, or a local package: `package: true`).
    Run { path: PathBuf, local_package: bool },
}

/// A package found in a package source: its files and their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFiles {
    pub name: String,
    pub version: String,
    /// The directory holding `rwx-package.yml`.
    pub dir: PathBuf,
    /// The files of the package, relative to `dir`, in the order they were hashed.
    pub files: Vec<PathBuf>,
    /// BLAKE3 over every file's path, mode and content (hex): enters its tasks' keys.
    pub digest: String,
}

/// The scope the expressions of a called task are evaluated in: the call's `with` as
/// `params`, its `init` as `init`, each argument evaluated in the caller's own scope
/// (`parent`, or the run's when `None`).
#[derive(Debug, Clone)]
pub struct CallScope {
    /// The calling task's full name (`setup`, or `ci.setup` inside another call); its tasks are
    /// named `caller.inner`.
    pub caller: TaskName,
    pub called: Called,
    /// `params.*`: `with:`, with the package's defaults for what it does not give.
    pub params: Vec<CallArg>,
    /// `init.*` of an embedded run.
    pub init: Vec<CallArg>,
    pub inherit_init: bool,
    pub parent: Option<Arc<CallScope>>,
}

impl CallScope {
    /// The prefix of the called tasks' names (`caller.`).
    pub fn prefix(&self) -> String {
        format!("{}.", self.caller)
    }

    /// The package whose files the task sees at `$RWX_PACKAGE_PATH`, if it is a package's.
    pub fn package(&self) -> Option<&PackageFiles> {
        match &self.called {
            Called::Package(p) => Some(p),
            Called::Run { .. } => None,
        }
    }
}

/// What a calling task stands for once its call is resolved: `use: [caller]` gives the
/// layers and env of the called tasks nothing else in the call uses (its `use`), and the values
/// of the tasks a package names in `outputs.values-from`.
#[derive(Debug, Clone)]
pub struct CallOutputs {
    pub call: Arc<CallScope>,
    pub values_from: Vec<TaskName>,
}

/// What a package file declares at its top level (`name`, `version`, `parameters`,
/// `outputs`), or a local package's `package:` block.
#[derive(Debug, Clone, Default)]
pub struct PackageDecl {
    pub name: Option<String>,
    pub version: Option<String>,
    pub parameters: Vec<Parameter>,
    /// `outputs.values-from`: tasks whose values the package hands on.
    pub values_from: Vec<(TaskName, Location)>,
}

/// One of a package's `parameters`.
#[derive(Debug, Clone)]
pub struct Parameter {
    pub name: String,
    pub required: bool,
    pub default: Option<Text>,
    pub at: Location,
}

/// `https://github.com/a/b.git`, `git@github.com:a/b` and `ssh://git@github.com/a/b/` all become
/// `github.com/a/b`.
pub fn normalize_remote(url: &str) -> String {
    let mut u = url.trim();
    if let Some((_, rest)) = u.split_once("://") {
        u = rest;
    }
    if let Some((user, rest)) = u.split_once('@')
        && !user.contains('/')
    {
        u = rest;
    }
    let u = u.trim_end_matches('/');
    let u = u.strip_suffix(".git").unwrap_or(u);
    // `host:path` (scp-like) is `host/path`; a `host:port/` stays as it is.
    let u = match u.split_once(':') {
        Some((host, path)) if !path.starts_with(|c: char| c.is_ascii_digit()) => {
            format!("{host}/{path}")
        }
        _ => u.to_string(),
    };
    u.to_ascii_lowercase()
}

/// Where packages come from, and what the config file says about bases, for reading a file
/// that calls packages.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub packages: PackageSources,
    /// `base-images` of the config file: RWX's `os` + `tag` (`"ubuntu 24.04"`, or
    /// `"ubuntu 24.04 1.1"`) -> an image reference.
    pub base_images: Vec<(String, String)>,
    /// The remotes of the workspace's git checkout, when known: a `git/clone` of another
    /// repository is then a real call of the `git/clone` package, if a source holds it.
    pub workspace_remotes: Option<Vec<String>>,
}
