//! `strata-chaos`: the fault campaign behind `scripts/chaos` (issue 11, item 5). It drives the
//! built `strata` binary against real servers on loopback (`strata-testkit`), injects one fault
//! per trial — kills at chosen points, a server dying, damaged or swapped blobs, concurrent runs,
//! a full disk, odd files, YAML bombs, a closed stdout — and checks the invariants of
//! ARCHITECTURE.md after each (`checks.rs`). Every choice comes from the seed, which it prints;
//! `--seed S --only KIND --trial N` replays one trial.
//!
//! Test support only: nothing depends on this crate.

mod checks;
mod pipelines;
mod rng;
mod trials;
mod world;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use trials::{KINDS, References, Trial};
use world::World;

struct Args {
    strata: PathBuf,
    seed: u64,
    budget: Duration,
    only: Vec<String>,
    trial: Option<u64>,
    max_trials: Option<u64>,
    report: Option<PathBuf>,
    quick: bool,
    /// Print the reference listings and stop (to see what `verify` compares).
    references: bool,
}

const USAGE: &str = "usage: strata-chaos --strata BIN [--quick] [--seed N] [--budget SECS] \
[--only KIND,...] [--trial N] [--trials N] [--report FILE]";

fn parse_args() -> Args {
    let mut args = Args {
        strata: PathBuf::new(),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 1_000_000)
            .unwrap_or(1),
        budget: Duration::from_secs(570),
        only: Vec::new(),
        trial: None,
        max_trials: None,
        report: None,
        quick: false,
        references: false,
    };
    let mut it = std::env::args().skip(1);
    let value = |it: &mut dyn Iterator<Item = String>, name: &str| {
        it.next().unwrap_or_else(|| {
            eprintln!("{name} needs a value\n{USAGE}");
            std::process::exit(2)
        })
    };
    let number = |s: String, name: &str| {
        s.parse::<u64>().unwrap_or_else(|_| {
            eprintln!("{name}: not a number: {s}\n{USAGE}");
            std::process::exit(2)
        })
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--strata" => args.strata = PathBuf::from(value(&mut it, &a)),
            "--quick" => {
                args.quick = true;
                args.budget = Duration::from_secs(85);
            }
            "--print-references" => args.references = true,
            "--seed" => args.seed = number(value(&mut it, &a), &a),
            "--budget" => args.budget = Duration::from_secs(number(value(&mut it, &a), &a)),
            "--trial" => args.trial = Some(number(value(&mut it, &a), &a)),
            "--trials" => args.max_trials = Some(number(value(&mut it, &a), &a)),
            "--report" => args.report = Some(PathBuf::from(value(&mut it, &a))),
            "--only" => {
                args.only = value(&mut it, &a).split(',').map(str::to_string).collect();
                if let Some(k) = args.only.iter().find(|k| !KINDS.contains(&k.as_str())) {
                    eprintln!("unknown kind {k}; kinds: {}", KINDS.join(", "));
                    std::process::exit(2);
                }
            }
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if args.strata.as_os_str().is_empty() {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    args
}

struct Done {
    n: u64,
    kind: String,
    variant: String,
    failures: Vec<String>,
    secs: f64,
}

fn main() {
    let args = parse_args();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("strata-chaos: needs root (strata mounts overlays; trials mount tmpfs)");
        std::process::exit(2);
    }
    let started = Instant::now();
    let kinds: Vec<String> = if args.only.is_empty() {
        KINDS.iter().map(|k| k.to_string()).collect()
    } else {
        args.only.clone()
    };
    println!(
        "chaos: seed {} (replay: scripts/chaos --seed {}{}), budget {} s",
        args.seed,
        args.seed,
        if args.quick { " --quick" } else { "" },
        args.budget.as_secs()
    );
    let mut world = World::new(std::fs::canonicalize(&args.strata).expect("the strata binary"));
    println!(
        "chaos: scratch {}, S3 {}, registry {}",
        world.root.display(),
        world.s3.endpoint(),
        world.registry.endpoint()
    );
    let refs = references(&mut world);
    println!(
        "chaos: reference builds done ({} + {} listing lines), `cache prune` {}, `cache verify` {}",
        refs.main.len(),
        refs.odd.len(),
        if refs.prune { "present" } else { "absent" },
        if refs.verify { "present" } else { "absent" }
    );

    if args.references {
        for line in refs.main.iter().chain(&refs.odd) {
            println!("{line}");
        }
        let _ = std::fs::remove_dir_all(&world.root);
        return;
    }
    let mut done: Vec<Done> = Vec::new();
    let mut slowest = Duration::from_secs(15);
    let numbers: Box<dyn Iterator<Item = u64>> = match args.trial {
        Some(n) => Box::new(std::iter::once(n)),
        None => Box::new(0..),
    };
    for n in numbers {
        if args.max_trials.is_some_and(|m| done.len() as u64 >= m) {
            break;
        }
        // Stop while the longest trial so far would still fit in the budget.
        if args.trial.is_none() && started.elapsed() + slowest > args.budget {
            break;
        }
        let kind = kinds[((n + args.seed) % kinds.len() as u64) as usize].clone();
        let t0 = Instant::now();
        let mut trial = Trial::new(&mut world, &refs, args.seed, n);
        trial.run(&kind);
        let secs = t0.elapsed();
        slowest = slowest.max(secs);
        let d = Done {
            n,
            kind: kind.clone(),
            variant: trial.variant.join("; "),
            failures: trial.failures,
            secs: secs.as_secs_f64(),
        };
        println!(
            "trial {:>3} {:<13} {:>5.1}s {}  {}",
            d.n,
            d.kind,
            d.secs,
            if d.failures.is_empty() {
                "ok  "
            } else {
                "FAIL"
            },
            d.variant
        );
        for f in &d.failures {
            println!("            - {f}");
        }
        if d.failures.is_empty() {
            remove_trial_dirs(&world, n);
        }
        done.push(d);
    }
    let report = summary(&args, &world, &refs, &done, started.elapsed());
    println!("{report}");
    if let Some(path) = &args.report {
        let _ = std::fs::write(path, &report);
    }
    let failed = done.iter().any(|d| !d.failures.is_empty());
    if !failed && checks::leaked_mounts(&world, &[]).is_empty() {
        let _ = std::fs::remove_dir_all(&world.root);
    } else {
        println!("chaos: kept {} for inspection", world.root.display());
    }
    // The servers stop when the world is dropped.
    drop(world);
    std::process::exit(if failed { 1 } else { 0 });
}

/// Fresh builds of both pipelines, with no remote: what every trial's `verify` must print.
fn references(world: &mut World) -> References {
    let salt = pipelines::REFERENCE_SALT;
    let marker = world.marker.clone();
    let mut listing = |name: &str, yaml: String| {
        let ws = world.workspace(&format!("reference-{name}"), yaml.as_bytes());
        let cache = world.root.join(format!("reference-{name}-cache"));
        let out = world.run(&ws, &cache, None, Duration::from_secs(300));
        let lines = out.output("verify");
        if out.code != Some(0) || lines.is_empty() {
            // A panic unwinds, so the servers are stopped.
            panic!(
                "chaos: the reference build of `{name}` failed: {}",
                out.describe()
            );
        }
        lines
    };
    let main = listing("main", pipelines::main(salt, &marker));
    let odd = listing("odd", pipelines::odd(salt, &marker));
    let has = |command: &str| {
        std::process::Command::new(&world.strata)
            .args(["cache", command, "--help"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let prune = has("prune");
    let verify = has("verify");
    References {
        main,
        odd,
        prune,
        verify,
    }
}

fn remove_trial_dirs(world: &World, n: u64) {
    let prefix = format!("t{n}-");
    let remote = format!("remote-t{n}");
    if !checks::leaked_mounts(world, &[]).is_empty() {
        return;
    }
    for e in std::fs::read_dir(&world.root)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) || name == remote {
            let _ = if e.path().is_dir() {
                std::fs::remove_dir_all(e.path())
            } else {
                std::fs::remove_file(e.path())
            };
        }
    }
}

fn summary(args: &Args, world: &World, refs: &References, done: &[Done], wall: Duration) -> String {
    let mut by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for d in done {
        let e = by_kind.entry(&d.kind).or_default();
        e.0 += 1;
        if !d.failures.is_empty() {
            e.1 += 1;
        }
    }
    let mut s = String::new();
    s.push_str(&format!(
        "\n## Campaign: seed {}, {} trials in {:.0} s ({})\n\n",
        args.seed,
        done.len(),
        wall.as_secs_f64(),
        if args.quick { "--quick" } else { "full" }
    ));
    s.push_str(&format!(
        "strata: {}; cgroups looked for under {}\n\n",
        world.strata.display(),
        checks::cgroup_places()
    ));
    s.push_str("| kind | trials | passed | failed |\n|---|---:|---:|---:|\n");
    for kind in KINDS {
        let (t, f) = by_kind.get(kind).copied().unwrap_or_default();
        let note = if *kind == "kill-prune" && !refs.prune {
            " (not covered: no `strata cache prune` in this build)"
        } else {
            ""
        };
        s.push_str(&format!("| {kind}{note} | {t} | {} | {f} |\n", t - f));
    }
    let failed: Vec<&Done> = done.iter().filter(|d| !d.failures.is_empty()).collect();
    s.push_str(&format!(
        "\n{} of {} trials failed.\n",
        failed.len(),
        done.len()
    ));
    for d in failed {
        s.push_str(&format!(
            "\n- trial {} `{}` ({}): replay `scripts/chaos --seed {} --only {} --trial {}`\n",
            d.n, d.kind, d.variant, args.seed, d.kind, d.n
        ));
        for f in &d.failures {
            s.push_str(&format!("  - {f}\n"));
        }
    }
    s
}
