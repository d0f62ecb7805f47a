//! A bounded replay guard: each (researcher, nonce) is accepted once within the clock-skew window.

use std::collections::{HashMap, VecDeque};

use witmed_crypto::PublicKey;
use witmed_protocol::wire::MAX_CLOCK_SKEW_SECONDS;

/// Why a request was not fresh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("query signed at {issued_at} is outside the {MAX_CLOCK_SKEW_SECONDS} s window around the node's clock ({now}); check the clock and sign again")]
    Stale { issued_at: i64, now: i64 },
    #[error("this signed query was already received (replay); sign a new request to ask again")]
    Replayed,
    #[error("too many recent queries to remember; try again in a few minutes")]
    Full,
}

/// Remembers nonces seen within the window, at most `capacity` of them.
#[derive(Debug)]
pub struct Guard {
    capacity: usize,
    seen: HashMap<(PublicKey, [u8; 16]), i64>,
    order: VecDeque<((PublicKey, [u8; 16]), i64)>,
}

impl Guard {
    /// A guard remembering at most `capacity` nonces.
    pub fn new(capacity: usize) -> Guard {
        Guard {
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Accepts a request once; refuses stale times and repeated nonces.
    pub fn check(
        &mut self,
        signer: PublicKey,
        nonce: [u8; 16],
        issued_at: i64,
        now: i64,
    ) -> Result<(), Error> {
        if (issued_at - now).abs() > MAX_CLOCK_SKEW_SECONDS {
            return Err(Error::Stale { issued_at, now });
        }
        self.forget_before(now - 2 * MAX_CLOCK_SKEW_SECONDS);
        let key = (signer, nonce);
        if self.seen.contains_key(&key) {
            return Err(Error::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(Error::Full);
        }
        self.seen.insert(key, issued_at);
        self.order.push_back((key, now));
        Ok(())
    }

    /// Entries older than `cutoff` can no longer pass the freshness check, so they need not be kept.
    fn forget_before(&mut self, cutoff: i64) {
        while let Some((key, at)) = self.order.front().copied() {
            if at >= cutoff {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        PublicKey::from_bytes([1; 32])
    }

    #[test]
    fn accepts_once_refuses_replays_and_stale_times() {
        let mut g = Guard::new(10);
        assert_eq!(g.check(key(), [1; 16], 100, 100), Ok(()));
        assert_eq!(g.check(key(), [1; 16], 100, 101), Err(Error::Replayed));
        assert_eq!(
            g.check(key(), [2; 16], 100, 100 + MAX_CLOCK_SKEW_SECONDS + 1),
            Err(Error::Stale {
                issued_at: 100,
                now: 401
            })
        );
    }

    #[test]
    fn stays_bounded_and_forgets_old_nonces() {
        let mut g = Guard::new(2);
        g.check(key(), [1; 16], 0, 0).unwrap();
        g.check(key(), [2; 16], 0, 0).unwrap();
        assert_eq!(g.check(key(), [3; 16], 0, 0), Err(Error::Full));
        let later = 3 * MAX_CLOCK_SKEW_SECONDS;
        assert_eq!(g.check(key(), [3; 16], later, later), Ok(()));
        assert!(g.seen.len() <= 2);
    }
}
