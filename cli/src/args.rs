//! Arguments several command groups share: the node's data dir and durations like `10s`.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The node's own directory (keys, config, store); or set WITMED_NODE_DIR.
    /// Not WITMED_DATA_DIR, which names the shared data sets.
    #[arg(long, env = "WITMED_NODE_DIR")]
    pub data_dir: PathBuf,
}

/// Parses `10s`, `1500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s or m")),
    };
    Ok(std::time::Duration::from_secs_f64(seconds))
}
