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
    std::time::Duration::try_from_secs_f64(seconds).map_err(|_| {
        format!("{s:?} is longer than any timeout can be; use seconds or minutes, e.g. 10s or 2m")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_in_milliseconds_seconds_and_minutes() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    /// A value no Duration holds is refused with a message, never a panic.
    #[test]
    fn a_duration_too_long_or_malformed_is_an_error_not_a_panic() {
        for bad in [
            "99999999999999999999999s",
            "1e400s",
            "-5s",
            "",
            "10h",
            "1.2.3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
