use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a pipeline file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// The file cannot be used.
    #[default]
    Error,
    /// Worth knowing; nothing is wrong (a key that has no effect in strata).
    Note,
    /// The file runs, but perhaps not as its author meant (a called file's `base` not used).
    Warning,
}

/// Longest source line shown whole under a message; longer ones are cut around the column.
const MAX_SHOWN_LINE: usize = 120;

/// One problem in a pipeline file, with where it is and, when we can guess, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub level: Level,
    pub location: Location,
    /// How many characters the caret underline covers (at least 1).
    pub width: usize,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(location: Location, width: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            level: Level::Error,
            location,
            width: width.max(1),
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn note(location: Location, width: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            level: Level::Note,
            ..Diagnostic::new(location, width, message)
        }
    }

    pub(crate) fn warning(location: Location, width: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            level: Level::Warning,
            ..Diagnostic::new(location, width, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one pipeline file, in source order, with the text needed to show them.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Diagnostics {
    pub file: PathBuf,
    pub source_text: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &Path, source_text: &str, mut items: Vec<Diagnostic>) -> Self {
        items.sort_by_key(|d| d.location);
        items.dedup();
        Diagnostics {
            file: file.to_path_buf(),
            source_text: source_text.to_string(),
            items,
        }
    }
}

impl Diagnostics {
    /// How many of the items are errors.
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.level == Level::Error)
            .count()
    }
}

/// `text` cut to at most [`MAX_SHOWN_LINE`] characters around `column` (1-based), and the
/// column within what is shown.
fn shown_line(text: &str, column: usize) -> (String, usize) {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= MAX_SHOWN_LINE {
        return (text.to_string(), column);
    }
    let col = column.saturating_sub(1).min(chars.len());
    let start = col.saturating_sub(MAX_SHOWN_LINE / 2);
    let end = (start + MAX_SHOWN_LINE).min(chars.len());
    let start = end.saturating_sub(MAX_SHOWN_LINE);
    let mut shown: String = chars[start..end].iter().collect();
    let mut column = col - start + 1;
    if start > 0 {
        shown.insert_str(0, "...");
        column += 3;
    }
    if end < chars.len() {
        shown.push_str("...");
    }
    (shown, column)
}

impl fmt::Display for Diagnostics {
    /// Renders rustc-style: message, `--> file:line:col`, the source line and a caret underline,
    /// and a count of the errors at the end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<&str> = self.source_text.lines().collect();
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let Location { line, column } = d.location;
            let level = match d.level {
                Level::Error => "error",
                Level::Note => "note",
                Level::Warning => "warning",
            };
            writeln!(f, "{level}: {}", d.message)?;
            let gutter = line.to_string().len();
            writeln!(
                f,
                "{:gutter$}--> {}:{}:{}",
                "",
                self.file.display(),
                line,
                column
            )?;
            if let Some(text) = line.checked_sub(1).and_then(|l| lines.get(l)) {
                let (text, column) = shown_line(text, column);
                writeln!(f, "{:gutter$} |", "")?;
                writeln!(f, "{line} | {text}")?;
                let pad = column.saturating_sub(1);
                let width = d.width.min(MAX_SHOWN_LINE);
                writeln!(f, "{:gutter$} | {:pad$}{}", "", "", "^".repeat(width))?;
            }
            if let Some(help) = &d.help {
                writeln!(f, "{:gutter$} = help: {help}", "")?;
            }
        }
        let errors = self.error_count();
        if errors > 0 && !self.file.as_os_str().is_empty() {
            writeln!(
                f,
                "\n{errors} error{} in {}",
                if errors == 1 { "" } else { "s" },
                self.file.display()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_around_the_column() {
        let line = format!("run: {}", "x".repeat(300));
        let (shown, col) = shown_line(&line, 200);
        assert!(
            shown.starts_with("...") && shown.ends_with("..."),
            "{shown}"
        );
        assert!(shown.chars().count() <= MAX_SHOWN_LINE + 6);
        assert_eq!(shown.chars().nth(col - 1), Some('x'));
        let (shown, col) = shown_line("short", 3);
        assert_eq!((shown.as_str(), col), ("short", 3));
    }

    #[test]
    fn errors_end_with_a_count() {
        let d = Diagnostics::new(
            Path::new("ci.yml"),
            "a: 1\nb: 2\n",
            vec![
                Diagnostic::new(Location { line: 1, column: 1 }, 1, "one"),
                Diagnostic::new(Location { line: 2, column: 1 }, 1, "two"),
                Diagnostic::note(Location { line: 2, column: 1 }, 1, "fyi"),
            ],
        );
        let text = d.to_string();
        assert!(text.ends_with("2 errors in ci.yml\n"), "{text}");
        assert!(text.contains("note: fyi"), "{text}");
    }
}
