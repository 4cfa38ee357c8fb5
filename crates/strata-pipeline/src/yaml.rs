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

enum Frame {
    Seq(Location, usize, Vec<Node>),
    Map(Location, usize, Vec<(Node, Node)>, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Each anchored node, with how many nodes it holds.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    /// Nodes built so far, those copied by aliases included.
    nodes: usize,
    /// The first problem that is not a syntax error (a `<<` that merges no mapping, aliases
    /// that expand too far).
    error: Option<Diagnostic>,
}

/// The most nodes a document may expand to, its aliases copied out: a real pipeline has a few
/// thousand, while a "billion laughs" file of a few hundred bytes would otherwise grow to
/// billions of nodes (gigabytes) before anything is checked. At about 100 bytes a node, this
/// keeps a document's tree under ~30 MB.
const MAX_NODES: usize = 250_000;

/// The largest document read, for the same reason (a real pipeline file is kilobytes).
pub(crate) const MAX_DOCUMENT_BYTES: usize = 8 << 20;

/// The error for a document over [`MAX_DOCUMENT_BYTES`].
pub(crate) fn too_large(bytes: u64) -> Diagnostic {
    Diagnostic::new(
        Location { line: 1, column: 1 },
        1,
        format!(
            "the document is {bytes} bytes; strata reads documents of at most {} MiB",
            MAX_DOCUMENT_BYTES >> 20
        ),
    )
}

fn node_count(node: &Node) -> usize {
    1 + match &node.value {
        Value::Scalar { .. } => 0,
        Value::Seq(items) => items.iter().map(node_count).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| node_count(k) + node_count(v))
            .sum(),
    }
}

fn is_merge_key(key: &Node) -> bool {
    matches!(&key.value, Value::Scalar { text, quoted: false } if text == "<<")
}

fn same_key(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Scalar { text: x, .. }, Value::Scalar { text: y, .. }) => x == y,
        _ => false,
    }
}

/// Applies the `<<` merge keys of a mapping's entries, as RWX does: entries are taken in the
/// order they are written and a later one wins, whether it is written or merged (`<<: [*a, *b]`
/// merges `a`, then `b`). A merged entry keeps the position where it is written in its anchored
/// mapping, which is where an error in it must point. Two written entries with the same key
/// stay as they are (the caller reports them where it matters).
fn apply_merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, Diagnostic> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return Ok(entries);
    }
    let mut out: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
    let mut merged: Vec<bool> = Vec::with_capacity(entries.len());
    let put = |out: &mut Vec<(Node, Node)>, merged: &mut Vec<bool>, k: Node, v: Node, m: bool| {
        match out.iter().position(|(existing, _)| same_key(existing, &k)) {
            // A merged entry is replaced by any later one, and any entry by a later merge.
            Some(i) if m || merged[i] => {
                out[i] = (k, v);
                merged[i] = m;
            }
            _ => {
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
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let size = node_count(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = location(&mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                self.nodes = self.nodes.saturating_add(1);
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push_node(
                    Node {
                        at,
                        value: Value::Scalar { text, quoted },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => {
                self.nodes = self.nodes.saturating_add(1);
                self.stack.push(Frame::Seq(at, anchor, Vec::new()))
            }
            Event::MappingStart(anchor, _) => {
                self.nodes = self.nodes.saturating_add(1);
                self.stack.push(Frame::Map(at, anchor, Vec::new(), None))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(at, anchor, items)) = self.stack.pop() {
                    self.push_node(
                        Node {
                            at,
                            value: Value::Seq(items),
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(at, anchor, entries, _)) = self.stack.pop() {
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
                    );
                }
            }
            Event::Alias(id) => {
                let empty = Node {
                    at,
                    value: Value::Scalar {
                        text: String::new(),
                        quoted: false,
                    },
                };
                let size = self.anchors.get(&id).map_or(1, |(_, size)| *size);
                self.nodes = self.nodes.saturating_add(size);
                let node = if self.nodes > MAX_NODES {
                    // Copy nothing more: the document is refused once it is read.
                    self.error.get_or_insert_with(|| {
                        Diagnostic::new(
                            at,
                            1,
                            format!(
                                "YAML aliases expand this document beyond {MAX_NODES} nodes (a \"billion laughs\" file?)"
                            ),
                        )
                    });
                    empty
                } else {
                    self.anchors
                        .get(&id)
                        .map(|(node, _)| node.clone())
                        .unwrap_or(empty)
                };
                // The alias is reported where it is used, not where the anchor was defined.
                self.push_node(Node { at, ..node }, 0);
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
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(too_large(text.len() as u64));
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
    if let Some(d) = builder.error {
        return Err(d);
    }
    Ok(builder.root.unwrap_or(Node {
        at: Location { line: 1, column: 1 },
        value: Value::Map(Vec::new()),
    }))
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
    fn aliases_that_expand_without_bound_are_refused_at_once() {
        // Ten levels of nine aliases: 387 million nodes if expanded.
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        // Doubling, in a key nothing reads.
        let mut doubling = String::from("x-unused:\n  - &b0 [aaaa]\n");
        for i in 1..40 {
            doubling.push_str(&format!("  - &b{i} [*b{0}, *b{0}]\n", i - 1));
        }
        for text in [text, doubling] {
            let start = std::time::Instant::now();
            let err = parse(&text).unwrap_err();
            assert!(err.message.contains("aliases expand"), "{}", err.message);
            assert!(start.elapsed() < std::time::Duration::from_secs(2));
        }
        // Ordinary reuse stays fine.
        assert!(parse("a: &x {k: [1, 2, 3]}\nb: [*x, *x, *x]\n").is_ok());
    }

    #[test]
    fn a_document_too_large_is_refused_before_parsing() {
        let text = format!("tasks: \"{}\"\n", "x".repeat(MAX_DOCUMENT_BYTES));
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("at most 8 MiB"), "{}", err.message);
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
}
