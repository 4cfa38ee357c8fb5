//! `parallel:`: one task written once, run as several generated tasks (`total`, `matrix`,
//! `values`), each reading its own `${{ parallel.* }}`.
//!
//! A parallel task whose count and values are written in the file is expanded when the file
//! is read: the pipeline then holds the generated tasks, and every reference to the parallel
//! task's key (`use`, `after`, an `after` expression) names all of them. One whose count or
//! values come from an expression (`values: ${{ tasks.x.values.list }}`) stays a single task
//! until the run reaches it: the engine expands it then, and `strata plan` shows it as
//! pending expansion.

use std::collections::BTreeMap;

use crate::diagnostic::{Diagnostic, Location};
use crate::expr::{Scope, Value, parse_template};
use crate::model::{Pipeline, Task, TaskName, Text};
use crate::parse::scalars::{as_map, as_text, key_name, unknown_key};
use crate::yaml::{Node, Value as Yaml};

/// RWX's default for `tasks-limit`.
pub const DEFAULT_TASKS_LIMIT: usize = 16;
/// RWX's largest `tasks-limit`.
pub const MAX_TASKS_LIMIT: usize = 256;
const PARALLEL_KEYS: &[&str] = &[
    "key",
    "tasks-limit",
    "auto-cancel",
    "total",
    "matrix",
    "values",
];

/// `parallel:` as written.
#[derive(Debug, Clone)]
pub struct ParallelSpec {
    /// The pattern each generated task's key is rendered from (`build-${{ parallel.os }}`).
    pub key: Option<Text>,
    /// At most this many generated tasks.
    pub tasks_limit: usize,
    pub kind: ParallelKind,
    pub at: Location,
}

#[derive(Debug, Clone)]
pub enum ParallelKind {
    /// `parallel: 4`, `total: 4` or `total: ${{ … }}`.
    Total(Text),
    /// Every combination of the dimensions, the first written varying slowest. A dimension is
    /// a list of scalars or one expression giving a list.
    Matrix(Vec<(String, Dimension)>),
    /// A list of mappings with the same keys, or one expression giving such a list (as JSON).
    Values(ValuesSpec),
}

#[derive(Debug, Clone)]
pub enum Dimension {
    List(Vec<Text>),
    Expression(Text),
}

#[derive(Debug, Clone)]
pub enum ValuesSpec {
    List(Vec<Vec<(String, Text)>>),
    Expression(Text),
}

/// What one generated task knows of its place in the group.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelInstance {
    /// The parallel task's own key: the name of the group.
    pub group: TaskName,
    pub index: usize,
    pub total: usize,
    /// The matrix dimensions or the mapping of `values`, by name.
    pub values: BTreeMap<String, String>,
}

impl ParallelInstance {
    /// `parallel.index`, `parallel.total` and the named values, as `${{ parallel }}` reads them.
    pub fn scope_value(&self) -> Value {
        let mut obj: BTreeMap<String, Value> = self
            .values
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        obj.insert("index".into(), Value::Number(self.index as f64));
        obj.insert("total".into(), Value::Number(self.total as f64));
        Value::Object(obj)
    }

    /// `$RWX_PARALLEL_INDEX` and `$RWX_PARALLEL_TOTAL`, with their older `MINT_` names.
    pub fn env(&self) -> [(&'static str, String); 4] {
        [
            ("RWX_PARALLEL_INDEX", self.index.to_string()),
            ("RWX_PARALLEL_TOTAL", self.total.to_string()),
            ("MINT_PARALLEL_INDEX", self.index.to_string()),
            ("MINT_PARALLEL_TOTAL", self.total.to_string()),
        ]
    }
}

/// A parallel task and the tasks it generated, in index order.
#[derive(Debug, Clone)]
pub struct ParallelGroup {
    pub name: TaskName,
    pub members: Vec<TaskName>,
}

/// A task's `parallel`: before expansion, or the place of a generated task.
#[derive(Debug, Clone)]
pub enum Parallel {
    /// Not expanded: its count or values are known only at run time.
    Pending(ParallelSpec),
    Instance(ParallelInstance),
}

impl ParallelSpec {
    /// Whether the count and values are all written in the file.
    /// Whether it can be expanded when the file is read: its count and values are written
    /// out, and its `key` reads only `parallel.*`.
    pub fn is_static(&self) -> bool {
        let key_static = self.key.as_ref().is_none_or(|k| {
            parse_template(&k.raw).map_or(true, |t| {
                t.references()
                    .iter()
                    .all(|r| r.path.first().is_some_and(|n| n == "parallel"))
            })
        });
        key_static && self.value_texts().is_empty()
    }

    /// Every text of the spec an expression may be in: those of [`ParallelSpec::value_texts`]
    /// and the `key` pattern.
    pub fn texts(&self) -> Vec<&Text> {
        let mut texts = self.value_texts();
        texts.extend(self.key.iter().filter(|k| k.raw.contains("${{")));
        texts
    }

    /// The expressions the count and values come from: a whole count, dimension or list, or
    /// one item of a list written out.
    pub fn value_texts(&self) -> Vec<&Text> {
        let dynamic = |t: &&Text| t.raw.contains("${{");
        match &self.kind {
            ParallelKind::Total(t) => [t].into_iter().filter(dynamic).collect(),
            ParallelKind::Matrix(dims) => dims
                .iter()
                .flat_map(|(_, d)| match d {
                    Dimension::Expression(t) => vec![t],
                    Dimension::List(items) => items.iter().filter(dynamic).collect(),
                })
                .collect(),
            ParallelKind::Values(ValuesSpec::Expression(t)) => vec![t],
            ParallelKind::Values(ValuesSpec::List(items)) => items
                .iter()
                .flat_map(|i| i.iter().map(|(_, t)| t).filter(dynamic))
                .collect(),
        }
    }

    /// The names `${{ parallel.NAME }}` may read besides `index` and `total`, when known now.
    pub fn value_names(&self) -> Option<Vec<String>> {
        match &self.kind {
            ParallelKind::Total(_) => Some(Vec::new()),
            ParallelKind::Matrix(dims) => Some(dims.iter().map(|(n, _)| n.clone()).collect()),
            ParallelKind::Values(ValuesSpec::List(items)) => Some(
                items
                    .first()
                    .map(|i| i.iter().map(|(n, _)| n.clone()).collect())
                    .unwrap_or_default(),
            ),
            ParallelKind::Values(ValuesSpec::Expression(_)) => None,
        }
    }

    /// Every generated task's values, in index order. `evaluate` gives the value of an
    /// expression (the count, a dimension, the list of values); an error is a message.
    pub fn combinations(
        &self,
        evaluate: &dyn Fn(&Text) -> Result<Value, String>,
    ) -> Result<Vec<BTreeMap<String, String>>, String> {
        let combos = match &self.kind {
            ParallelKind::Total(t) => {
                let n = if t.raw.contains("${{") {
                    count_of(&evaluate(t)?)?
                } else {
                    count_of(&Value::from(t.raw.trim()))?
                };
                vec![BTreeMap::new(); n]
            }
            ParallelKind::Matrix(dims) => {
                let mut combos = vec![BTreeMap::new()];
                for (name, dim) in dims {
                    let items: Vec<String> = match dim {
                        Dimension::List(items) => items
                            .iter()
                            .map(|t| item_text(t, evaluate))
                            .collect::<Result<_, String>>()
                            .map_err(|e| format!("`matrix.{name}`: {e}"))?,
                        Dimension::Expression(t) => scalars_of(&evaluate(t)?)
                            .map_err(|e| format!("`matrix.{name}`: {e}"))?,
                    };
                    combos = combos
                        .iter()
                        .flat_map(|c| {
                            items.iter().map(move |item| {
                                let mut c = c.clone();
                                c.insert(name.clone(), item.clone());
                                c
                            })
                        })
                        .collect();
                }
                combos
            }
            ParallelKind::Values(ValuesSpec::List(items)) => items
                .iter()
                .map(|i| {
                    i.iter()
                        .map(|(k, v)| {
                            let v = item_text(v, evaluate).map_err(|e| format!("`{k}`: {e}"))?;
                            Ok((k.clone(), v))
                        })
                        .collect::<Result<BTreeMap<_, _>, String>>()
                })
                .collect::<Result<_, String>>()?,
            ParallelKind::Values(ValuesSpec::Expression(t)) => mappings_of(&evaluate(t)?)?,
        };
        if combos.len() > self.tasks_limit {
            return Err(format!(
                "it would generate {} tasks, more than its `tasks-limit` of {}",
                combos.len(),
                self.tasks_limit
            ));
        }
        Ok(combos)
    }

    /// The generated tasks of `task` for these combinations: each a copy of `task` under its
    /// own key, with its [`ParallelInstance`].
    /// `scope`: what the `key` pattern may read besides `parallel.*` (the run's scope when
    /// expanded at run time).
    pub fn generate(
        &self,
        task: &Task,
        combos: Vec<BTreeMap<String, String>>,
        scope: &Scope,
    ) -> Result<Vec<Task>, String> {
        let total = combos.len();
        let mut out: Vec<Task> = Vec::with_capacity(total);
        for (index, values) in combos.into_iter().enumerate() {
            let instance = ParallelInstance {
                group: task.name.clone(),
                index,
                total,
                values,
            };
            let name = match &self.key {
                Some(pattern) => {
                    let mut scope = scope.clone();
                    scope.insert(&["parallel"], instance.scope_value());
                    let template = parse_template(&pattern.raw)
                        .map_err(|e| format!("`parallel.key`: {}", e.message))?;
                    let rendered = template
                        .render(&scope)
                        .map_err(|e| format!("`parallel.key`: {}", e.message))?
                        .text;
                    key_of(&rendered)
                }
                None => format!("{}-{index}", task.name),
            };
            if !crate::parse::task::valid_task_name(&name) {
                return Err(format!(
                    "generated task key `{name}` is not a valid key (letters, digits, `_` and `-`)"
                ));
            }
            if out.iter().any(|t| t.name.as_str() == name) {
                return Err(format!(
                    "two generated tasks have the key `{name}`; make `parallel.key` tell them apart"
                ));
            }
            let mut generated = task.clone();
            generated.name = TaskName::new(name);
            generated.parallel = Some(Parallel::Instance(instance));
            // References are checked once, on the first generated task.
            if index > 0 {
                generated.ref_spans.clear();
            }
            out.push(generated);
        }
        Ok(out)
    }
}

/// One item of a list written out: as written, or what its expression gives.
fn item_text(
    text: &Text,
    evaluate: &dyn Fn(&Text) -> Result<Value, String>,
) -> Result<String, String> {
    if text.raw.contains("${{") {
        scalar_text(&evaluate(text)?)
    } else {
        Ok(text.raw.clone())
    }
}

/// A rendered key pattern as a task key: each run of characters a key cannot hold (`3.12`,
/// `linux/amd64`) becomes one `-`, as RWX's own files expect of generated keys.
fn key_of(rendered: &str) -> String {
    let mut out = String::with_capacity(rendered.len());
    let mut replaced = false;
    for c in rendered.trim().chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
            replaced = false;
        } else if !replaced {
            out.push('-');
            replaced = true;
        }
    }
    out
}

fn count_of(value: &Value) -> Result<usize, String> {
    let n = match value {
        Value::Number(n) => *n,
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("the count must be a whole number, found `{s}`"))?,
        other => {
            return Err(format!(
                "the count must be a number, found {}",
                other.kind()
            ));
        }
    };
    if n < 0.0 || n.fract() != 0.0 || n > MAX_TASKS_LIMIT as f64 {
        return Err(format!(
            "the count must be a whole number from 0 to {MAX_TASKS_LIMIT}, found {n}"
        ));
    }
    Ok(n as usize)
}

/// A value read from another task is text: a JSON document when it holds a list.
fn from_json_text(value: &Value) -> Result<Value, String> {
    match value {
        Value::String(s) => serde_json::from_str::<serde_json::Value>(s)
            .map(|j| json_to_value(&j))
            .map_err(|e| format!("expected a JSON list, found `{}` ({e})", short(s))),
        other => Ok(other.clone()),
    }
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(60).collect();
    s.replace('\n', " ")
}

fn json_to_value(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(json_to_value).collect()),
        serde_json::Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        ),
    }
}

fn scalar_text(v: &Value) -> Result<String, String> {
    match v {
        Value::Array(_) | Value::Object(_) => Err(format!(
            "expected a string, number or boolean, found {}",
            v.kind()
        )),
        other => Ok(other.render()),
    }
}

fn scalars_of(value: &Value) -> Result<Vec<String>, String> {
    match from_json_text(value)? {
        Value::Array(items) => items.iter().map(scalar_text).collect(),
        other => Err(format!("expected a list, found {}", other.kind())),
    }
}

fn mappings_of(value: &Value) -> Result<Vec<BTreeMap<String, String>>, String> {
    let Value::Array(items) = from_json_text(value)? else {
        return Err("`values` must give a list of mappings".into());
    };
    let mut out: Vec<BTreeMap<String, String>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(format!(
                "item {i} of `values` is {}, not a mapping",
                item.kind()
            ));
        };
        let m: BTreeMap<String, String> = map
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    scalar_text(v).map_err(|e| format!("`{k}`: {e}"))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        if let Some(first) = out.first()
            && !first.keys().eq(m.keys())
        {
            return Err(format!(
                "item {i} of `values` does not have the same keys as the first"
            ));
        }
        out.push(m);
    }
    Ok(out)
}

/// `parallel:` of a task: a count, an expression, or a mapping.
/// `at` is where the `parallel` key is.
pub(crate) fn parse(
    node: &Node,
    at: Location,
    errors: &mut Vec<Diagnostic>,
) -> Option<ParallelSpec> {
    let mut spec = ParallelSpec {
        key: None,
        tasks_limit: DEFAULT_TASKS_LIMIT,
        kind: ParallelKind::Total(Text::new("1", node.at)),
        at,
    };
    let here = |message: String| Diagnostic::new(at, "parallel".len(), message);
    match &node.value {
        Yaml::Scalar { .. } => {
            spec.kind = ParallelKind::Total(total(node, errors)?);
            Some(spec)
        }
        Yaml::Map(entries) => {
            let mut kinds = Vec::new();
            for (k, v) in entries {
                let Some(name) = key_name(k, errors) else {
                    continue;
                };
                match name.as_str() {
                    "key" => spec.key = as_text(v, "`parallel.key`", errors),
                    "tasks-limit" => {
                        let text = as_text(v, "`parallel.tasks-limit`", errors)?;
                        match text.raw.trim().parse::<usize>() {
                            Ok(n) if (1..=MAX_TASKS_LIMIT).contains(&n) => spec.tasks_limit = n,
                            _ => errors.push(v.error(format!(
                                "`tasks-limit` must be a whole number from 1 to {MAX_TASKS_LIMIT}, found `{}`",
                                text.raw
                            ))),
                        }
                    }
                    // Cancelling superseded runs is RWX's cloud.
                    "auto-cancel" => {}
                    "total" => {
                        if let Some(t) = total(v, errors) {
                            kinds.push(("total", ParallelKind::Total(t)));
                        }
                    }
                    "matrix" => {
                        if let Some(m) = matrix(v, errors) {
                            kinds.push(("matrix", m));
                        }
                    }
                    "values" => {
                        if let Some(m) = values(v, errors) {
                            kinds.push(("values", m));
                        }
                    }
                    other => errors.push(unknown_key(k, other, "`parallel`", PARALLEL_KEYS)),
                }
            }
            if kinds.len() > 1 {
                let names: Vec<String> = kinds.iter().map(|(n, _)| format!("`{n}`")).collect();
                errors.push(here(format!(
                    "`parallel` has {}: give only one of them",
                    names.join(" and ")
                )));
            }
            if kinds.is_empty() {
                errors.push(
                    here("`parallel` needs `total`, `matrix` or `values`".into())
                        .with_help("for example `parallel: {matrix: {os: [linux, macos]}}`"),
                );
                return None;
            }
            let (_, kind) = kinds.swap_remove(0);
            spec.kind = kind;
            Some(spec)
        }
        Yaml::Seq(_) => {
            errors.push(
                node.error("`parallel` must be a count, an expression or a mapping, found a list")
                    .with_help("for a list of values use `parallel: {values: [...]}`"),
            );
            None
        }
    }
}

fn is_expression(text: &str) -> bool {
    text.trim_start().starts_with("${{")
}

fn total(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<Text> {
    let text = as_text(node, "`parallel.total`", errors)?;
    if is_expression(&text.raw) {
        return Some(text);
    }
    match text.raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_TASKS_LIMIT).contains(&n) => Some(text),
        _ => {
            errors.push(node.error(format!(
                "the parallel count must be a whole number from 1 to {MAX_TASKS_LIMIT} or an expression, found `{}`",
                text.raw
            )));
            None
        }
    }
}

fn literal_scalar(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Option<Text> {
    as_text(node, what, errors)
}

fn matrix(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<ParallelKind> {
    let entries = as_map(node, "`parallel.matrix`", errors)?;
    let mut dims = Vec::new();
    for (k, v) in entries {
        let name = key_name(k, errors)?;
        let what = format!("`matrix.{name}`");
        let dim = match &v.value {
            Yaml::Seq(items) => Dimension::List(
                items
                    .iter()
                    .filter_map(|i| literal_scalar(i, &format!("each item of {what}"), errors))
                    .collect(),
            ),
            Yaml::Scalar { .. } => {
                let text = as_text(v, &what, errors)?;
                if is_expression(&text.raw) {
                    Dimension::Expression(text)
                } else {
                    Dimension::List(vec![text])
                }
            }
            Yaml::Map(_) => {
                errors.push(v.error(format!("{what} must be a list or an expression")));
                continue;
            }
        };
        dims.push((name, dim));
    }
    if dims.is_empty() {
        errors.push(node.error("`parallel.matrix` has no dimension"));
        return None;
    }
    Some(ParallelKind::Matrix(dims))
}

fn values(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<ParallelKind> {
    match &node.value {
        Yaml::Scalar { text, .. } if is_expression(text) => Some(ParallelKind::Values(
            ValuesSpec::Expression(as_text(node, "`parallel.values`", errors)?),
        )),
        Yaml::Seq(items) if !items.is_empty() => {
            let mut out: Vec<Vec<(String, Text)>> = Vec::new();
            for item in items {
                let entries = as_map(item, "each item of `parallel.values`", errors)?;
                let mut m = Vec::new();
                for (k, v) in entries {
                    let name = key_name(k, errors)?;
                    let value = literal_scalar(v, &format!("`values.{name}`"), errors)?;
                    m.push((name, value));
                }
                m.sort_by(|a, b| a.0.cmp(&b.0));
                if m.is_empty() {
                    errors.push(item.error("an item of `parallel.values` is empty"));
                    return None;
                }
                if let Some(first) = out.first()
                    && !first.iter().map(|(k, _)| k).eq(m.iter().map(|(k, _)| k))
                {
                    errors.push(
                        item.error("every item of `parallel.values` must have the same keys"),
                    );
                    return None;
                }
                out.push(m);
            }
            Some(ParallelKind::Values(ValuesSpec::List(out)))
        }
        _ => {
            errors.push(
                node.error(
                    "`parallel.values` must be a non-empty list of mappings or an expression",
                ),
            );
            None
        }
    }
}

/// Expands every parallel task whose count and values are in the file, and makes references
/// to a parallel task name its generated tasks. Those known only at run time are noted as
/// unsupported by `run`.
pub(crate) fn expand(pipeline: &mut Pipeline, errors: &mut Vec<Diagnostic>) {
    if !pipeline.tasks.iter().any(|t| t.parallel.is_some()) && pipeline.parallel_groups.is_empty() {
        return;
    }
    let mut tasks = Vec::with_capacity(pipeline.tasks.len());
    for task in std::mem::take(&mut pipeline.tasks) {
        let Some(Parallel::Pending(spec)) = &task.parallel else {
            tasks.push(task);
            continue;
        };
        // Expanded when the run gets there (`strata plan` shows it pending).
        if !spec.is_static() {
            tasks.push(task);
            continue;
        }
        let spec = spec.clone();
        let generated = spec
            .combinations(&|_| Err("no expression here".into()))
            .and_then(|combos| spec.generate(&task, combos, &Scope::new()));
        match generated {
            Ok(generated) => {
                pipeline.parallel_groups.push(ParallelGroup {
                    name: task.name.clone(),
                    members: generated.iter().map(|t| t.name.clone()).collect(),
                });
                tasks.extend(generated);
            }
            Err(message) => {
                errors.push(Diagnostic::new(
                    spec.at,
                    "parallel".len(),
                    format!("task `{}`: {message}", task.name),
                ));
                tasks.push(task);
            }
        }
    }
    pipeline.tasks = tasks;
    let groups = pipeline.parallel_groups.clone();
    for task in &mut pipeline.tasks {
        for list in [&mut task.uses, &mut task.after] {
            *list = replace_groups(list, &groups);
        }
        for span in &mut task.ref_spans {
            if let Some(g) = groups.iter().find(|g| g.name == span.name)
                && let Some(first) = g.members.first()
            {
                span.name = first.clone();
            }
        }
    }
}

/// `names` with each parallel task's name replaced by its generated tasks.
pub fn replace_groups(names: &[TaskName], groups: &[ParallelGroup]) -> Vec<TaskName> {
    let mut out: Vec<TaskName> = Vec::with_capacity(names.len());
    for n in names {
        let members = match groups.iter().find(|g| &g.name == n) {
            Some(g) => g.members.as_slice(),
            None => std::slice::from_ref(n),
        };
        for m in members {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parallel_task_has_no_values_of_its_own() {
        for parallel in ["2", "${{ tasks.n.values.count }}"] {
            let text = format!(
                "tasks:\n  - key: n\n    run: x\n  - key: p\n    parallel: {parallel}\n    use: n\n    run: y\n  - key: r\n    run: echo ${{{{ tasks.p.values.v }}}}\n"
            );
            let e = crate::parse_str(std::path::Path::new("s.yml"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("`p` is a parallel task"), "{e}");
        }
    }

    #[test]
    fn rendered_keys_become_task_keys() {
        assert_eq!(
            key_of("python-3.12.1-linux/amd64"),
            "python-3-12-1-linux-amd64"
        );
        assert_eq!(key_of("build_x86-64"), "build_x86-64");
        assert_eq!(key_of("a  b"), "a-b");
    }

    #[test]
    fn a_matrix_is_every_combination_first_dimension_slowest() {
        let t = |s: &str| Text::new(s, Location::default());
        let spec = ParallelSpec {
            key: None,
            tasks_limit: 4,
            kind: ParallelKind::Matrix(vec![
                ("os".into(), Dimension::List(vec![t("linux"), t("mac")])),
                ("arch".into(), Dimension::List(vec![t("x86"), t("arm")])),
            ]),
            at: Location::default(),
        };
        let combos = spec.combinations(&|_| Err("none".into())).unwrap();
        let pairs: Vec<String> = combos
            .iter()
            .map(|c| format!("{}/{}", c["os"], c["arch"]))
            .collect();
        assert_eq!(pairs, ["linux/x86", "linux/arm", "mac/x86", "mac/arm"]);
        let small = ParallelSpec {
            tasks_limit: 3,
            ..spec
        };
        let e = small.combinations(&|_| Err("none".into())).unwrap_err();
        assert!(e.contains("more than its `tasks-limit` of 3"), "{e}");
    }

    #[test]
    fn values_from_a_task_are_a_json_list_of_mappings_with_the_same_keys() {
        let spec = ParallelSpec {
            key: None,
            tasks_limit: 16,
            kind: ParallelKind::Values(ValuesSpec::Expression(Text::new(
                "${{ x }}",
                Location::default(),
            ))),
            at: Location::default(),
        };
        let with = |json: &'static str| spec.combinations(&move |_| Ok(Value::from(json)));
        let combos = with(r#"[{"v": 3.1, "ok": true}, {"v": "4", "ok": false}]"#).unwrap();
        assert_eq!(combos[0]["v"], "3.1");
        assert_eq!(combos[1]["ok"], "false");
        assert!(with("[]").unwrap().is_empty());
        assert!(
            with(r#"[{"a": 1}, {"b": 2}]"#)
                .unwrap_err()
                .contains("same keys")
        );
        assert!(
            with("not json")
                .unwrap_err()
                .contains("expected a JSON list")
        );
        assert!(with(r#"[1]"#).unwrap_err().contains("not a mapping"));
    }
}
