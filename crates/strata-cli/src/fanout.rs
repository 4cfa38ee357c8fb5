//! Fan-out through a scheduler people already run: `strata plan --format github-actions` writes
//! a workflow whose jobs each run `strata run FILE --target TASK`, with `needs:` following the
//! pipeline's graph, so one pipeline's tasks run on many machines with a shared cache as the only
//! glue. `plan --json` carries the same graph (`needs`, `job`) for other schedulers.
//!
//! A task with the cache off never reaches a shared cache, so whatever needs its output cannot
//! run on another machine: it travels in one job with every task that depends on it.

use std::collections::{BTreeMap, BTreeSet};

use strata_pipeline::{Pipeline, TaskKind};

/// One job: the tasks it runs (targets of one `strata run`) and the jobs it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    /// A GitHub Actions job id (`[A-Za-z_][A-Za-z0-9_-]*`), unique in the workflow.
    pub id: String,
    /// The tasks, in file order.
    pub tasks: Vec<String>,
    pub needs: Vec<String>,
}

/// The jobs of a pipeline, in file order of their first task.
pub(crate) fn jobs(pipeline: &Pipeline) -> Vec<Job> {
    let tasks: Vec<&strata_pipeline::Task> = pipeline
        .tasks
        .iter()
        // A call stands for its tasks, which are in the pipeline themselves.
        .filter(|t| !matches!(t.kind, TaskKind::Called(_)))
        .collect();
    let index: BTreeMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    // Dependencies by index, through calls: a call's task depends on every task of its call
    // (`use` for its final ones, `after` for the others), so expanding it is enough.
    let deps: Vec<Vec<usize>> = tasks
        .iter()
        .map(|t| {
            let mut out = BTreeSet::new();
            let mut stack: Vec<&str> = t.dependencies().map(|d| d.as_str()).collect();
            let mut seen = BTreeSet::new();
            while let Some(d) = stack.pop() {
                if !seen.insert(d) {
                    continue;
                }
                match index.get(d) {
                    Some(&i) => {
                        out.insert(i);
                    }
                    None => stack.extend(
                        pipeline
                            .task(d)
                            .into_iter()
                            .flat_map(|call| call.dependencies().map(|n| n.as_str())),
                    ),
                }
            }
            out.into_iter().collect()
        })
        .collect();
    // A task is tainted when its cache is off, or when it depends on a tainted task: its input
    // is then never in a shared cache, so it joins the job of what taints it (union-find).
    let mut tainted: Vec<Option<bool>> = vec![None; tasks.len()];
    fn is_tainted(
        i: usize,
        tasks: &[&strata_pipeline::Task],
        deps: &[Vec<usize>],
        memo: &mut [Option<bool>],
    ) -> bool {
        if let Some(known) = memo[i] {
            return known;
        }
        let uncached = !tasks[i].cache.enabled && tasks[i].cache.enabled_expr.is_none();
        // The graph is acyclic (validated), so this recursion ends.
        let tainted = deps[i]
            .iter()
            .fold(uncached, |acc, &d| is_tainted(d, tasks, deps, memo) || acc);
        memo[i] = Some(tainted);
        tainted
    }
    let mut group: Vec<usize> = (0..tasks.len()).collect();
    fn find(group: &mut [usize], i: usize) -> usize {
        let mut r = i;
        while group[r] != r {
            r = group[r];
        }
        group[i] = r;
        r
    }
    for i in 0..tasks.len() {
        for &d in &deps[i] {
            if is_tainted(d, &tasks, &deps, &mut tainted) {
                let (a, b) = (find(&mut group, i), find(&mut group, d));
                group[a.max(b)] = a.min(b);
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..tasks.len() {
        let r = find(&mut group, i);
        by_root.entry(r).or_default().push(i);
    }
    let mut ids = BTreeSet::new();
    let mut job_of = vec![String::new(); tasks.len()];
    let mut jobs = Vec::new();
    for members in by_root.values() {
        let id = unique_id(tasks[members[0]].name.as_str(), &mut ids);
        for &m in members {
            job_of[m] = id.clone();
        }
        jobs.push((members.clone(), id));
    }
    jobs.sort_by_key(|(members, _)| members[0]);
    jobs.into_iter()
        .map(|(members, id)| {
            let needs: BTreeSet<String> = members
                .iter()
                .flat_map(|&m| deps[m].iter())
                .map(|&d| job_of[d].clone())
                .filter(|j| *j != id)
                .collect();
            Job {
                tasks: members.iter().map(|&m| tasks[m].name.to_string()).collect(),
                needs: needs.into_iter().collect(),
                id,
            }
        })
        .collect()
}

/// A job id from a task name: GitHub allows letters, digits, `-` and `_`, starting with a letter
/// or `_`.
fn unique_id(task: &str, taken: &mut BTreeSet<String>) -> String {
    let mut id: String = task
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        id.insert(0, '_');
    }
    let mut candidate = id.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{id}-{n}");
        n += 1;
    }
    candidate
}

/// What every job does before its run: strata on the runner (`vars.STRATA_SETUP`, e.g. a
/// download of a release), and, when the repository names a role (`vars.STRATA_AWS_ROLE_ARN`),
/// the job's OIDC token in a file for strata's web-identity credentials.
const SETUP_STEPS: &str = r#"      - name: strata on the runner
        run: ${{ vars.STRATA_SETUP || 'command -v strata' }}
      - name: OIDC token for the S3 cache
        if: ${{ vars.STRATA_AWS_ROLE_ARN != '' }}
        run: |
          curl -sSf -H "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN" \
            "$ACTIONS_ID_TOKEN_REQUEST_URL&audience=sts.amazonaws.com" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])' > "$RUNNER_TEMP/oidc-token"
          echo "AWS_WEB_IDENTITY_TOKEN_FILE=$RUNNER_TEMP/oidc-token" >> "$GITHUB_ENV"
          echo "AWS_ROLE_ARN=${{ vars.STRATA_AWS_ROLE_ARN }}" >> "$GITHUB_ENV"
"#;

/// A YAML double-quoted scalar.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// A GitHub Actions workflow running `pipeline` (at `file`, relative to the repository root)
/// one job per task.
pub(crate) fn github_actions(pipeline: &Pipeline, file: &str) -> String {
    let jobs = jobs(pipeline);
    let mut out = String::new();
    out.push_str(&format!(
        "# Generated by `strata plan {file} --format github-actions`: one job per task, `needs`\n\
         # following the pipeline's graph, a shared cache the only glue between machines.\n\
         # Each job restores what its task uses from the shared cache ($STRATA_CACHE) and fails\n\
         # rather than build a parent again (--require-cached-parents). Tasks with the cache\n\
         # off run in one job with everything that depends on them. Regenerate when the\n\
         # pipeline's tasks change.\n"
    ));
    out.push_str("name: strata\n");
    out.push_str("on:\n  push:\n  pull_request:\n  workflow_dispatch:\n");
    out.push_str(
        "permissions:\n  contents: read\n  id-token: write # OIDC: web identity for the S3 cache\n",
    );
    out.push_str("env:\n  STRATA_CACHE: ${{ vars.STRATA_CACHE }}\n");
    out.push_str("jobs:\n");
    for job in &jobs {
        out.push_str(&format!("  {}:\n", job.id));
        out.push_str(&format!("    name: {}\n", quoted(&job.tasks.join(", "))));
        if !job.needs.is_empty() {
            out.push_str(&format!("    needs: [{}]\n", job.needs.join(", ")));
        }
        out.push_str("    runs-on: ${{ vars.STRATA_RUNS_ON || 'ubuntu-latest' }}\n");
        out.push_str("    steps:\n");
        out.push_str("      - uses: actions/checkout@v4\n");
        out.push_str(SETUP_STEPS);
        let targets: String = job
            .tasks
            .iter()
            .map(|t| format!(" --target {}", shell_word(t)))
            .collect();
        out.push_str(&format!(
            "      - run: sudo -E strata run {}{targets} --require-cached-parents\n",
            shell_word(file)
        ));
    }
    out
}

/// A word for `sh`, quoted only when it must be.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+=,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(yaml: &str) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.yml");
        std::fs::write(&path, yaml).unwrap();
        strata_pipeline::load(&path).unwrap()
    }

    #[test]
    fn one_job_per_task_with_needs_following_the_graph() {
        let p = pipeline(
            "tasks:\n  - key: deps\n    run: a\n  - key: build\n    use: [deps]\n    run: b\n  - key: lint\n    use: [deps]\n    run: c\n  - key: test\n    use: [build]\n    after: [lint]\n    run: d\n",
        );
        let jobs = jobs(&p);
        let shape: Vec<(&str, Vec<&str>)> = jobs
            .iter()
            .map(|j| (j.id.as_str(), j.needs.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("deps", vec![]),
                ("build", vec!["deps"]),
                ("lint", vec!["deps"]),
                ("test", vec!["build", "lint"]),
            ]
        );
    }

    #[test]
    fn an_uncached_task_travels_with_its_dependents() {
        let p = pipeline(
            "tasks:\n  - key: deps\n    run: a\n  - key: stamp\n    cache: false\n    use: [deps]\n    run: b\n  - key: build\n    use: [stamp]\n    run: c\n  - key: test\n    use: [build]\n    run: d\n  - key: lint\n    use: [deps]\n    run: e\n",
        );
        let jobs = jobs(&p);
        let grouped: Vec<(&str, Vec<&str>)> = jobs
            .iter()
            .map(|j| (j.id.as_str(), j.tasks.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            grouped,
            vec![
                ("deps", vec!["deps"]),
                ("stamp", vec!["stamp", "build", "test"]),
                ("lint", vec!["lint"]),
            ]
        );
        assert_eq!(jobs[1].needs, vec!["deps"]);
    }

    #[test]
    fn job_ids_are_valid_and_unique() {
        let mut taken = BTreeSet::new();
        assert_eq!(unique_id("lint.rust", &mut taken), "lint_rust");
        assert_eq!(unique_id("lint_rust", &mut taken), "lint_rust-2");
        assert_eq!(unique_id("1st", &mut taken), "_1st");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word(".rwx/ci.yml"), ".rwx/ci.yml");
    }
}
