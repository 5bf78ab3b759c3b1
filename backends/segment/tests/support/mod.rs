//! What the kill -9 tests share: running this test binary as a child that writes and prints
//! one line per acknowledged write, and killing it at a random moment.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `<this test binary> --child DIR SEED`, waits for its first line, lets it run `run_ms`
/// more, kills it with SIGKILL and returns the lines it printed completely (a final line cut by
/// the kill is dropped).
///
/// # Panics
/// When the child cannot be spawned or prints nothing within 30 s (it is killed first).
pub fn run_and_kill(dir: &Path, child_seed: u64, run_ms: u64, what: &str) -> Vec<String> {
    let exe = std::env::current_exe().expect("current exe");
    let mut proc = Command::new(exe)
        .arg("--child")
        .arg(dir)
        .arg(child_seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = proc.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(e) => {
            // Never leave a writer running behind a failed test.
            let _ = proc.kill();
            let _ = proc.wait();
            panic!("{what}: child acknowledged nothing: {e}");
        }
    };
    let mut lines = vec![first];
    std::thread::sleep(Duration::from_millis(run_ms));
    proc.kill().expect("kill -9");
    proc.wait().expect("reap");
    reader.join().expect("reader");
    lines.extend(rx.try_iter());
    // `lines()` yields a final unterminated line too; a line cut by the kill may name a write
    // the child had not finished, so it is dropped.
    lines.pop();
    lines
}

/// `Some((DIR, SEED))` when this process runs as the child (`--child DIR SEED`).
///
/// # Panics
/// On `--child` without a directory and a numeric seed.
pub fn child_args() -> Option<(std::path::PathBuf, u64)> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--child") {
        return None;
    }
    let dir = args.get(2).expect("--child DIR SEED");
    let seed = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .expect("--child DIR SEED");
    Some((dir.into(), seed))
}

/// Kills to survive: `WEIR_KILL9_ITERATIONS`, 50 by default.
pub fn iterations() -> usize {
    std::env::var("WEIR_KILL9_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}
