//! GA4GH Data Use Ontology (DUO): research purposes, their hierarchy, and use modifiers.
//!
//! Consents and credentials name purposes with DUO's short codes. witmed
//! enforces a small, fixed subset and refuses every other code, so a
//! restriction it cannot enforce is never silently dropped:
//!
//! * primary purposes `GRU` (general research use), `HMB` (health, medical or
//!   biomedical research), `POA` (population origins or ancestry research) and
//!   `DS-<disease id>` (research on one disease, e.g. `DS-C0011849`);
//! * modifiers `NCU` (no commercial use), `NPU` (use by not-for-profit
//!   organisations only) and `IRB` (ethics approval required).
//!
//! The hierarchy follows DUO: GRU covers every purpose; HMB covers itself and
//! every disease-specific purpose but not POA (DUO defines HMB as excluding
//! ancestry research); DS-X and POA cover only themselves.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Longest accepted disease id in `DS-<disease id>`.
pub const MAX_DISEASE_ID_LEN: usize = 64;

/// A primary DUO purpose.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// `GRU`: general research use.
    Gru,
    /// `HMB`: health, medical or biomedical research.
    Hmb,
    /// `POA`: population origins or ancestry research.
    Poa,
    /// `DS-<id>`: research on the named disease only (id compared exactly, case-sensitive).
    Ds(String),
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Purpose::Gru => f.write_str("GRU"),
            Purpose::Hmb => f.write_str("HMB"),
            Purpose::Poa => f.write_str("POA"),
            Purpose::Ds(id) => write!(f, "DS-{id}"),
        }
    }
}

impl FromStr for Purpose {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "GRU" => Ok(Purpose::Gru),
            "HMB" => Ok(Purpose::Hmb),
            "POA" => Ok(Purpose::Poa),
            _ => match s.strip_prefix("DS-") {
                Some(id) if valid_disease_id(id) => Ok(Purpose::Ds(id.to_string())),
                _ => Err(Error::UnknownPurpose(s.to_string())),
            },
        }
    }
}

fn valid_disease_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DISEASE_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'))
}

/// A DUO modifier that restricts who may use data, beyond the purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Modifier {
    /// `NCU`: no commercial use.
    Ncu,
    /// `NPU`: use by not-for-profit organisations only.
    Npu,
    /// `IRB`: ethics approval required.
    Irb,
}

impl Modifier {
    /// The DUO code.
    pub fn as_str(self) -> &'static str {
        match self {
            Modifier::Ncu => "NCU",
            Modifier::Npu => "NPU",
            Modifier::Irb => "IRB",
        }
    }
}

impl fmt::Display for Modifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Modifier {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "NCU" => Ok(Modifier::Ncu),
            "NPU" => Ok(Modifier::Npu),
            "IRB" => Ok(Modifier::Irb),
            _ => Err(Error::UnknownPurpose(s.to_string())),
        }
    }
}

/// Whether consent (or approval) for `consented` covers a use for `requested`.
pub fn covers(consented: &Purpose, requested: &Purpose) -> bool {
    use Purpose::*;
    match (consented, requested) {
        (Gru, _) => true,
        (Hmb, Hmb | Ds(_)) => true,
        (Poa, Poa) => true,
        (Ds(a), Ds(b)) => a == b,
        _ => false,
    }
}

/// A parsed purpose list: the primary purposes it permits and the modifiers restricting them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// Primary purposes, in the order given, without duplicates.
    pub primaries: Vec<Purpose>,
    /// Modifiers; each applies to every primary purpose.
    pub modifiers: BTreeSet<Modifier>,
}

impl Terms {
    /// Parses a list mixing primary codes and modifiers. Unknown codes are
    /// errors, and so is a list without a primary purpose.
    pub fn parse(purposes: &[String]) -> Result<Terms, Error> {
        let mut primaries = Vec::new();
        let mut modifiers = BTreeSet::new();
        for code in purposes {
            if let Ok(modifier) = code.parse::<Modifier>() {
                modifiers.insert(modifier);
                continue;
            }
            let purpose: Purpose = code.parse()?;
            if !primaries.contains(&purpose) {
                primaries.push(purpose);
            }
        }
        if primaries.is_empty() {
            return Err(Error::NoPrimaryPurpose(purposes.to_vec()));
        }
        Ok(Terms {
            primaries,
            modifiers,
        })
    }

    /// Whether some primary purpose covers `requested`.
    pub fn covers(&self, requested: &Purpose) -> bool {
        self.primaries.iter().any(|p| covers(p, requested))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(consented: &str, requested: &str, expected: bool) {
        let c: Purpose = consented.parse().unwrap();
        let r: Purpose = requested.parse().unwrap();
        assert_eq!(covers(&c, &r), expected, "{consented} covers {requested}");
    }

    #[test]
    fn hierarchy_follows_duo() {
        check("GRU", "GRU", true);
        check("GRU", "HMB", true);
        check("GRU", "POA", true);
        check("GRU", "DS-C0011849", true);
        check("HMB", "GRU", false);
        check("HMB", "HMB", true);
        check("HMB", "DS-diabetes", true);
        check("HMB", "POA", false);
        check("POA", "POA", true);
        check("POA", "HMB", false);
        check("DS-diabetes", "DS-diabetes", true);
        check("DS-diabetes", "DS-Diabetes", false);
        check("DS-diabetes", "HMB", false);
        check("DS-diabetes", "GRU", false);
    }

    #[test]
    fn parses_codes_strictly() {
        for good in [
            "GRU",
            "HMB",
            "POA",
            "DS-C0011849",
            "DS-MONDO:0005015",
            "DS-a.b_c-d",
        ] {
            let p: Purpose = good.parse().unwrap();
            assert_eq!(p.to_string(), good);
        }
        for bad in [
            "gru", "Hmb", "DS-", "DS", "DS-a b", "DS-é", "GSO", "NCU", "", " GRU",
        ] {
            assert!(
                matches!(bad.parse::<Purpose>(), Err(Error::UnknownPurpose(s)) if s == bad),
                "{bad:?}"
            );
        }
        let long = format!("DS-{}", "x".repeat(MAX_DISEASE_ID_LEN + 1));
        assert!(long.parse::<Purpose>().is_err());
    }

    #[test]
    fn terms_split_primaries_and_modifiers() {
        let list: Vec<String> = ["HMB", "NCU", "DS-x", "IRB", "HMB"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let terms = Terms::parse(&list).unwrap();
        assert_eq!(terms.primaries, vec![Purpose::Hmb, Purpose::Ds("x".into())]);
        assert_eq!(
            terms.modifiers,
            BTreeSet::from([Modifier::Ncu, Modifier::Irb])
        );
        let only_modifiers = vec!["NCU".to_string()];
        assert!(matches!(
            Terms::parse(&only_modifiers),
            Err(Error::NoPrimaryPurpose(_))
        ));
        let unknown = vec!["HMB".to_string(), "GSO".to_string()];
        assert_eq!(
            Terms::parse(&unknown),
            Err(Error::UnknownPurpose("GSO".into()))
        );
        assert!(matches!(Terms::parse(&[]), Err(Error::NoPrimaryPurpose(_))));
    }
}
