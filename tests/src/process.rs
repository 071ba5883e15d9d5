//! Child processes of end-to-end tests (the README's commands, `cargo lambda watch`): started in
//! their own process group with the output kept, stopped with everything they started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running command; dropping it kills it and every process below it, deepest first, with
/// SIGKILL (no shutdown handler runs: `cargo lambda watch`'s own one signals process groups it
/// looked up itself, which has taken down unrelated processes of this machine). When the test
/// is failing, the command's output is printed.
#[derive(Debug)]
pub struct Running {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Running {
    /// Starts `bash -c <script>` in `dir` with `env` added, output to `<log_dir>/<name>.log`.
    pub fn bash(name: &str, script: &str, dir: &Path, env: &[(&str, String)], log_dir: &Path) -> Running {
        use std::os::unix::process::CommandExt;
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log handle");
        let mut command = Command::new("bash");
        command.arg("-c").arg(script).current_dir(dir);
        without_cargo_test_env(&mut command);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .expect("bash starts");
        Running { child, log, name: name.to_owned() }
    }

    /// What the command printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the command already ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut doomed = descendants(self.child.id());
        doomed.reverse();
        doomed.push(self.child.id());
        for pid in doomed {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- output of {} ---\n{}", self.name, self.output());
        }
    }
}

/// `cargo test` gives the test process the test crate's `CARGO_PKG_*`/`CARGO_MANIFEST_*`
/// variables; build scripts read some of them, so a `cargo` started with them would rebuild half
/// the dependency tree. Removes them (keeping the user's `CARGO_HOME`, `CARGO_TARGET_DIR`,
/// `CARGO_BUILD_*` and `CARGO_TERM_*`).
pub fn without_cargo_test_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let set_by_cargo_test = (name.starts_with("CARGO_")
            && !["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&name.as_str())
            && !name.starts_with("CARGO_BUILD_")
            && !name.starts_with("CARGO_TERM_"))
            || name == "OUT_DIR";
        if set_by_cargo_test {
            command.env_remove(&name);
        }
    }
}

/// The processes below `root`, parents before children, read from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`: the command name may hold spaces, so split after `)`.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        index += 1;
    }
    found.remove(0);
    found
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A build directory for another checkout of this workspace, seeded from `from` with every
/// third-party artifact (hard links: instant, no copy) but none of the workspace's own crates
/// or binaries, so that checkout builds those from its own sources and nothing it needs can be
/// left over from this one.
pub fn seeded_target(from: &Path, to: &Path) -> PathBuf {
    let linked = Command::new("cp").arg("-al").arg(from).arg(to).status().is_ok_and(|s| s.success());
    assert!(linked, "hard-link copy of {} into {}", from.display(), to.display());
    for profile in ["debug", "release"] {
        let dir = to.join(profile);
        let _ = std::fs::remove_file(dir.join(".cargo-lock"));
        let _ = std::fs::remove_dir_all(dir.join("incremental"));
        for sub in ["", "deps", ".fingerprint", "build"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = ["mesh", "libmesh", "responses", "libresponses"].iter().any(|p| name.starts_with(p));
                if ours {
                    let path = entry.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
    }
    to.to_path_buf()
}
