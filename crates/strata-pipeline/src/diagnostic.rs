use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a pipeline file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem in a pipeline file, with where it is and, when we can guess, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    /// How many characters the caret underline covers (at least 1).
    pub width: usize,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub(crate) fn new(location: Location, width: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            location,
            width: width.max(1),
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
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
    pub(crate) fn new(file: &Path, source_text: &str, mut items: Vec<Diagnostic>) -> Self {
        items.sort_by_key(|d| d.location);
        items.dedup();
        Diagnostics {
            file: file.to_path_buf(),
            source_text: source_text.to_string(),
            items,
        }
    }
}

impl fmt::Display for Diagnostics {
    /// Renders rustc-style: message, `--> file:line:col`, the source line and a caret underline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<&str> = self.source_text.lines().collect();
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let Location { line, column } = d.location;
            writeln!(f, "error: {}", d.message)?;
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
                writeln!(f, "{:gutter$} |", "")?;
                writeln!(f, "{line} | {text}")?;
                let pad = column.saturating_sub(1);
                writeln!(f, "{:gutter$} | {:pad$}{}", "", "", "^".repeat(d.width))?;
            }
            if let Some(help) = &d.help {
                writeln!(f, "{:gutter$} = help: {help}", "")?;
            }
        }
        Ok(())
    }
}
