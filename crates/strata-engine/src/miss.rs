//! Why a task that is about to run missed the cache, said before it starts (the `task-missed`
//! event; worked out on a thread of its own while the task's layers arrive and its workspace is
//! built: `execute.rs`): after the run its latest entry is the new one, and `strata explain`
//! could no longer tell. The comparison is `explain`'s (`strata_key::compare` over the recorded
//! inputs of the task's latest entry), so the two never disagree.

use strata_key::{Difference, RecordedInputs};
use strata_pipeline::Task;

use crate::context::RunContext;
use crate::inputs::ResolvedInputs;

/// At most this many reasons per task (a changed lockfile can touch thousands of files).
const MAX_REASONS: usize = 20;

/// Why `task`, whose key is `resolved.key`, found no usable entry.
pub(crate) fn reasons(ctx: &RunContext<'_>, task: &Task, resolved: &ResolvedInputs) -> Vec<String> {
    let mut out = reasons_unmasked(ctx, task, resolved);
    if out.len() > MAX_REASONS {
        let more = out.len() - MAX_REASONS + 1;
        out.truncate(MAX_REASONS - 1);
        out.push(format!(
            "… and {more} more (`strata explain` before the next run)"
        ));
    }
    // Secrets are keyed by name, but an `--env` value (keyed by its value) may be one too.
    let secrets: Vec<&str> =
        crate::expressions::secret_parts(&ctx.invocation.secret_values).collect();
    out.into_iter().map(|r| mask(r, &secrets)).collect()
}

fn mask(mut text: String, secrets: &[&str]) -> String {
    for s in secrets {
        if text.contains(s) {
            text = text.replace(s, "***");
        }
    }
    text
}

fn reasons_unmasked(ctx: &RunContext<'_>, task: &Task, resolved: &ResolvedInputs) -> Vec<String> {
    if ctx.options.no_cache {
        return vec!["--no-cache: the cache is not read".into()];
    }
    if !resolved.cache.enabled {
        return vec!["caching is off for this task (`cache: false`)".into()];
    }
    let latest = match ctx
        .cache
        .index()
        .latest_for_task(&ctx.pipeline_id(), task.name.as_str())
    {
        Ok(Some(latest)) => latest,
        Ok(None) => return vec!["no cache entry for this task yet".into()],
        Err(e) => return vec![format!("its latest entry could not be read: {e}")],
    };
    if latest.key == resolved.key {
        return vec![
            "its inputs match its latest entry, which is no longer usable (older than its `cache.ttl`, or its layer is missing)"
                .into(),
        ];
    }
    let old = match ctx.cache.index().recorded_inputs(&latest) {
        Ok(old) => old,
        Err(e) => return vec![format!("its latest entry's inputs could not be read: {e}")],
    };
    let new = RecordedInputs {
        inputs: resolved.inputs.clone(),
        workspace_files: resolved.files.clone(),
    };
    let mut differences = strata_key::compare(&old, &new);
    if let Some(i) = differences.iter().position(|d| *d == Difference::Base)
        && let Ok(base) = crate::plan::base_changes(ctx, &old.inputs.base, &new.inputs.base)
        && !base.is_empty()
    {
        differences.splice(i..=i, base);
    }
    if differences.is_empty() {
        // The key holds something the recorded inputs do not show (a recipe detail).
        return vec![
            "its key differs from its latest entry's, with the same recorded inputs".into(),
        ];
    }
    differences.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_a_secret_is_masked() {
        assert_eq!(
            mask("env TOKEN: \"hunter22\" -> \"x\"".into(), &["hunter22"]),
            "env TOKEN: \"***\" -> \"x\""
        );
    }
}
