//! Legal regimes and how a subject's location resolves to one (see LAW.md "Which regime applies").
//! Unknown locations resolve to `Strictest`: Kept fails closed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The legal frame that applies to a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regime {
    Gdpr,
    UkGdpr,
    Ccpa,
    /// A US state with a comprehensive privacy law other than California.
    UsState,
    /// The rest of the US: federal channel laws only (TCPA, CAN-SPAM).
    Us,
    Casl,
    Lgpd,
    Strictest,
}

impl Regime {
    pub const ALL: [Regime; 8] = [
        Regime::Gdpr,
        Regime::UkGdpr,
        Regime::Ccpa,
        Regime::UsState,
        Regime::Us,
        Regime::Casl,
        Regime::Lgpd,
        Regime::Strictest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Gdpr => "gdpr",
            Regime::UkGdpr => "uk_gdpr",
            Regime::Ccpa => "ccpa",
            Regime::UsState => "us_state",
            Regime::Us => "us",
            Regime::Casl => "casl",
            Regime::Lgpd => "lgpd",
            Regime::Strictest => "strictest",
        }
    }

    /// True for every regime under which US federal channel laws (TCPA, CAN-SPAM) also apply.
    pub fn is_us(self) -> bool {
        matches!(self, Regime::Ccpa | Regime::UsState | Regime::Us)
    }

    /// Resolves a subject's location. `country` is ISO 3166-1 alpha-2, `region` the
    /// subdivision code without the country prefix (`CA`, `CO`). Anything unknown → `Strictest`.
    pub fn resolve(country: Option<&str>, region: Option<&str>) -> Regime {
        let Some(country) = country.map(|c| c.trim().to_ascii_uppercase()) else {
            return Regime::Strictest;
        };
        match country.as_str() {
            "AT" | "BE" | "BG" | "HR" | "CY" | "CZ" | "DK" | "EE" | "FI" | "FR" | "DE" | "GR"
            | "HU" | "IE" | "IT" | "LV" | "LT" | "LU" | "MT" | "NL" | "PL" | "PT" | "RO" | "SK"
            | "SI" | "ES" | "SE" | "IS" | "LI" | "NO" => Regime::Gdpr,
            "GB" | "UK" => Regime::UkGdpr,
            "CA" => Regime::Casl,
            "BR" => Regime::Lgpd,
            "US" => match region.map(|r| r.trim().to_ascii_uppercase()) {
                Some(r) if r == "CA" => Regime::Ccpa,
                Some(r) if US_STATES_WITH_LAW.contains(&r.as_str()) => Regime::UsState,
                Some(r) if US_STATES_WITHOUT_LAW.contains(&r.as_str()) => Regime::Us,
                // A US subject whose state is unknown: the state laws may apply, so treat them
                // as a comprehensive-law state (opt-out of sale honoured, sensitive data opt-in).
                _ => Regime::UsState,
            },
            _ => Regime::Strictest,
        }
    }
}

/// US states with a comprehensive consumer privacy law in force or enacted (besides California).
pub const US_STATES_WITH_LAW: &[&str] = &[
    "VA", "CO", "CT", "UT", "TX", "OR", "MT", "DE", "IA", "NE", "NH", "NJ", "TN", "MN", "MD", "IN",
    "KY", "RI",
];

const US_STATES_WITHOUT_LAW: &[&str] = &[
    "AL", "AK", "AZ", "AR", "FL", "GA", "HI", "ID", "IL", "KS", "LA", "ME", "MA", "MI", "MS", "MO",
    "NV", "NM", "NY", "NC", "ND", "OH", "OK", "PA", "SC", "SD", "VT", "WA", "WV", "WI", "WY", "DC",
];

impl fmt::Display for Regime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A regime key that is not one Kept knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown regime `{0}`")]
pub struct UnknownRegime(pub String);

impl FromStr for Regime {
    type Err = UnknownRegime;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Regime::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRegime(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_locations_and_fails_closed() {
        assert_eq!(Regime::resolve(Some("de"), None), Regime::Gdpr);
        assert_eq!(Regime::resolve(Some("GB"), None), Regime::UkGdpr);
        assert_eq!(Regime::resolve(Some("US"), Some("CA")), Regime::Ccpa);
        assert_eq!(Regime::resolve(Some("US"), Some("CO")), Regime::UsState);
        assert_eq!(Regime::resolve(Some("US"), Some("FL")), Regime::Us);
        assert_eq!(Regime::resolve(Some("CA"), Some("ON")), Regime::Casl);
        assert_eq!(Regime::resolve(Some("BR"), None), Regime::Lgpd);
        assert_eq!(Regime::resolve(Some("ZZ"), None), Regime::Strictest);
        assert_eq!(Regime::resolve(None, None), Regime::Strictest);
    }

    #[test]
    fn keys_round_trip() {
        for r in Regime::ALL {
            assert_eq!(r.as_str().parse::<Regime>(), Ok(r));
        }
        assert!("martian".parse::<Regime>().is_err());
    }
}
