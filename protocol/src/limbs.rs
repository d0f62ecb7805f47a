//! Limb encoding of encrypted totals: a value too wide for one TFHE slot travels as several slots whose totals each decode exactly.
//!
//! One ciphertext slot carries a 27-bit signed total of at most
//! [`params::MAX_CONTRIBUTIONS`] shares (`±`[`params::MAX_ABS_TOTAL`], see
//! `witmed_crypto::fhe`). A sum of values in 0..1000 over thousands of
//! patients and a hundred hospitals is far wider, so a share value `v` is
//! written in base `B = 2^19` as `L` limbs: `L - 1` low digits in `[0, B)` and
//! a signed top limb `floor(v / B^(L-1))`, with `v = sum_j limb_j * B^j`.
//!
//! Ciphertexts add slot by slot, so the researcher decrypts one total per
//! limb, `T_j = sum_i limb_ij`, and recombines `sum_j T_j * B^j`, which is the
//! sum of the shares exactly because the encoding is linear. It is exact,
//! and not merely likely, when no slot total wraps:
//! * a low slot's total is in `[0, c (B - 1)]`, and `127 * (2^19 - 1) < 2^26`;
//! * the top slot's total lies in `[S / B^(L-1) - c, S / B^(L-1)]` for a total
//!   `S` of `c` shares (each top limb rounds down by less than one), so it fits
//!   whenever `|S| <= (2^26 - 1 - 127) * B^(L-1)`: [`capacity`].
//!
//! Each slot is a plain integer slot, so anything that works per slot
//! (pairwise masks that cancel in the sum) works on limbs unchanged.
//!
//! How many limbs a query uses depends on the query only ([`Layout::of`]), so
//! every member, the aggregator and the researcher agree on the shape
//! without talking: the widest true total over [`MAX_CONTRIBUTIONS`] members
//! of at most [`MAX_PATIENTS_PER_MEMBER`] patients each must fit in half of
//! the capacity, which leaves the other half for the noise (the share plan
//! checks that the noise fits it but with probability below 1e-9).

use witmed_crypto::fhe::params::{MAX_ABS_TOTAL, MAX_CONTRIBUTIONS, MAX_VALUES};

use crate::query::{Aggregate, Query};

/// Bits per low limb: `127 * (2^19 - 1)` still fits one slot.
pub const LIMB_BITS: u32 = 19;
/// The base of the limb encoding.
pub const BASE: i64 = 1 << LIMB_BITS;
/// Most limbs per value: three carry every `i64` total.
pub const MAX_LIMBS: usize = 3;
/// Most patients whose values one member's share adds up. A member clamps
/// its exact local aggregate to what this many patients can give, before the
/// noise (a 1-Lipschitz map, so the privacy argument is unchanged), so the
/// encoding never has to carry more.
pub const MAX_PATIENTS_PER_MEMBER: i64 = 1 << 18;

// The low limbs of the most contributions must fit one slot.
const _: () = assert!((MAX_CONTRIBUTIONS as i64) * (BASE - 1) <= MAX_ABS_TOTAL);

/// Largest `|total|` of up to [`MAX_CONTRIBUTIONS`] shares that `limbs` limbs carry exactly.
pub fn capacity(limbs: usize) -> i64 {
    match limbs {
        0 => 0,
        1 => MAX_ABS_TOTAL,
        _ => {
            let top = i128::from(MAX_ABS_TOTAL - MAX_CONTRIBUTIONS as i64);
            let scale = 1i128 << (LIMB_BITS as usize * (limbs.min(MAX_LIMBS) - 1));
            (top * scale).min(i128::from(i64::MAX)) as i64
        }
    }
}

/// The limbs of `value`, lowest first: `value = sum_j limbs[j] * BASE^j`.
pub fn split(value: i64, limbs: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(limbs.max(1));
    let mut rest = value;
    for _ in 1..limbs {
        // Two's complement: the mask is the remainder in [0, B), the
        // arithmetic shift the floor of the quotient.
        out.push(rest & (BASE - 1));
        rest >>= LIMB_BITS;
    }
    out.push(rest);
    out
}

/// Recombines one value's slot totals, lowest first, or `None` if it is not an `i64`.
pub fn join(totals: &[i64]) -> Option<i64> {
    let mut value: i128 = 0;
    for (j, total) in totals.iter().enumerate() {
        let weight = 1i128.checked_shl(LIMB_BITS.checked_mul(j as u32)?)?;
        value = value.checked_add(i128::from(*total).checked_mul(weight)?)?;
    }
    i64::try_from(value).ok()
}

/// The slots of `values`, each value's limbs together, lowest first.
pub fn encode(values: &[i64], limbs: usize) -> Vec<i64> {
    values.iter().flat_map(|v| split(*v, limbs)).collect()
}

/// The values of decrypted slot totals, or `None` if the slots do not
/// divide into `limbs` or a value does not recombine into an `i64`.
pub fn decode(totals: &[i64], limbs: usize) -> Option<Vec<i64>> {
    if limbs == 0 || !totals.len().is_multiple_of(limbs) {
        return None;
    }
    totals.chunks(limbs).map(join).collect()
}

/// How a share of one query is laid out in ciphertext slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Values per share: 1, or one per histogram bin.
    pub values: usize,
    /// Limbs per value.
    pub limbs: usize,
    /// Largest `|exact aggregate|` of one member (per value), clamped to before noise.
    pub member_cap: i64,
}

impl Layout {
    /// The layout of an encrypted-mode count, sum or histogram, or why it cannot be encrypted.
    pub fn of(query: &Query) -> Result<Layout, String> {
        let (values, largest_value) = match &query.aggregate {
            Aggregate::Count => (1, 1),
            Aggregate::Histogram { edges } => (edges.len().saturating_sub(1), 1),
            Aggregate::Sum => {
                let b = query.bounds.ok_or("a sum needs bounds")?;
                // Whole units, as the share plan adds them.
                let (lower, upper) = (b.lower.ceil(), b.upper.floor());
                let largest = lower.abs().max(upper.abs());
                if largest.is_nan() || largest >= i64::MAX as f64 {
                    return Err(format!(
                        "sum bounds [{}, {}] are too wide for encrypted mode; narrow them or use dp mode",
                        b.lower, b.upper
                    ));
                }
                (1, largest as i64)
            }
            other => match other.analysis() {
                Some(analysis) => {
                    let e = crate::analysis::encoding::Encoding::of(&analysis);
                    return Layout::of_vector(e.len, e.largest);
                }
                None => {
                    return Err(format!(
                        "a {} does not add up under encryption; use dp mode",
                        other.kind()
                    ))
                }
            },
        };
        Layout::fit(values, largest_value, query.aggregate.kind())
    }

    /// The layout of a vector of `values` values, each of whose per-patient
    /// entries is at most `largest` in size (encrypted mode's analyses:
    /// [`crate::analysis::encoding`]), or why it cannot be encrypted.
    pub fn of_vector(values: usize, largest: i64) -> Result<Layout, String> {
        if values == 0 || largest <= 0 {
            return Err(format!(
                "a vector of {values} values with entries up to {largest} has nothing to add; \
                 ask for at least one value of a positive bound"
            ));
        }
        Layout::fit(values, largest, "vector")
    }

    /// The fewest limbs that carry `values` values whose per-patient entries
    /// reach `largest_value`, over the most members and patients.
    fn fit(values: usize, largest_value: i64, kind: &str) -> Result<Layout, String> {
        let too_wide = || {
            format!(
                "a {kind} whose values reach {largest_value} could total more than the {} that \
                 encrypted totals carry (up to {MAX_CONTRIBUTIONS} members of up to \
                 {MAX_PATIENTS_PER_MEMBER} patients each, with room left for the noise); \
                 narrow the bounds or use dp mode",
                capacity(MAX_LIMBS) / 2
            )
        };
        let member_cap = largest_value
            .checked_mul(MAX_PATIENTS_PER_MEMBER)
            .ok_or_else(too_wide)?;
        let widest = member_cap
            .checked_mul(MAX_CONTRIBUTIONS as i64)
            .ok_or_else(too_wide)?;
        let limbs = (1..=MAX_LIMBS)
            .find(|l| widest <= capacity(*l) / 2)
            .ok_or_else(too_wide)?;
        let layout = Layout {
            values,
            limbs,
            member_cap,
        };
        if layout.slots() > MAX_VALUES {
            return Err(format!(
                "{values} values of {limbs} limbs need {} ciphertext slots, over the {MAX_VALUES} one share holds; use fewer bins, groups, cells or covariates",
                layout.slots()
            ));
        }
        Ok(layout)
    }

    /// Ciphertext slots per share.
    pub fn slots(&self) -> usize {
        self.values.saturating_mul(self.limbs)
    }

    /// Room left for the noise: the largest `|sum of all shares' noise|` the total still carries.
    pub fn noise_room(&self) -> i64 {
        let widest = self.member_cap.saturating_mul(MAX_CONTRIBUTIONS as i64);
        capacity(self.limbs).saturating_sub(widest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_round_trip(value: i64, limbs: usize) {
        let parts = split(value, limbs);
        assert_eq!(parts.len(), limbs.max(1));
        for low in &parts[..parts.len() - 1] {
            assert!((0..BASE).contains(low), "{value}: {parts:?}");
        }
        assert_eq!(join(&parts), Some(value), "{parts:?}");
    }

    #[test]
    fn extremes_round_trip() {
        for limbs in 1..=MAX_LIMBS {
            for v in [0, 1, -1, BASE - 1, BASE, -BASE, i64::MAX, i64::MIN] {
                check_round_trip(v, limbs);
            }
        }
    }

    proptest! {
        #[test]
        fn any_value_round_trips(value in any::<i64>(), limbs in 1..=MAX_LIMBS) {
            check_round_trip(value, limbs);
        }

        /// The slot totals of up to 127 shares stay in one slot's range and
        /// recombine into the total, whenever the total is within capacity.
        #[test]
        fn slot_totals_fit_and_recombine(
            shares in proptest::collection::vec(-(1i64 << 37)..(1i64 << 37), 1..=MAX_CONTRIBUTIONS),
            limbs in 2..=MAX_LIMBS,
        ) {
            let total: i64 = shares.iter().sum();
            prop_assume!(total.abs() <= capacity(limbs));
            let mut slots = vec![0i64; limbs];
            for s in &shares {
                for (slot, limb) in slots.iter_mut().zip(split(*s, limbs)) {
                    *slot += limb;
                }
            }
            for slot in &slots {
                prop_assert!(slot.abs() <= MAX_ABS_TOTAL, "{slots:?}");
            }
            prop_assert_eq!(decode(&slots, limbs), Some(vec![total]));
        }
    }

    #[test]
    fn the_top_limb_of_a_total_at_capacity_still_fits() {
        // 127 shares each rounding their top limb down as far as they can.
        let limbs = 2;
        let each = -(capacity(limbs) / MAX_CONTRIBUTIONS as i64);
        let top: i64 = (0..MAX_CONTRIBUTIONS).map(|_| split(each, limbs)[1]).sum();
        assert!(top.abs() <= MAX_ABS_TOTAL, "{top}");
    }

    #[test]
    fn decode_refuses_what_does_not_recombine() {
        assert_eq!(decode(&[1, 2, 3], 2), None);
        assert_eq!(decode(&[1], 0), None);
        assert_eq!(decode(&[0, 0, MAX_ABS_TOTAL], 3), None);
        assert_eq!(decode(&[5, 1, 7, 0], 2), Some(vec![5 + BASE, 7]));
    }

    fn query(aggregate: &str) -> Query {
        Query::from_toml(&format!(
            "version = 1\nid = \"q\"\npurpose = \"HMB\"\n{aggregate}\n[privacy]\nmode = \"encrypted\"\n\
             epsilon = 1.0\naggregator = \"a\"\nstudy = \"{}\"\nmin_hospitals = 2\n",
            "0".repeat(64)
        ))
        .unwrap()
    }

    fn sum_query(lower: f64, upper: f64) -> Query {
        query(&format!(
            "aggregate = \"sum\"\n[feature.attribute]\nname = \"age\"\n[bounds]\nlower = {lower:?}\nupper = {upper:?}"
        ))
    }

    #[test]
    fn layouts_use_one_limb_for_counts_and_more_for_wide_sums() {
        let count = Layout::of(&query("aggregate = \"count\"")).unwrap();
        assert_eq!((count.values, count.limbs), (1, 1));
        let sum = Layout::of(&sum_query(0.0, 1000.0)).unwrap();
        assert_eq!((sum.values, sum.limbs, sum.slots()), (1, 2, 2));
        assert!(sum.noise_room() >= capacity(2) / 2);
        assert_eq!(Layout::of(&sum_query(-1e9, 1e9)).unwrap().limbs, 3);
        let err = Layout::of(&sum_query(0.0, 1e15)).unwrap_err();
        assert!(err.contains("narrow the bounds"), "{err}");
        assert!(Layout::of(&sum_query(0.0, 1e300)).is_err());
    }

    #[test]
    fn analysis_vectors_take_one_limb_per_count_and_two_per_fixed_point_entry() {
        // The longest survival vector, one-hot counts: one slot each.
        let counts = Layout::of_vector(MAX_VALUES, 1).unwrap();
        assert_eq!((counts.limbs, counts.slots()), (1, MAX_VALUES));
        // Regression entries at resolution 4096: two limbs.
        let fixed = Layout::of_vector(55, 4096).unwrap();
        assert_eq!((fixed.limbs, fixed.slots()), (2, 110));
        assert!(fixed.noise_room() >= capacity(2) / 2);
        let err = Layout::of_vector(MAX_VALUES, 4096).unwrap_err();
        assert!(err.contains("ciphertext slots"), "{err}");
        assert!(Layout::of_vector(0, 1).is_err());
        assert!(Layout::of_vector(3, 0).is_err());
        assert!(Layout::of_vector(3, i64::MAX).is_err());
    }
}
