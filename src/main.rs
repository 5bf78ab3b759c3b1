//! The `weir` command line. Until the broker lands, it offers `weir inspect`: open a data
//! directory (running recovery, as a broker start would) and describe every log in it.

use std::process::ExitCode;

use weir::{open_storage, Backend, LogConfig, StorageConfig};

const USAGE: &str =
    "usage: weir inspect [--backend segment|sled] [DATA_DIR]   (default ./weir-data)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("inspect") => match inspect(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
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
