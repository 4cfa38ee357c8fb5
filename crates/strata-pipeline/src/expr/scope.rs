//! What names refer to when a template is evaluated.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::value::Value;

/// The namespaces an expression can read (`init`, `run`, `event`, `github`, `tasks`, `secrets`,
/// `vaults`, `params`, `parallel`, or task keys in `after:` conditions), which paths in them are
/// secret, and the instant `date()` formats.
///
/// A value is secret when its path lies inside a secret path (`secrets.TOKEN`) or contains one
/// (`secrets`, whose rendering would show every secret), so a whole namespace or a single leaf
/// can be marked.
#[derive(Debug, Clone)]
pub struct Scope {
    root: BTreeMap<String, Value>,
    secret_paths: Vec<Vec<String>>,
    now: SystemTime,
}

impl Default for Scope {
    fn default() -> Self {
        Scope::new()
    }
}

impl Scope {
    /// An empty scope whose `date()` is the time of this call; use [`Scope::set_now`] to give
    /// every task of a run the same instant.
    pub fn new() -> Self {
        Scope {
            root: BTreeMap::new(),
            secret_paths: Vec::new(),
            now: SystemTime::now(),
        }
    }

    /// Puts `value` at `path` (`["tasks", "build", "values", "sha"]`), creating the objects on
    /// the way and replacing whatever was there, a non-object on the way included. An empty
    /// path changes nothing.
    pub fn insert(&mut self, path: &[&str], value: Value) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut map = &mut self.root;
        for name in parents {
            let slot = map
                .entry(name.to_string())
                .or_insert_with(|| Value::Object(BTreeMap::new()));
            if !matches!(slot, Value::Object(_)) {
                *slot = Value::Object(BTreeMap::new());
            }
            let Value::Object(inner) = slot else {
                return;
            };
            map = inner;
        }
        map.insert(last.to_string(), value);
    }

    /// [`Scope::insert`], and marks the path secret.
    pub fn insert_secret(&mut self, path: &[&str], value: Value) {
        self.insert(path, value);
        self.mark_secret(path);
    }

    /// Marks everything at and under `path` secret, whether or not it exists yet.
    pub fn mark_secret(&mut self, path: &[&str]) {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        if !self.secret_paths.contains(&path) {
            self.secret_paths.push(path);
        }
    }

    pub fn set_now(&mut self, now: SystemTime) {
        self.now = now;
    }

    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// The value at `path`, if there is one.
    pub fn get(&self, path: &[&str]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.root.get(*first)?;
        for name in rest {
            match value {
                Value::Object(map) => value = map.get(*name)?,
                _ => return None,
            }
        }
        Some(value)
    }

    pub(crate) fn root(&self, name: &str) -> Option<&Value> {
        self.root.get(name)
    }

    pub(crate) fn root_names(&self) -> impl Iterator<Item = &str> {
        self.root.keys().map(String::as_str)
    }

    /// Whether the value at `path` is, lies inside, or contains a secret.
    pub(crate) fn is_secret_at(&self, path: &[String]) -> bool {
        self.secret_paths
            .iter()
            .any(|s| s.starts_with(path) || path.starts_with(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn insert_creates_the_objects_on_the_way() {
        let mut scope = Scope::new();
        scope.insert(&["tasks", "build", "values", "sha"], "abc".into());
        scope.insert(&["tasks", "build", "values", "tag"], "v1".into());
        assert_eq!(
            scope.get(&["tasks", "build", "values", "sha"]),
            Some(&Value::from("abc"))
        );
        assert_eq!(
            scope.get(&["tasks", "build", "values", "tag"]),
            Some(&Value::from("v1"))
        );
        assert_eq!(scope.get(&["tasks", "test"]), None);
        assert_eq!(scope.get(&[]), None);
    }

    #[test]
    fn insert_through_a_leaf_replaces_it() {
        let mut scope = Scope::new();
        scope.insert(&["init"], "flat".into());
        scope.insert(&["init", "branch"], "main".into());
        assert_eq!(scope.get(&["init", "branch"]), Some(&Value::from("main")));
        scope.insert(&[], "ignored".into());
        assert_eq!(scope.root_names().collect::<Vec<_>>(), vec!["init"]);
    }

    #[test]
    fn a_path_is_secret_inside_or_above_a_secret() {
        let mut scope = Scope::new();
        scope.insert_secret(&["vaults", "v", "secrets", "TOKEN"], "t".into());
        scope.insert(&["vaults", "v", "name"], "v".into());
        assert!(scope.is_secret_at(&path(&["vaults", "v", "secrets", "TOKEN"])));
        assert!(scope.is_secret_at(&path(&["vaults", "v", "secrets", "TOKEN", "x"])));
        assert!(scope.is_secret_at(&path(&["vaults"])));
        assert!(scope.is_secret_at(&path(&["vaults", "v"])));
        assert!(!scope.is_secret_at(&path(&["vaults", "v", "name"])));
        assert!(!scope.is_secret_at(&path(&["init"])));
    }

    #[test]
    fn marking_a_namespace_covers_what_is_added_later() {
        let mut scope = Scope::new();
        scope.mark_secret(&["secrets"]);
        scope.mark_secret(&["secrets"]);
        scope.insert(&["secrets", "A"], "a".into());
        assert!(scope.is_secret_at(&path(&["secrets", "A"])));
        assert_eq!(scope.secret_paths.len(), 1);
    }

    #[test]
    fn the_clock_can_be_fixed() {
        let mut scope = Scope::new();
        let t = SystemTime::UNIX_EPOCH;
        scope.set_now(t);
        assert_eq!(scope.now(), t);
    }
}
