//! `ironplant import FILE`: backfill history into `<data-dir>/historian` with
//! `ironplant_ingest::import` (formats, checks and durability are documented there). Offline:
//! it takes the data directory's process lock, so the platform must be stopped.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use ironplant_historian::Historian;
use ironplant_ingest::import::{import_file, ImportOptions};

pub const AFTER_HELP: &str = "\
Examples:
  ironplant query --from -7d --format csv --output line1.csv \\
      --tag acme/lyon/bottling/line1/filler/plc/speed_actual
  ironplant import line1.csv --data-dir /var/lib/ironplant
  ironplant import logger-2025.parquet --skip-bad

Accepted: what `ironplant query` exports (CSV `tag,ts,value,quality`, or Parquet with columns
tag, ts, value, value_text, quality), and wide CSV `ts,<tag path>,<tag path>,...` (one column
per tag, every value Good). Times are RFC 3339 with an offset (2026-12-07T10:00:00Z). The file
is checked first: bad rows are listed as FILE:LINE and nothing is imported unless --skip-bad.
A range a tag already has history in is refused unless --allow-overlap. Stop the platform
first: import opens the historian directly.";

#[derive(Args)]
pub struct ImportArgs {
    /// The file to import: .csv or .parquet.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Skip bad rows (each is reported) instead of refusing the whole file.
    #[arg(long)]
    skip_bad: bool,
    /// Import even where a tag already has history in the file's time range (the historian
    /// keeps both: duplicates).
    #[arg(long)]
    allow_overlap: bool,
    /// The platform's data directory (its historian is DIR/historian).
    #[arg(long, default_value = "ironplant-data", value_name = "DIR")]
    data_dir: PathBuf,
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    if !args.file.is_file() {
        anyhow::bail!(
            "{} is not a file; give a .csv or .parquet file (e.g. one written by ironplant query --output)",
            args.file.display()
        );
    }
    ironplant_server::private_dir::create(&args.data_dir)?;
    let _lock = ironplant_server::datadir::lock_process(&args.data_dir, "import")?;
    let cfg = ironplant_runtime::historian_config(&args.data_dir, &Default::default());
    let historian = Historian::open(cfg).with_context(|| {
        format!(
            "cannot open the historian in {}",
            args.data_dir.join("historian").display()
        )
    })?;
    let opts = ImportOptions {
        skip_bad: args.skip_bad,
        allow_overlap: args.allow_overlap,
        progress: true,
    };
    let result = import_file(&historian, &args.file, &opts);
    // Writes what was acknowledged into chunks and releases the files, also after an error.
    historian.close();
    let report = result?;
    for b in &report.bad {
        eprintln!("skipped {}:{}: {}", args.file.display(), b.line, b.message);
    }
    if report.skipped > report.bad.len() as u64 {
        eprintln!(
            "skipped {} more bad row(s)",
            report.skipped - report.bad.len() as u64
        );
    }
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
