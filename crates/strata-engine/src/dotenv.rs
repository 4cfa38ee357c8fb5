//! Mint's older way to export env: `echo "NAME=value" >> "$MINT_ENV"`, `$MINT_ENV` being a file of
//! dotenv lines. strata's `$MINT_ENV` (like `$RWX_ENV`) is a directory with one file per variable,
//! which is what current files write (`echo value > "$MINT_ENV/NAME"`). A task whose command
//! writes the variable as a file (`>> $MINT_ENV`, `tee -a $MINT_ENV`) and never uses it as
//! `$MINT_ENV/…` gets a file instead, read here when it succeeds.

/// The variables that name the env directory and may be used as a dotenv file instead.
pub(crate) const DOTENV_NAMES: &[&str] = &["MINT_ENV", "RWX_ENV"];

/// The file (in the outputs directory) such a task writes to.
pub(crate) const DOTENV_FILE: &str = "dotenv";

/// Which of [`DOTENV_NAMES`] `command` writes as a file: some use of `$NAME` or `${NAME}` is
/// the target of a redirection (`>> $MINT_ENV`, `> "${MINT_ENV}"`) or of `tee` (`tee -a
/// $MINT_ENV`), and no use is followed by `/` (`$MINT_ENV/NAME`, `"$MINT_ENV"/NAME`: the
/// directory). Other mentions (a comment, an `echo`) decide nothing: a script the command runs
/// may still write the directory.
pub(crate) fn used_as_file(command: &str) -> Vec<&'static str> {
    DOTENV_NAMES
        .iter()
        .copied()
        .filter(|name| {
            let mut written = false;
            let mut as_dir = false;
            for form in [format!("${name}"), format!("${{{name}}}")] {
                for (i, _) in command.match_indices(&form) {
                    let rest = &command[i + form.len()..];
                    // `$MINT_ENV_X` is another variable.
                    if form.ends_with(name)
                        && rest
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        continue;
                    }
                    if rest.trim_start_matches(['"', '\'']).starts_with('/') {
                        as_dir = true;
                    }
                    let before = command[..i].trim_end_matches(['"', '\'']).trim_end();
                    if before.ends_with('>')
                        || before.ends_with("tee")
                        || before.ends_with("tee -a")
                        || before.ends_with("tee --append")
                    {
                        written = true;
                    }
                }
            }
            written && !as_dir
        })
        .collect()
}

/// Reads dotenv lines: `NAME=value`, `export NAME=value`, values in single or double quotes,
/// `NAME<<DELIMITER` … `DELIMITER` for values of several lines; blank lines and `#` comments
/// are skipped. A later line wins. The error names the line.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = trimmed
            .strip_prefix("export ")
            .unwrap_or(trimmed)
            .trim_start();
        let valid = |name: &str| {
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let (name, value) = if let Some((name, delimiter)) = body.split_once("<<")
            && valid(name.trim())
            && !body.contains('=')
        {
            let delimiter = delimiter.trim();
            let mut value = Vec::new();
            loop {
                match lines.next() {
                    Some((_, l)) if l == delimiter => break,
                    Some((_, l)) => value.push(l),
                    None => {
                        return Err(format!(
                            "line {}: `{}<<{delimiter}` is never closed by a line `{delimiter}`",
                            n + 1,
                            name.trim()
                        ));
                    }
                }
            }
            (name.trim().to_string(), value.join("\n"))
        } else {
            let Some((name, value)) = body.split_once('=') else {
                return Err(format!("line {}: `{trimmed}` is not `NAME=value`", n + 1));
            };
            let name = name.trim();
            if !valid(name) {
                return Err(format!(
                    "line {}: `{name}` is not a valid variable name",
                    n + 1
                ));
            }
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q)?.strip_suffix(*q))
                .unwrap_or(value);
            (name.to_string(), unquoted.to_string())
        };
        out.retain(|(n, _)| n != &name);
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_file_form_only_when_never_used_as_a_directory() {
        assert_eq!(used_as_file("echo FOO=bar >> $MINT_ENV"), ["MINT_ENV"]);
        assert_eq!(
            used_as_file("echo FOO=bar >> \"${MINT_ENV}\""),
            ["MINT_ENV"]
        );
        assert!(used_as_file("echo bar > $MINT_ENV/FOO").is_empty());
        assert!(used_as_file("echo bar > \"$RWX_ENV\"/FOO; cat $RWX_ENV/FOO").is_empty());
        assert!(used_as_file("echo x > $MINT_ENV/A; echo B=1 >> $MINT_ENV").is_empty());
        assert!(used_as_file("echo $MINT_ENV_FILE").is_empty());
        assert_eq!(used_as_file("echo A=1 | tee -a $RWX_ENV"), ["RWX_ENV"]);
        assert_eq!(used_as_file("echo A=1 >\"$RWX_ENV\""), ["RWX_ENV"]);
        // A mention is not a write: a script may write the directory.
        assert!(used_as_file("# exported via $RWX_ENV\nsource ./deploy.sh").is_empty());
        assert!(used_as_file("make").is_empty());
    }

    #[test]
    fn reads_dotenv_lines() {
        let vars = parse(
            "# set by the build\nFOO=bar\nexport QUOTED=\"a b\"\nSINGLE='c=d'\n\nFOO=baz\nTEXT<<EOF\none\ntwo\nEOF\n",
        )
        .unwrap();
        assert_eq!(
            vars,
            [
                ("QUOTED".to_string(), "a b".to_string()),
                ("SINGLE".to_string(), "c=d".to_string()),
                ("FOO".to_string(), "baz".to_string()),
                ("TEXT".to_string(), "one\ntwo".to_string()),
            ]
        );
        assert!(parse("just words\n").unwrap_err().contains("line 1"));
        assert!(parse("A=1\n1X=2\n").unwrap_err().contains("line 2"));
        assert!(parse("T<<END\nx\n").unwrap_err().contains("never closed"));
    }
}
