//! The `weir` command line.
//!
//! - `weir serve [--config FILE]`: the broker with its native listener, on the embedded default
//!   (segment storage under `./weir-data`) when there is no config; stops gracefully on
//!   SIGINT/SIGTERM (stop accepting, finish in-flight requests, flush logs, exit 0).
//! - `weir inspect [--backend segment|sled] [DATA_DIR]`: open a data directory (running
//!   recovery, as a start would) and describe every log in it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use weir::config::Config;
use weir::server::native::{NativeServer, NativeServerConfig};
use weir::{open_storage, Backend, Broker, LogConfig, StorageConfig};

const USAGE: &str = "usage:
  weir serve [--config FILE]
  weir inspect [--backend segment|sled] [DATA_DIR]   (default ./weir-data)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("inspect") => inspect(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &[String]) -> anyhow::Result<()> {
    let mut config_path: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => {
                let p = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--config needs a file"))?;
                config_path = Some(p.into());
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let config = Config::load(config_path.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let broker = Broker::start(config.clone()).await?;
        println!(
            "weir: {} storage at {} ({} topics)",
            broker.storage().name(),
            config.data_dir.display(),
            broker.list_topics().len()
        );
        let server_config = NativeServerConfig {
            max_frame_bytes: config.server.max_frame_bytes,
            max_connections: config.server.max_connections,
            idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
            ..NativeServerConfig::default()
        };
        let native = match config.listeners.native {
            Some(addr) => {
                let server = NativeServer::bind(addr, broker.clone(), server_config)
                    .await
                    .map_err(|e| anyhow::anyhow!("binding the native listener to {addr}: {e}"))?;
                println!("weir: native listener on {}", server.local_addr());
                Some(server)
            }
            None => None,
        };
        if let Some(addr) = config.listeners.kafka {
            println!("weir: kafka listener {addr} configured; the Kafka protocol is not built yet");
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        println!("weir: shutting down");
        if let Some(server) = native {
            server.shutdown().await;
        }
        broker.shutdown().await?;
        println!("weir: stopped");
        anyhow::Ok(())
    })
}

fn inspect(args: &[String]) -> anyhow::Result<()> {
    let mut cfg = StorageConfig::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backend" => {
                let b = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--backend needs a value"))?;
                cfg.backend = b.parse::<Backend>().map_err(anyhow::Error::msg)?;
            }
            dir => cfg.data_dir = dir.into(),
        }
    }
    if cfg.backend == Backend::Memory {
        anyhow::bail!("the memory backend has nothing on disk to inspect");
    }
    if !cfg.data_dir.exists() {
        anyhow::bail!("{} does not exist", cfg.data_dir.display());
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let storage = open_storage(&cfg).await?;
        println!("{} storage at {}", storage.name(), cfg.data_dir.display());
        for tp in storage.list_logs().await? {
            let log = storage.open_log(&tp, &LogConfig::default()).await?;
            let o = log.offsets();
            println!(
                "  log {tp}: offsets {}..{} ({} records), {} bytes",
                o.start,
                o.end,
                o.end - o.start,
                o.size_bytes
            );
            log.close().await?;
        }
        for (key, value) in storage.list_metadata().await? {
            println!("  metadata {key}: {} bytes", value.len());
        }
        for group in storage.list_groups().await? {
            for (tp, off) in storage.fetch_offsets(&group).await? {
                println!("  group {group}: {tp} committed at {}", off.offset);
            }
        }
        storage.close().await?;
        anyhow::Ok(())
    })
}
