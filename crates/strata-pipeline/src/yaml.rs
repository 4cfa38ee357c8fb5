//! A YAML document as a tree whose every node knows where it starts in the source, so that
//! errors about values (not only syntax errors) can point at a line and column.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diagnostic::{Diagnostic, Location};

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) at: Location,
    pub(crate) value: Value,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A scalar and whether it was quoted (a quoted `true` is a string, a plain one a bool).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What kind of YAML value this is, for "expected X, found Y" messages.
    pub(crate) fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar {
                text,
                quoted: false,
            } if is_null(text) => "null",
            Value::Scalar {
                text,
                quoted: false,
            } if text == "true" || text == "false" => "a boolean",
            Value::Scalar {
                text,
                quoted: false,
            } if text.parse::<f64>().is_ok() => "a number",
            Value::Scalar { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The width of the caret underline: the scalar's text, or one character.
    pub(crate) fn width(&self) -> usize {
        match &self.value {
            Value::Scalar { text, quoted } if !text.contains('\n') => {
                text.chars().count() + if *quoted { 2 } else { 0 }
            }
            _ => 1,
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.at, self.width(), message)
    }
}

pub(crate) fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn location(mark: &Marker) -> Location {
    Location {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

/// The largest file strata reads as YAML. RWX's own files are a few kB (the largest of 245
/// real `.rwx`/`.mint` files checked is 68 kB).
pub(crate) const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// The most nodes a document may hold once its aliases are expanded (written, anchored copies
/// and alias copies together): about 40 MB of tree. Real RWX files hold a few thousand.
pub(crate) const MAX_NODES: usize = 500_000;
/// The most scalar text a document may hold once its aliases are expanded.
pub(crate) const MAX_TEXT_BYTES: usize = 32 * 1024 * 1024;
/// The deepest nesting of lists and mappings.
pub(crate) const MAX_DEPTH: usize = 256;

/// What a subtree costs: its nodes and its scalar text.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    nodes: usize,
    bytes: usize,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

enum Frame {
    Seq(Location, usize, Vec<Node>, Cost),
    Map(Location, usize, Vec<(Node, Node)>, Option<Node>, Cost),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes with what a copy of each costs.
    anchors: HashMap<usize, (Node, Cost)>,
    root: Option<Node>,
    /// The first problem that is not a syntax error (a `<<` that merges no mapping).
    error: Option<Diagnostic>,
    /// Everything built so far, copies included: held under the caps.
    built: Cost,
    /// A cap was reached: the rest of the document is read but not built.
    over: Option<Diagnostic>,
}

fn is_merge_key(key: &Node) -> bool {
    matches!(&key.value, Value::Scalar { text, quoted: false } if text == "<<")
}

/// A key written twice in one mapping (merged entries aside, which replace by design): an
/// error at the second, as YAML and RWX's parser have it, rather than one of the two values
/// silently winning.
fn duplicate_key(entries: &[(Node, Node)]) -> Option<Diagnostic> {
    let mut seen: HashMap<&str, Location> = HashMap::new();
    for (key, _) in entries {
        if is_merge_key(key) {
            continue;
        }
        if let Value::Scalar { text, .. } = &key.value
            && let Some(first) = seen.insert(text.as_str(), key.at)
        {
            return Some(Diagnostic::new(
                key.at,
                text.chars().count().max(1),
                format!(
                    "`{text}` is written twice in this mapping (first at line {}, column {})",
                    first.line, first.column
                ),
            ));
        }
    }
    None
}

/// Applies the `<<` merge keys of a mapping's entries, as RWX does: entries are taken in the
/// order they are written and a later one wins, whether it is written or merged (`<<: [*a, *b]`
/// merges `a`, then `b`). A merged entry keeps the position where it is written in its anchored
/// mapping, which is where an error in it must point. Two written entries with the same key
/// are an error (`duplicate_key`).
fn apply_merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, Diagnostic> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return Ok(entries);
    }
    let mut out: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
    let mut merged: Vec<bool> = Vec::with_capacity(entries.len());
    // Where each scalar key's latest entry is (only scalar keys can be the same key), so that a
    // large mapping merges in linear time.
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut put =
        |out: &mut Vec<(Node, Node)>, merged: &mut Vec<bool>, k: Node, v: Node, m: bool| {
            let name = match &k.value {
                Value::Scalar { text, .. } => Some(text.clone()),
                _ => None,
            };
            match name.as_ref().and_then(|n| index.get(n)).copied() {
                // A merged entry is replaced by any later one, and any entry by a later merge.
                Some(i) if m || merged[i] => {
                    out[i] = (k, v);
                    merged[i] = m;
                }
                _ => {
                    if let Some(n) = name {
                        // Two written entries with one key stay as they are; the first one is
                        // the one a later entry replaces, as before.
                        index.entry(n).or_insert(out.len());
                    }
                    out.push((k, v));
                    merged.push(m);
                }
            }
        };
    for (key, value) in entries {
        if !is_merge_key(&key) {
            put(&mut out, &mut merged, key, value, false);
            continue;
        }
        let sources: Vec<Node> = match value.value {
            Value::Map(_) => vec![value],
            Value::Seq(items) if items.iter().all(|i| matches!(i.value, Value::Map(_))) => items,
            _ => {
                return Err(Diagnostic::new(
                    value.at,
                    1,
                    format!(
                        "`<<` merges a mapping or a list of mappings into this one, found {}",
                        value.kind()
                    ),
                ));
            }
        };
        for source in sources {
            if let Value::Map(pairs) = source.value {
                for (k, v) in pairs {
                    put(&mut out, &mut merged, k, v, true);
                }
            }
        }
    }
    Ok(out)
}

impl Builder {
    /// Counts `more` against the caps; past them, records the error at `at` and stops building.
    fn charge(&mut self, more: Cost, at: Location) -> bool {
        let mut built = self.built;
        built.add(more);
        if built.nodes > MAX_NODES || built.bytes > MAX_TEXT_BYTES {
            let what = if built.nodes > MAX_NODES {
                format!("{MAX_NODES} nodes")
            } else {
                format!("{} MiB of text", MAX_TEXT_BYTES / (1024 * 1024))
            };
            self.stop(Diagnostic::new(
                at,
                1,
                format!(
                    "this document is too large: with its aliases expanded it holds more than {what} (strata's limit; are aliases nested in aliases?)"
                ),
            ));
            return false;
        }
        self.built = built;
        true
    }

    fn stop(&mut self, d: Diagnostic) {
        self.over.get_or_insert(d);
        self.stack.clear();
        self.anchors.clear();
        self.root = None;
    }

    /// Adds a finished node (costing `cost`, itself included) to its parent.
    fn push_node(&mut self, node: Node, anchor: usize, cost: Cost) {
        if anchor != 0 {
            // The anchor keeps a copy of its own.
            if !self.charge(cost, node.at) {
                return;
            }
            self.anchors.insert(anchor, (node.clone(), cost));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items, total)) => {
                items.push(node);
                total.add(cost);
            }
            Some(Frame::Map(_, _, entries, pending, total)) => {
                total.add(cost);
                match pending.take() {
                    None => *pending = Some(node),
                    Some(key) => entries.push((key, node)),
                }
            }
        }
    }

    fn open(&mut self, frame: Frame, at: Location) {
        if self.stack.len() >= MAX_DEPTH {
            self.stop(Diagnostic::new(
                at,
                1,
                format!(
                    "lists and mappings are nested more than {MAX_DEPTH} deep (strata's limit)"
                ),
            ));
            return;
        }
        self.stack.push(frame);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.over.is_some() {
            return;
        }
        let at = location(&mark);
        let one = Cost { nodes: 1, bytes: 0 };
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let cost = Cost {
                    nodes: 1,
                    bytes: text.len(),
                };
                if self.charge(cost, at) {
                    self.push_node(
                        Node {
                            at,
                            value: Value::Scalar { text, quoted },
                        },
                        anchor,
                        cost,
                    );
                }
            }
            Event::SequenceStart(anchor, _) => {
                self.open(Frame::Seq(at, anchor, Vec::new(), one), at)
            }
            Event::MappingStart(anchor, _) => {
                self.open(Frame::Map(at, anchor, Vec::new(), None, one), at)
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(at, anchor, items, cost)) = self.stack.pop()
                    && self.charge(one, at)
                {
                    self.push_node(
                        Node {
                            at,
                            value: Value::Seq(items),
                        },
                        anchor,
                        cost,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(at, anchor, entries, _, cost)) = self.stack.pop()
                    && self.charge(one, at)
                {
                    if let Some(d) = duplicate_key(&entries) {
                        self.error.get_or_insert(d);
                    }
                    let entries = match apply_merge_keys(entries) {
                        Ok(entries) => entries,
                        Err(d) => {
                            self.error.get_or_insert(d);
                            Vec::new()
                        }
                    };
                    self.push_node(
                        Node {
                            at,
                            value: Value::Map(entries),
                        },
                        anchor,
                        cost,
                    );
                }
            }
            Event::Alias(id) => {
                // The copy is counted before it is made: nested aliases grow exponentially.
                let cost = self.anchors.get(&id).map_or(one, |(_, c)| *c);
                if !self.charge(cost, at) {
                    return;
                }
                let node = self.anchors.get(&id).map_or(
                    Node {
                        at,
                        value: Value::Scalar {
                            text: String::new(),
                            quoted: false,
                        },
                    },
                    |(n, _)| n.clone(),
                );
                // The alias is reported where it is used, not where the anchor was defined.
                self.push_node(Node { at, ..node }, 0, cost);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Parses the first document of `text`. An empty document is an empty mapping.
pub(crate) fn parse(text: &str) -> Result<Node, Diagnostic> {
    if text.len() > MAX_FILE_BYTES {
        return Err(too_big(text.len()));
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| {
        Diagnostic::new(
            location(e.marker()),
            1,
            format!("invalid YAML: {}", e.info()),
        )
    })?;
    if let Some(d) = builder.over.or(builder.error) {
        return Err(d);
    }
    Ok(builder.root.unwrap_or(Node {
        at: Location { line: 1, column: 1 },
        value: Value::Map(Vec::new()),
    }))
}

/// The error for a file over [`MAX_FILE_BYTES`].
pub(crate) fn too_big(len: usize) -> Diagnostic {
    Diagnostic::new(
        Location { line: 1, column: 1 },
        1,
        format!(
            "the file is too large: {len} bytes, and strata reads YAML files of at most {} MiB",
            MAX_FILE_BYTES / (1024 * 1024)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_their_position() {
        let root = parse("tasks:\n  - key: a\n    run: echo\n").unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("root is not a map")
        };
        let (key, tasks) = &entries[0];
        assert_eq!(key.at, Location { line: 1, column: 1 });
        let Value::Seq(items) = &tasks.value else {
            panic!("tasks is not a list")
        };
        let Value::Map(task) = &items[0].value else {
            panic!("task is not a map")
        };
        assert_eq!(task[1].0.at, Location { line: 3, column: 5 });
        assert_eq!(
            task[1].1.at,
            Location {
                line: 3,
                column: 10
            }
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("tasks:\n  - key: [a\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.location.line >= 2);
    }

    #[test]
    fn aliases_resolve_to_their_anchor() {
        let root = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert!(matches!(&entries[1].1.value, Value::Seq(v) if v.len() == 2));
        assert_eq!(entries[1].1.at.line, 2);
    }

    fn map_of(node: &Node) -> Vec<(String, String, Location)> {
        let Value::Map(entries) = &node.value else {
            panic!("not a map: {node:?}")
        };
        entries
            .iter()
            .map(|(k, v)| {
                let text = |n: &Node| match &n.value {
                    Value::Scalar { text, .. } => text.clone(),
                    _ => "<node>".into(),
                };
                (text(k), text(v), v.at)
            })
            .collect()
    }

    fn entry<'a>(root: &'a Node, key: &str) -> &'a Node {
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        &entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == key))
            .unwrap()
            .1
    }

    #[test]
    fn merge_keys_merge_in_order_and_keep_positions() {
        let root = parse(
            "base: &base\n  A: a\n  B: b\nextra: &extra {B: x, C: c}\nt:\n  <<: *base\n  B: mine\n",
        )
        .unwrap();
        let t = map_of(entry(&root, "t"));
        assert_eq!(
            t.iter()
                .map(|(k, v, _)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            ["A=a", "B=mine"]
        );
        // A merged value points where it is written, in the anchored mapping.
        assert_eq!(t[0].2, Location { line: 2, column: 6 });
        assert_eq!(t[1].2, Location { line: 7, column: 6 });

        // A list of mappings: merged in order, the later one winning (RWX's rule).
        let root = parse(
            "base: &base {A: a, B: b}\nextra: &extra {B: x, C: c}\nt:\n  <<: [*base, *extra]\n  C: mine\n",
        )
        .unwrap();
        let t: Vec<String> = map_of(entry(&root, "t"))
            .into_iter()
            .map(|(k, v, _)| format!("{k}={v}"))
            .collect();
        assert_eq!(t, ["A=a", "B=x", "C=mine"]);

        // A merge written after a key overrides it, as RWX reads entries in order.
        let root = parse("base: &base {A: a}\nt:\n  A: mine\n  <<: *base\n").unwrap();
        let t: Vec<String> = map_of(entry(&root, "t"))
            .into_iter()
            .map(|(k, v, _)| format!("{k}={v}"))
            .collect();
        assert_eq!(t, ["A=a"]);
    }

    #[test]
    fn merging_a_scalar_is_an_error_with_its_position() {
        let err = parse("a: &a x\nt:\n  <<: *a\n").unwrap_err();
        assert!(err.message.contains("`<<`"), "{}", err.message);
        assert_eq!(err.location, Location { line: 3, column: 7 });
        // A quoted `<<` is an ordinary key.
        let root = parse("t: {'<<': x}\n").unwrap();
        assert_eq!(map_of(entry(&root, "t"))[0].0, "<<");
    }

    /// Nine levels of nine aliases: 9^9 copies if expanded (the "billion laughs").
    pub(crate) fn billion_laughs() -> String {
        let mut text = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (prev, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
            let items = vec![format!("*{prev}"); 9].join(", ");
            text.push_str(&format!("{name}: &{name} [{items}]\n"));
        }
        text
    }

    #[test]
    fn nested_aliases_are_refused_quickly_where_they_pass_the_cap() {
        let text = billion_laughs();
        assert!(text.len() < 600, "{}", text.len());
        let start = std::time::Instant::now();
        let err = parse(&text).unwrap_err();
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(err.message.contains("too large"), "{}", err.message);
        assert!(err.message.contains("500000 nodes"), "{}", err.message);
        // Level f (line 6) is the first whose copies pass 500,000 nodes (each of its nine
        // aliases copies 7,381); the error points at one of its aliases.
        assert_eq!(err.location.line, 6, "{:?}", err.location);
        assert!(err.location.column > 4, "{:?}", err.location);
    }

    #[test]
    fn aliases_below_the_cap_still_expand() {
        // Four levels: 9^4 = 6561 copies.
        let text: String = billion_laughs()
            .lines()
            .take(4)
            .map(|l| format!("{l}\n"))
            .collect();
        let root = parse(&text).unwrap();
        let d = entry(&root, "d");
        let Value::Seq(items) = &d.value else {
            panic!()
        };
        assert_eq!(items.len(), 9);
    }

    #[test]
    fn long_texts_through_aliases_are_capped_too() {
        let big = "x".repeat(1024 * 1024);
        let mut text = format!("a: &a \"{big}\"\nb: [");
        text.push_str(&vec!["*a"; 40].join(", "));
        text.push_str("]\n");
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("32 MiB of text"), "{}", err.message);
        assert_eq!(err.location.line, 2);
    }

    #[test]
    fn files_over_the_size_cap_and_deep_nesting_are_refused() {
        let text = format!("a: \"{}\"\n", "x".repeat(MAX_FILE_BYTES));
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("too large"), "{}", err.message);
        assert_eq!(err.location, Location { line: 1, column: 1 });

        // Block nesting (flow nesting stops at the scanner's own limit of 255).
        let deep: String = (0..MAX_DEPTH + 10)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let err = parse(&deep).unwrap_err();
        assert!(err.message.contains("nested more than"), "{}", err.message);
        assert_eq!(err.location.line, MAX_DEPTH + 1);
        assert!(parse(&format!("a: {}{}\n", "[".repeat(100), "]".repeat(100))).is_ok());
    }

    #[test]
    fn a_large_mapping_merges_in_linear_time() {
        let mut text = String::from("base: &base {x: 1}\nt:\n  <<: *base\n");
        for i in 0..100_000 {
            text.push_str(&format!("  k{i}: v\n"));
        }
        let start = std::time::Instant::now();
        let root = parse(&text).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(map_of(entry(&root, "t")).len(), 100_001);
        // A key written twice is an error at the second, found as fast.
        text.push_str("  k5: again\n");
        let start = std::time::Instant::now();
        let err = parse(&text).unwrap_err();
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(err.location.line, 100_004, "{err:?}");
        assert!(err.message.contains("`k5` is written twice"), "{err:?}");
    }
}
