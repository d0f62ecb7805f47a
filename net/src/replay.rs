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
        if !within_skew(issued_at, now) {
            return Err(Error::Stale { issued_at, now });
        }
        self.forget_before(now.saturating_sub(2 * MAX_CLOCK_SKEW_SECONDS));
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

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
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

/// Whether `issued_at` is at most [`MAX_CLOCK_SKEW_SECONDS`] from `now`, for any two i64
/// (the distance is taken as u64, so no subtraction can overflow).
pub fn within_skew(issued_at: i64, now: i64) -> bool {
    issued_at.abs_diff(now) <= MAX_CLOCK_SKEW_SECONDS.unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn the_extremes_of_i64_are_refused_as_stale_not_overflowed() {
        let mut g = Guard::new(10);
        for (issued_at, now) in [
            (i64::MIN, 0),
            (i64::MAX, 0),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
        ] {
            assert_eq!(
                g.check(key(), [9; 16], issued_at, now),
                Err(Error::Stale { issued_at, now })
            );
        }
        assert_eq!(g.check(key(), [9; 16], i64::MIN, i64::MIN), Ok(()));
        assert_eq!(g.check(key(), [8; 16], i64::MAX, i64::MAX), Ok(()));
        assert!(g.len() <= 2);
    }

    proptest! {
        /// Any pair of times is either accepted or refused, never a panic, and
        /// accepted exactly when it is within the window.
        #[test]
        fn any_time_is_decided_without_panic(issued_at in any::<i64>(), now in any::<i64>(), nonce in any::<[u8; 16]>()) {
            let mut g = Guard::new(4);
            let within = (i128::from(issued_at) - i128::from(now)).abs() <= i128::from(MAX_CLOCK_SKEW_SECONDS);
            let result = g.check(key(), nonce, issued_at, now);
            prop_assert_eq!(result.is_ok(), within);
            prop_assert_eq!(within_skew(issued_at, now), within);
            prop_assert!(g.len() <= 4);
        }

        /// Near the window's edges too (random i64s rarely land there).
        #[test]
        fn the_window_edges_are_exact(now in any::<i64>(), offset in -2 * MAX_CLOCK_SKEW_SECONDS..=2 * MAX_CLOCK_SKEW_SECONDS) {
            let issued_at = now.saturating_add(offset);
            let within = (i128::from(issued_at) - i128::from(now)).abs() <= i128::from(MAX_CLOCK_SKEW_SECONDS);
            prop_assert_eq!(within_skew(issued_at, now), within);
            let mut g = Guard::new(4);
            prop_assert_eq!(g.check(key(), [0; 16], issued_at, now).is_ok(), within);
        }
    }
}
