//! The `weir` command line.
//!
//! - `weir serve [--config FILE]`: the broker with its native listener, on the embedded default
//!   (segment storage under `./weir-data`) when there is no config; stops gracefully on
//!   SIGINT/SIGTERM (stop accepting, finish in-flight requests, flush logs, exit 0).
//! - `weir inspect [--backend segment|sled] [DATA_DIR]`: open a data directory (running
//!   recovery, as a start would) and describe every log in it.
//! - `weir topic|produce|consume|group ... [--broker ADDR]`: a client of a running broker
//!   ([`cli`]).

// Weir's shipped code has no unsafe code (the workspace denies it; only a benchmark's calls
// into librdkafka are allowed it).
#![forbid(unsafe_code)]

mod bench;
mod cli;

/// mimalloc instead of glibc's malloc: the broker and its clients allocate and free batch-sized
/// buffers (100 KiB – 1 MiB) at a high rate, which glibc serves with fresh pages from the
/// kernel (page faults and zeroing showed up as ~15% of the client's CPU in `weir bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use weir::config::Config;
use weir::server::kafka::{KafkaServer, KafkaServerConfig};
use weir::server::native::{NativeServer, NativeServerConfig};
use weir::{open_storage, Backend, Broker, LogConfig, StorageConfig};

/// Weir: an event streaming platform. Run a broker, or talk to one.
#[derive(Debug, Parser)]
#[command(name = "weir", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (segment storage under ./weir-data when there is no config).
    Serve {
        /// A weir.toml (every key is documented in weir.example.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Open a data directory (running recovery) and list its logs, metadata and group offsets.
    Inspect {
        /// segment or sled.
        #[arg(long, default_value = "segment")]
        backend: String,
        /// The data directory.
        #[arg(default_value = "./weir-data")]
        data_dir: PathBuf,
    },
    /// Create, list, describe and delete topics.
    Topic {
        #[command(flatten)]
        broker: cli::BrokerArg,
        #[command(subcommand)]
        cmd: cli::TopicCmd,
    },
    /// Write stdin lines as records.
    Produce {
        #[command(flatten)]
        broker: cli::BrokerArg,
        #[command(flatten)]
        cmd: cli::ProduceCmd,
    },
    /// Write records to stdout.
    Consume {
        #[command(flatten)]
        broker: cli::BrokerArg,
        #[command(flatten)]
        cmd: cli::ConsumeCmd,
    },
    /// Load a broker (remote with --broker, else embedded) and report rates and latencies.
    Bench(bench::BenchCmd),
    /// List, describe and reset consumer groups.
    Group {
        #[command(flatten)]
        broker: cli::BrokerArg,
        #[command(subcommand)]
        cmd: cli::GroupCmd,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Inspect { backend, data_dir } => inspect(&backend, data_dir),
        Command::Topic { broker, cmd } => client(cli::topic(broker.broker, cmd)),
        Command::Produce { broker, cmd } => client(cli::produce(broker.broker, cmd)),
        Command::Consume { broker, cmd } => client(cli::consume(broker.broker, cmd)),
        Command::Group { broker, cmd } => client(cli::group(broker.broker, cmd)),
        Command::Bench(cmd) => client(bench::run(cmd)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
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
        let kafka = match config.listeners.kafka {
            Some(addr) => {
                let kafka_config = KafkaServerConfig {
                    advertised: config.listeners.kafka_advertised()?,
                    max_frame_bytes: config.server.max_frame_bytes,
                    max_connections: config.server.max_connections,
                    idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
                    ..KafkaServerConfig::default()
                };
                let server = KafkaServer::bind(addr, broker.clone(), kafka_config)
                    .await
                    .map_err(|e| anyhow::anyhow!("binding the kafka listener to {addr}: {e}"))?;
                println!("weir: kafka listener on {}", server.local_addr());
                Some(server)
            }
            None => None,
        };
        use std::io::Write;
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        println!("weir: shutting down");
        // Groups answer the joins they hold first: connections drain without waiting for a
        // rebalance.
        broker.begin_shutdown().await;
        if let Some(server) = native {
            server.shutdown().await;
        }
        if let Some(server) = kafka {
            server.shutdown().await;
        }
        broker.shutdown().await?;
        println!("weir: stopped");
        anyhow::Ok(())
    })
}

fn inspect(backend: &str, data_dir: PathBuf) -> anyhow::Result<()> {
    let cfg = StorageConfig {
        backend: backend.parse::<Backend>().map_err(anyhow::Error::msg)?,
        data_dir,
    };
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
            if let Some(bytes) = storage.group_state(&group).await? {
                match weir::broker::group_record::GroupRecord::decode(&bytes) {
                    Ok(r) if r.members.is_empty() && r.consumer.is_some() => {
                        let c = r.consumer.unwrap_or_default();
                        println!(
                            "  group {group}: consumer protocol, group epoch {}, assignment \
                             epoch {} ({}), {} members",
                            c.group_epoch,
                            c.assignment_epoch,
                            c.assignor,
                            c.members.len()
                        );
                        for (id, m) in &c.members {
                            let parts: usize = m.assigned.values().map(|p| p.len()).sum();
                            println!(
                                "  group {group}: member {id} at epoch {}, {parts} partitions{}",
                                m.epoch,
                                if m.classic.is_some() {
                                    " (classic protocol)"
                                } else {
                                    ""
                                }
                            );
                        }
                    }
                    Ok(r) => println!(
                        "  group {group}: generation {}{}, {} members{}",
                        r.generation,
                        if r.rebalancing { " (rebalancing)" } else { "" },
                        r.members.len(),
                        r.protocol
                            .map_or(String::new(), |p| format!(", protocol {p}"))
                    ),
                    Err(e) => println!("  group {group}: unreadable record ({e})"),
                }
            }
            for (tp, off) in storage.fetch_offsets(&group).await? {
                println!("  group {group}: {tp} committed at {}", off.offset);
            }
        }
        storage.close().await?;
        anyhow::Ok(())
    })
}
