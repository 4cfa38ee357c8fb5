use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::diagnostic::Location;
use crate::model::Text;

/// A task's `filter`: which workspace files it sees. Patterns are globs relative to the
/// workspace root; a leading `!` excludes; for each file the last matching pattern decides, and a
/// file no pattern matches is left out. A pattern that matches a directory matches everything in
/// it, so `src` means `src/**`. An entry written `{path: P, cache-key: excluded}` makes the files
/// it decides visible without entering the task's key.
///
/// An entry may hold `${{ … }}` expressions: such a filter is *templated* and must be
/// [resolved](Filter::resolve) before it selects anything.
#[derive(Debug, Clone)]
pub struct Filter {
    patterns: Vec<Pattern>,
    /// The entries with expressions, as written (for checking and resolving).
    templates: Vec<Text>,
}

#[derive(Debug, Clone)]
struct Pattern {
    include: bool,
    /// Whether the files this pattern decides enter the key.
    keyed: bool,
    text: String,
    /// `None` for an entry with expressions, until resolved.
    matcher: Option<GlobMatcher>,
}

/// One entry of a `filter` list: a pattern and whether what it selects is keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterEntry {
    pub pattern: String,
    pub keyed: bool,
    /// Where it is written (for its expressions).
    pub at: Location,
}

/// Whether a file is visible through a filter, and whether it enters the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Hidden,
    Keyed,
    /// Visible, but left out of the key (`cache-key: excluded`).
    Unkeyed,
}

impl Filter {
    /// Builds a filter whose every entry is keyed; the error names the pattern that is not a
    /// valid glob.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Filter, (usize, String)> {
        let entries: Vec<FilterEntry> = patterns
            .iter()
            .map(|p| FilterEntry {
                pattern: p.as_ref().to_string(),
                keyed: true,
                at: Location::default(),
            })
            .collect();
        Filter::with_entries(&entries)
    }

    /// Builds a filter from its entries; the error names the entry that is not a valid glob.
    pub fn with_entries(entries: &[FilterEntry]) -> Result<Filter, (usize, String)> {
        let mut out = Vec::new();
        let mut templates = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let p = entry.pattern.as_str();
            if p.contains("${{") {
                templates.push(Text::new(p, entry.at));
                out.push(Pattern {
                    include: !p.starts_with('!'),
                    keyed: entry.keyed,
                    text: p.to_string(),
                    matcher: None,
                });
                continue;
            }
            let (include, glob) = match p.strip_prefix('!') {
                Some(rest) => (false, rest),
                None => (true, p),
            };
            let glob = glob.trim_start_matches("./").trim_end_matches('/');
            if glob.is_empty() || glob.starts_with('/') {
                return Err((
                    i,
                    format!("invalid filter pattern `{p}`: must be a non-empty relative path"),
                ));
            }
            let matcher = GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map(|g: Glob| g.compile_matcher())
                .map_err(|e| (i, format!("invalid filter pattern `{p}`: {}", e.kind())))?;
            out.push(Pattern {
                include,
                keyed: entry.keyed,
                text: p.to_string(),
                matcher: Some(matcher),
            });
        }
        Ok(Filter {
            patterns: out,
            templates,
        })
    }

    /// The entries with `${{ … }}` expressions, as written.
    pub fn templates(&self) -> &[Text] {
        &self.templates
    }

    /// Whether some entry has expressions still to resolve.
    pub fn is_templated(&self) -> bool {
        !self.templates.is_empty()
    }

    /// The filter with every entry's expressions replaced by `render(entry)`.
    pub fn resolve(
        &self,
        mut render: impl FnMut(&Text) -> Result<String, String>,
    ) -> Result<Filter, String> {
        if !self.is_templated() {
            return Ok(self.clone());
        }
        let mut templates = self.templates.iter();
        let mut entries = Vec::with_capacity(self.patterns.len());
        for p in &self.patterns {
            let pattern = match p.matcher {
                Some(_) => p.text.clone(),
                None => {
                    let text = templates.next().expect("one template per templated entry");
                    render(text).map_err(|e| format!("`filter` entry `{}`: {e}", text.raw))?
                }
            };
            entries.push(FilterEntry {
                pattern,
                keyed: p.keyed,
                at: Location::default(),
            });
        }
        Filter::with_entries(&entries).map_err(|(_, e)| e)
    }

    /// The patterns as written, for the cache key and for display.
    pub fn patterns(&self) -> Vec<&str> {
        self.patterns.iter().map(|p| p.text.as_str()).collect()
    }

    /// Each entry as written and whether it is keyed: what the filter is, for naming what is
    /// derived from it.
    pub fn entries(&self) -> Vec<(&str, bool)> {
        self.patterns
            .iter()
            .map(|p| (p.text.as_str(), p.keyed))
            .collect()
    }

    /// Whether some path under the directory `path` might be visible, even if `path` itself is
    /// not: a conservative answer from the literal directory each including pattern starts
    /// with (`src/**/*.c` may select under `src/gen`; `docs` never selects under `src`).
    pub fn may_select_under(&self, path: &str) -> bool {
        if path.is_empty() {
            return self.patterns.iter().any(|p| p.include);
        }
        let below = format!("{path}/");
        self.patterns.iter().filter(|p| p.include).any(|p| {
            let glob = p.text.trim_start_matches("./").trim_end_matches('/');
            let literal = match glob.find(['*', '?', '[', '{', '\\']) {
                // Up to the last `/` before the first wildcard.
                Some(i) => glob[..i].rfind('/').map_or("", |j| &glob[..j]),
                None => glob,
            };
            literal.is_empty()
                || format!("{literal}/").starts_with(&below)
                || below.starts_with(&format!("{literal}/"))
        })
    }

    /// Whether some entry is `cache-key: excluded`.
    pub fn has_unkeyed(&self) -> bool {
        self.patterns.iter().any(|p| p.include && !p.keyed)
    }

    /// Whether the workspace file at `path` (relative, `/`-separated) is visible.
    pub fn matches(&self, path: &str) -> bool {
        self.visibility(path) != Visibility::Hidden
    }

    /// Whether the file at `path` is visible and keyed: the last matching entry decides both.
    pub fn visibility(&self, path: &str) -> Visibility {
        let mut verdict = Visibility::Hidden;
        for p in &self.patterns {
            let Some(matcher) = &p.matcher else {
                continue;
            };
            if Self::matches_path_or_ancestor(matcher, path) {
                verdict = match (p.include, p.keyed) {
                    (false, _) => Visibility::Hidden,
                    (true, true) => Visibility::Keyed,
                    (true, false) => Visibility::Unkeyed,
                };
            }
        }
        verdict
    }

    fn matches_path_or_ancestor(matcher: &GlobMatcher, path: &str) -> bool {
        if matcher.is_match(path) {
            return true;
        }
        path.match_indices('/')
            .any(|(i, _)| matcher.is_match(&path[..i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_match_wins() {
        let f = Filter::new(&["src/**", "!src/gen/**", "src/gen/keep.c"]).unwrap();
        assert!(f.matches("src/main.c"));
        assert!(!f.matches("src/gen/x.c"));
        assert!(f.matches("src/gen/keep.c"));
        assert!(!f.matches("README.md"));
    }

    #[test]
    fn directory_pattern_covers_contents() {
        let f = Filter::new(&["src", "*.json"]).unwrap();
        assert!(f.matches("src/a/b.c"));
        assert!(f.matches("package.json"));
        assert!(!f.matches("sub/package.json"), "* must not cross /");
    }

    #[test]
    fn excluded_entries_are_visible_but_unkeyed() {
        let entry = |p: &str, keyed| FilterEntry {
            pattern: p.into(),
            keyed,
            at: Location::default(),
        };
        let f = Filter::with_entries(&[
            entry("src", true),
            entry("src/generated", false),
            entry("!src/generated/skip.c", true),
            entry("VERSION", false),
        ])
        .unwrap();
        assert_eq!(f.visibility("src/a.c"), Visibility::Keyed);
        assert_eq!(f.visibility("src/generated/x.c"), Visibility::Unkeyed);
        assert_eq!(f.visibility("src/generated/skip.c"), Visibility::Hidden);
        assert_eq!(f.visibility("VERSION"), Visibility::Unkeyed);
        assert_eq!(f.visibility("README"), Visibility::Hidden);
        assert!(f.has_unkeyed());
        assert!(!Filter::new(&["a"]).unwrap().has_unkeyed());
    }

    #[test]
    fn what_may_be_selected_under_a_directory() {
        let f = Filter::new(&["src/**/*.c", "docs", "!docs/private", "Makefile"]).unwrap();
        assert!(f.may_select_under("src/gen"));
        assert!(f.may_select_under("src"));
        assert!(f.may_select_under(""));
        assert!(f.may_select_under("docs/private"), "conservative");
        assert!(!f.may_select_under("node_modules"));
        assert!(!f.may_select_under("srcx"));
        assert!(!f.may_select_under("Makefile.d"));
        assert!(
            Filter::new(&["*.json"])
                .unwrap()
                .may_select_under("anything")
        );
        assert!(!Filter::new(&["!x"]).unwrap().may_select_under("x"));
    }

    #[test]
    fn entries_with_expressions_are_resolved_later() {
        let f = Filter::new(&["${{ init.dir }}/**", "!**/*.tmp"]).unwrap();
        assert!(f.is_templated());
        assert_eq!(f.templates()[0].raw, "${{ init.dir }}/**");
        let r = f
            .resolve(|t| Ok(t.raw.replace("${{ init.dir }}", "app")))
            .unwrap();
        assert!(!r.is_templated());
        assert!(r.matches("app/x.rs") && !r.matches("app/x.tmp") && !r.matches("lib/x.rs"));
        let err = f.resolve(|_| Err("no such value".into())).unwrap_err();
        assert!(err.contains("no such value"), "{err}");
    }

    #[test]
    fn invalid_glob_names_pattern() {
        let (i, msg) = Filter::new(&["ok", "src/[a"]).unwrap_err();
        assert_eq!(i, 1);
        assert!(msg.contains("src/[a"), "{msg}");
    }
}
