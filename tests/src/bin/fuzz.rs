//! The stable fuzz driver: `fuzz [--seconds S] [--inputs N] [--seed X] [--save DIR] [TARGET...]`
//! (both budgets given: whichever is reached first)
//! (also `--list`, and `--dump-seeds DIR TARGET` for cargo-fuzz corpora)
//! runs each target (all by default) for its budget and ends with
//! `N targets, M inputs, F failures`; the exit status is 1 when anything failed.
#![allow(clippy::print_stdout)] // a command-line tool reports on stdout

use std::time::Duration;

use mesh_tests::fuzz::driver::{escape, run, Budget};
use mesh_tests::fuzz::{all, by_name};

fn main() {
    let (mut seconds, mut count) = (None, None);
    let mut seed = 0x5eed_u64;
    let mut save = None;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--seconds" => seconds = Some(Duration::from_secs_f64(value().parse().unwrap_or(10.0))),
            "--inputs" => count = Some(value().parse().unwrap_or(1000)),
            "--seed" => seed = value().parse().unwrap_or(seed),
            "--save" => save = Some(std::path::PathBuf::from(value())),
            "--dump-seeds" => {
                // `--dump-seeds DIR TARGET`: the target's seeds as files, for cargo-fuzz.
                let dir = std::path::PathBuf::from(value());
                let target = by_name(&value()).unwrap_or_else(|| std::process::exit(2));
                let _ = std::fs::create_dir_all(&dir);
                for (i, seed) in (target.seeds)().iter().enumerate() {
                    let _ = std::fs::write(dir.join(format!("seed-{i}")), seed);
                }
                return;
            }
            "--list" => {
                for target in all() {
                    println!("{}", target.name);
                }
                return;
            }
            name => names.push(name.to_owned()),
        }
    }
    let budget = match (count, seconds) {
        (Some(n), Some(limit)) => Budget::Either(n, limit),
        (Some(n), None) => Budget::Inputs(n),
        (None, limit) => Budget::Time(limit.unwrap_or(Duration::from_secs(10))),
    };
    let targets = if names.is_empty() {
        all()
    } else {
        names
            .iter()
            .map(|n| {
                by_name(n).unwrap_or_else(|| {
                    eprintln!("no target `{n}`; --list shows them");
                    std::process::exit(2)
                })
            })
            .collect()
    };
    let (mut inputs, mut failures) = (0u64, 0usize);
    for target in &targets {
        let report = run(target, budget, seed, save.as_deref());
        println!("{}: {} inputs, {} failures", target.name, report.inputs, report.failures.len());
        for failure in &report.failures {
            println!("  FAIL {}\n    input: {}", failure.message.replace('\n', "\n    "), escape(&failure.input));
        }
        inputs += report.inputs;
        failures += report.failures.len();
    }
    println!("{} targets, {inputs} inputs, {failures} failures", targets.len());
    if failures > 0 {
        std::process::exit(1);
    }
}
