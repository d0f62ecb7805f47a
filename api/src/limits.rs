//! Request rates per source address and per patient key, in fixed one-minute windows, with a bounded memory.
//!
//! When the memory is full of clients still inside their window, new
//! clients are refused (fail closed) rather than letting anyone's count be
//! forgotten.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Clients remembered at once.
pub const CAPACITY: usize = 16_384;

/// A fixed-window counter per client.
pub struct RateLimit<K> {
    per_minute: u32,
    windows: Mutex<HashMap<K, (i64, u32)>>,
}

impl<K: Eq + Hash + Clone> RateLimit<K> {
    /// At most `per_minute` requests per client per minute.
    pub fn new(per_minute: u32) -> Self {
        RateLimit {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `client` at `now`; false when over the limit or full.
    pub fn allow(&self, client: &K, now: i64) -> bool {
        let minute = now.div_euclid(60);
        let mut windows = witmed_node::locks::lock(&self.windows);
        if !windows.contains_key(client) && windows.len() >= CAPACITY {
            windows.retain(|_, (window, _)| *window == minute);
            if windows.len() >= CAPACITY {
                return false;
            }
        }
        let entry = windows.entry(client.clone()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_quota_per_minute_and_no_more() {
        let limit = RateLimit::new(3);
        assert!((0..3).all(|_| limit.allow(&"a", 120)));
        assert!(!limit.allow(&"a", 121));
        assert!(limit.allow(&"b", 121), "another client is not affected");
        assert!(limit.allow(&"a", 180), "a new minute, a new quota");
    }

    #[test]
    fn the_extremes_of_time_do_not_panic() {
        let limit = RateLimit::new(1);
        assert!(limit.allow(&1u8, i64::MIN));
        assert!(limit.allow(&1u8, i64::MAX));
        assert!(!limit.allow(&1u8, i64::MAX));
    }
}
