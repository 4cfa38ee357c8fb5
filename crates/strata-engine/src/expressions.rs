//! Resolving a task's `${{ … }}` at run time: its text with the run's scope (and the values of
//! the tasks it reads), once as it runs and once as it is keyed (secrets by name only), and
//! which parts of secrets are masked in what the task prints (`output.rs` masks them).

use std::collections::BTreeMap;

use strata_pipeline::expr::{Rendered, Scope, Value, parse_template};
use strata_pipeline::{Text, WorkspaceSource};

/// The values of the tasks a task reads: task name -> value name -> value; and the layers of
/// the tasks whose artifacts it reads (`artifact_refs.rs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskValues {
    values: BTreeMap<String, BTreeMap<String, String>>,
    pub(crate) artifact_layers: crate::artifact_refs::ArtifactLayers,
}

impl TaskValues {
    pub(crate) fn new() -> Self {
        TaskValues::default()
    }
}

impl std::ops::Deref for TaskValues {
    type Target = BTreeMap<String, BTreeMap<String, String>>;
    fn deref(&self) -> &Self::Target {
        &self.values
    }
}

impl std::ops::DerefMut for TaskValues {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.values
    }
}

impl FromIterator<(String, BTreeMap<String, String>)> for TaskValues {
    fn from_iter<I: IntoIterator<Item = (String, BTreeMap<String, String>)>>(iter: I) -> Self {
        TaskValues {
            values: iter.into_iter().collect(),
            artifact_layers: Default::default(),
        }
    }
}

/// A text as it runs and as it is keyed.
pub(crate) struct Resolved {
    pub(crate) text: String,
    pub(crate) keyed: String,
    pub(crate) secret: bool,
}

/// The run's scope with `tasks.X.values.*` of the tasks this one reads.
pub(crate) fn with_values(scope: &Scope, values: &TaskValues) -> Scope {
    let mut scope = scope.clone();
    for (task, vals) in values.iter() {
        let obj: BTreeMap<String, Value> = vals
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        scope.insert(&["tasks", task, "values"], Value::Object(obj));
    }
    scope
}

pub(crate) fn render(text: &Text, scope: &Scope) -> Result<Rendered, String> {
    if !text.raw.contains("${{") && !text.raw.contains("\\${{") {
        return Ok(Rendered {
            text: text.raw.clone(),
            secret: false,
        });
    }
    let template = parse_template(&text.raw).map_err(|e| e.message)?;
    template.render(scope).map_err(|e| e.message)
}

/// `text` rendered with `scope` (as it runs) and `key_scope` (as it is keyed).
pub(crate) fn resolve(text: &Text, scope: &Scope, key_scope: &Scope) -> Result<Resolved, String> {
    let run = render(text, scope)?;
    let keyed = if run.secret {
        render(text, key_scope)?.text
    } else {
        run.text.clone()
    };
    Ok(Resolved {
        text: run.text,
        keyed,
        secret: run.secret,
    })
}

/// A `git/clone`'s parameters with their expressions resolved.
pub(crate) fn resolve_source(
    source: &WorkspaceSource,
    scope: &Scope,
) -> Result<WorkspaceSource, (strata_pipeline::Location, String)> {
    let r = |t: &Option<Text>,
             name: &str|
     -> Result<Option<Text>, (strata_pipeline::Location, String)> {
        t.as_ref()
            .map(|t| {
                render(t, scope)
                    .map(|v| Text::new(v.text, t.at))
                    .map_err(|e| (t.at, format!("`with.{name}`: {e}")))
            })
            .transpose()
    };
    Ok(WorkspaceSource {
        path: r(&source.path, "path")?,
        // Only checked against the checkout, and only when known: one that reads a task's
        // values (`ref: ${{ tasks.v.values.tag }}`) stays as written.
        reference: r(&source.reference, "ref").unwrap_or_else(|_| source.reference.clone()),
        repository: r(&source.repository, "repository")?,
        preserve_git_dir: r(&source.preserve_git_dir, "preserve-git-dir")?,
        meta_ref: r(&source.meta_ref, "meta-ref")?,
        call: source.call.clone(),
    })
}

/// What is masked of each secret: its lines of three characters or more (a secret of one or
/// two characters would mask half of every log). No part holds a newline.
pub(crate) fn secret_parts(secrets: &[String]) -> impl Iterator<Item = &str> {
    secrets
        .iter()
        .filter(|s| s.len() >= 3)
        .flat_map(|s| s.lines().filter(|p| p.len() >= 3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_pipeline::Location;

    #[test]
    fn secrets_are_keyed_by_name_and_masked() {
        let mut scope = Scope::new();
        scope.insert(&["init", "env"], Value::from("prod"));
        scope.insert_secret(&["secrets", "TOKEN"], Value::from("hunter22"));
        let mut key_scope = scope.clone();
        key_scope.insert(&["secrets", "TOKEN"], Value::from("${{ secrets.TOKEN }}"));
        let text = Text::new(
            "deploy --env ${{ init.env }} --token ${{ secrets.TOKEN }}",
            Location::default(),
        );
        let r = resolve(&text, &scope, &key_scope).unwrap();
        assert!(r.secret);
        assert_eq!(r.text, "deploy --env prod --token hunter22");
        assert_eq!(r.keyed, "deploy --env prod --token ${{ secrets.TOKEN }}");
        let mut mask = crate::output::StreamMask::new(&["hunter22".into(), "ab".into()]);
        assert_eq!(
            mask.push(b"token is hunter22, ok ab\n"),
            b"token is ***, ok ab\n"
        );
    }

    #[test]
    fn values_of_other_tasks_are_readable() {
        let scope = with_values(
            &Scope::new(),
            &TaskValues::from_iter([(
                "build".to_string(),
                BTreeMap::from([("version".to_string(), "1.2".to_string())]),
            )]),
        );
        let t = Text::new("v=${{ tasks.build.values.version }}", Location::default());
        assert_eq!(render(&t, &scope).unwrap().text, "v=1.2");
    }
}
