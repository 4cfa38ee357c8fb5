use globset::{Glob, GlobBuilder, GlobMatcher};

/// A task's `filter`: which workspace files it sees. Patterns are globs relative to the
/// workspace root; a leading `!` excludes; for each file the last matching pattern decides, and a
/// file no pattern matches is left out. A pattern that matches a directory matches everything in
/// it, so `src` means `src/**`.
#[derive(Debug, Clone)]
pub struct Filter {
    patterns: Vec<(bool, String, GlobMatcher)>,
}

impl Filter {
    /// Builds a filter; the error names the pattern that is not a valid glob.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Filter, (usize, String)> {
        let mut out = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let p = p.as_ref();
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
            out.push((include, p.to_string(), matcher));
        }
        Ok(Filter { patterns: out })
    }

    /// The patterns as written, for the cache key and for display.
    pub fn patterns(&self) -> Vec<&str> {
        self.patterns.iter().map(|(_, p, _)| p.as_str()).collect()
    }

    /// Whether the workspace file at `path` (relative, `/`-separated) is visible.
    pub fn matches(&self, path: &str) -> bool {
        let mut verdict = false;
        for (include, _, matcher) in &self.patterns {
            if Self::matches_path_or_ancestor(matcher, path) {
                verdict = *include;
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
    fn invalid_glob_names_pattern() {
        let (i, msg) = Filter::new(&["ok", "src/[a"]).unwrap_err();
        assert_eq!(i, 1);
        assert!(msg.contains("src/[a"), "{msg}");
    }
}
