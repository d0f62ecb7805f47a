//! How the CLI names things a person reads: times as ISO 8601 UTC, vector entries by their bin edges or probability.

use witmed_protocol::query::{Aggregate, Query};

/// `2026-11-30T16:00:00Z` for unix seconds; the raw number when out of range.
pub fn utc(unix_seconds: i64) -> String {
    chrono::DateTime::from_timestamp(unix_seconds, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix_seconds.to_string())
}

/// One label per entry of a vector answer: `[70, 85)` for a histogram bin
/// (the last bin closed, `]`), `p50` for a quantile; `[i]` when the query
/// does not say.
pub fn entries(query: &Query, count: usize) -> Vec<String> {
    match &query.aggregate {
        Aggregate::Histogram { edges } if edges.len() == count + 1 => histogram_bins(edges),
        Aggregate::Quantiles { probabilities, .. } if probabilities.len() == count => probabilities
            .iter()
            .map(|p| format!("p{}", p * 100.0))
            .collect(),
        _ => (0..count).map(|i| format!("[{i}]")).collect(),
    }
}

/// Bin i holds [edges[i], edges[i+1]); the last bin also holds its upper edge.
fn histogram_bins(edges: &[f64]) -> Vec<String> {
    let last = edges.len() - 2;
    edges
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let close = if i == last { ']' } else { ')' };
            format!("[{}, {}{close}", w[0], w[1])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_are_named_by_their_edges() {
        assert_eq!(
            histogram_bins(&[40.0, 70.0, 85.5, 120.0]),
            vec!["[40, 70)", "[70, 85.5)", "[85.5, 120]"]
        );
    }

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
