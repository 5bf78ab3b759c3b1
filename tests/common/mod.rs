//! A `weir serve` child process for the end-to-end tests: started on a config file, its
//! listener addresses read from what it prints, killed when a failing test drops it.

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `weir serve`.
pub struct Server {
    child: Option<Child>,
    /// Its native listener.
    pub native: SocketAddr,
    /// Its Kafka listener.
    pub kafka: SocketAddr,
}

impl Server {
    /// Starts `weir serve` on a config written into `dir`: data under `dir/data`, both
    /// listeners on free ports, then `extra` (more TOML, sections included).
    pub fn in_dir(dir: &Path, extra: &str) -> Server {
        Server::in_dir_at(dir, "127.0.0.1:0", extra)
    }

    /// Like [`Server::in_dir`] with the Kafka listener on `kafka` (a fixed port, so that a
    /// restarted server is where its clients reconnect).
    pub fn in_dir_at(dir: &Path, kafka: &str, extra: &str) -> Server {
        let config = dir.join("weir.toml");
        let data = dir.join("data").display().to_string();
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[listeners]\nnative = \"127.0.0.1:0\"\nkafka = {kafka:?}\n{extra}"
            ),
        )
        .expect("config");
        Server::spawn(&config)
    }

    /// Kills it with SIGKILL and waits for it: nothing of its own shutdown runs.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }

    /// Starts `weir serve --config CONFIG` and waits until both listeners are up. The config
    /// must put both on port 0 (or free ports).
    pub fn spawn(config: &Path) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command.arg("serve").arg("--config").arg(config);
        Server::spawn_command(command)
    }

    /// Like [`Server::spawn`], with every file the server writes limited to `kib` KiB
    /// (`ulimit -f`, with SIGXFSZ ignored): a write past the limit fails with EFBIG, as one on a
    /// full disk fails with ENOSPC. The way to fill a "disk" without mounting one.
    pub fn spawn_with_file_limit(config: &Path, kib: u64) -> Server {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -f {kib} && exec \"$0\" serve --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_weir"))
            .arg(config);
        Server::spawn_command(command)
    }

    fn spawn_command(mut command: Command) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weir serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("server: {line}");
                for (prefix, kind) in [
                    ("weir: native listener on ", 0),
                    ("weir: kafka listener on ", 1),
                ] {
                    if let Some(addr) = line.strip_prefix(prefix) {
                        let _ = tx.send((kind, addr.trim().parse::<SocketAddr>().expect("addr")));
                    }
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            native: SocketAddr::from(([0, 0, 0, 0], 0)),
            kafka: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        for _ in 0..2 {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok((0, a)) => server.native = a,
                Ok((_, a)) => server.kafka = a,
                Err(e) => panic!("the server did not print its listeners: {e}"),
            }
        }
        server
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The most memory it has had resident (`VmHWM`) since it started or since
    /// [`Server::reset_peak_memory`], in bytes.
    pub fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kib * 1024
    }

    /// Starts [`Server::peak_memory`] over from what is resident now (Linux `clear_refs` 5).
    pub fn reset_peak_memory(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").expect("clear_refs");
    }

    /// Stops it with SIGTERM and checks it exits 0.
    pub fn terminate(self) {
        let exit = self.stop();
        assert!(
            exit.success(),
            "weir serve exits 0 on SIGTERM, got {exit:?}"
        );
    }

    /// Stops it with SIGTERM and returns how it exited.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
