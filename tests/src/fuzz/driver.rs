//! The stable driver: runs a target over its seeds and saved corpus, then over mutants of them
//! drawn with a seeded PRNG, catching panics as failures, minimizing each failing input and
//! stopping the process on an input that runs past the hang limit.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use super::mutate::{hash, mutate};
use super::rng::Rng;
use super::Target;

/// How long a target may run.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Inputs(u64),
    Time(Duration),
    /// Whichever comes first (a long run: so many inputs, or so long).
    Either(u64, Duration),
}

/// A failing input, minimized, and what failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub input: Vec<u8>,
    pub message: String,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub inputs: u64,
    /// Distinct failures (by panic location and first message line).
    pub failures: Vec<Failure>,
}

/// One input taking more CPU time than this is a hang: the process reports it and exits.
pub const HANG_LIMIT: Duration = Duration::from_secs(20);
/// Distinct failures after which a target stops.
const MAX_FAILURES: usize = 8;
/// Runs spent minimizing one failure.
const MINIMIZE_RUNS: usize = 4000;

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            let payload = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{location}: {payload}")));
        }));
    });
}

/// Runs one input; the panic message when a property failed.
pub fn run_one(target: &Target, input: &[u8]) -> Result<(), String> {
    install_hook();
    LAST_PANIC.with(|p| *p.borrow_mut() = None);
    match catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
        Ok(()) => Ok(()),
        Err(_) => Err(LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panic".to_owned())),
    }
}

/// What makes two failures the same: where the panic was and the first words of its message
/// (digits dropped), so one bug found through many inputs counts once.
fn signature(message: &str) -> String {
    let first = message.lines().next().unwrap_or("");
    let (location, text) = first.split_once(": ").unwrap_or((first, ""));
    let words: Vec<String> =
        text.split_whitespace().take(4).map(|w| w.chars().filter(|c| !c.is_ascii_digit()).collect()).collect();
    format!("{location}: {}", words.join(" "))
}

/// Shrinks a failing input while it still fails the same way (delta debugging on bytes).
pub fn minimize(target: &Target, input: &[u8], message: &str) -> Vec<u8> {
    let wanted = signature(message);
    let location = wanted.split(": ").next().unwrap_or("").to_owned();
    let still_fails = |candidate: &[u8]| run_one(target, candidate).err().is_some_and(|m| m.starts_with(&location));
    let mut best = input.to_vec();
    let mut runs = 0;
    let mut chunk = best.len() / 2;
    while chunk >= 1 && runs < MINIMIZE_RUNS {
        let mut at = 0;
        let mut shrunk = false;
        while at < best.len() && runs < MINIMIZE_RUNS {
            let end = (at + chunk).min(best.len());
            let mut candidate = best[..at].to_vec();
            candidate.extend_from_slice(&best[end..]);
            runs += 1;
            if still_fails(&candidate) {
                best = candidate;
                shrunk = true;
            } else {
                at += chunk;
            }
        }
        if !shrunk {
            chunk /= 2;
        }
    }
    best
}

/// The input in flight, for the hang watchdog.
struct InFlight {
    target: &'static str,
    input: Vec<u8>,
    /// Counts inputs: the watchdog tells a new input from one still running.
    number: u64,
    running: bool,
}

/// The CPU time this process has used (user + system), or failing that the time since an
/// arbitrary start. A hang is measured in CPU time: a run that is paused (SIGSTOP) or starved
/// by other work on the machine is not hanging.
fn process_time() -> Duration {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    match (fields.get(11), fields.get(12)) {
        // utime and stime, in clock ticks of 10 ms.
        (Some(user), Some(system)) => Duration::from_millis((user + system) * 10),
        _ => EPOCH.get_or_init(Instant::now).elapsed(),
    }
}

/// Inputs run by the current target, for the hang report.
static RUN_INPUTS: AtomicU64 = AtomicU64::new(0);

static IN_FLIGHT: Mutex<InFlight> = Mutex::new(InFlight { target: "", input: Vec::new(), number: 0, running: false });

#[allow(clippy::print_stdout)] // the hang's report line, in the driver's output format
fn watchdog(save: Option<std::path::PathBuf>) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let mut watched: Option<(u64, Duration)> = None;
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let Ok(current) = IN_FLIGHT.lock() else { return };
            let now = process_time();
            let started = match watched {
                Some((number, started)) if current.running && number == current.number => started,
                _ => {
                    watched = current.running.then_some((current.number, now));
                    now
                }
            };
            if now.saturating_sub(started) > HANG_LIMIT {
                eprintln!("HANG in {} after {:?} on input {}", current.target, HANG_LIMIT, escape(&current.input));
                println!("{}: {} inputs, 1 failures (hang)", current.target, RUN_INPUTS.load(Ordering::SeqCst));
                if let Some(dir) = &save {
                    let _ = std::fs::create_dir_all(dir);
                    let name = format!("{}-hang-{:016x}", current.target, hash(&current.input));
                    let _ = std::fs::write(dir.join(name), &current.input);
                }
                std::process::exit(3);
            }
        });
    });
}

/// Runs a target within a budget, from `seed`.
pub fn run(target: &Target, budget: Budget, seed: u64, save: Option<&std::path::Path>) -> Report {
    watchdog(save.map(std::path::Path::to_path_buf));
    let start = Instant::now();
    let mut rng = Rng::new(seed ^ hash(target.name.as_bytes()));
    let mut seeds: Vec<Vec<u8>> = (target.seeds)();
    seeds.extend(super::corpus(target.name));
    seeds.push(Vec::new());
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    let mut report = Report::default();
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let done = |report: &Report| match budget {
        Budget::Inputs(n) => report.inputs >= n,
        Budget::Time(limit) => start.elapsed() >= limit,
        Budget::Either(n, limit) => report.inputs >= n || start.elapsed() >= limit,
    };
    let mut i = 0usize;
    while !done(&report) && report.failures.len() < MAX_FAILURES {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else {
            let base = &pool[rng.below(pool.len())];
            mutate(&mut rng, base, &seeds, target.tokens)
        };
        i += 1;
        if let Ok(mut current) = IN_FLIGHT.lock() {
            let number = current.number.wrapping_add(1);
            *current = InFlight { target: target.name, input: input.clone(), number, running: true };
        }
        let outcome = run_one(target, &input);
        if let Ok(mut current) = IN_FLIGHT.lock() {
            current.running = false;
        }
        report.inputs += 1;
        RUN_INPUTS.store(report.inputs, Ordering::SeqCst);
        match outcome {
            Ok(()) => {
                // No coverage feedback: keep some mutants so edits can stack.
                if rng.one_in(16) && input.len() < 1 << 16 {
                    if pool.len() >= 512 {
                        let evict = seeds.len() + rng.below(pool.len() - seeds.len());
                        pool[evict] = input;
                    } else {
                        pool.push(input);
                    }
                }
            }
            Err(message) => {
                let key = signature(&message);
                if seen.insert(key, ()).is_none() {
                    let small = minimize(target, &input, &message);
                    let message = run_one(target, &small).err().unwrap_or(message);
                    if let Some(dir) = save {
                        let _ = std::fs::create_dir_all(dir);
                        let _ = std::fs::write(dir.join(format!("{}-{:016x}", target.name, hash(&small))), &small);
                    }
                    report.failures.push(Failure { input: small, message });
                }
            }
        }
    }
    report
}

/// An input as a Rust byte-string literal (for regression tests).
pub fn escape(input: &[u8]) -> String {
    let shown: String = input.iter().take(600).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
    let more = if input.len() > 600 { format!("... ({} bytes)", input.len()) } else { String::new() };
    format!("b\"{shown}\"{more}")
}
