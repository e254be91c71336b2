//! Who an audience starts from when it is named by place: a location filter (regimes,
//! countries, regions) turned into the index's candidates. The audience API and `kept audience`
//! both read it.

use crate::http::error::ApiError;
use crate::index::{IndexHandle, Residence};
use kept_core::audience::{Candidates, PlaceFilter};
use kept_core::regime::Regime;
use kept_core::rulebook::Place;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A location filter; an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    /// `gdpr`, `uk_gdpr`, `ccpa`, `us_state`, `us`, `casl`, `lgpd`, `strictest`.
    #[serde(default)]
    pub regimes: Vec<String>,
    /// ISO 3166-1 alpha-2 (`DE`, `US`).
    #[serde(default)]
    pub countries: Vec<String>,
    /// Subdivisions without the country (`CA`, `CO`).
    #[serde(default)]
    pub regions: Vec<String>,
}

/// The candidates a location filter selects: by place through the index's bitmaps, or, when it
/// names countries (many countries share a place), through the directory's locations.
pub fn filter_candidates(index: &IndexHandle, f: &FilterInput) -> Result<Candidates, ApiError> {
    let mut regimes = Vec::with_capacity(f.regimes.len());
    for (i, r) in f.regimes.iter().enumerate() {
        let regime = Regime::ALL
            .into_iter()
            .find(|x| x.as_str() == r.trim())
            .ok_or_else(|| {
                ApiError::invalid_field(
                    format!("candidates.filter.regimes[{i}]"),
                    format!(
                        "unknown regime `{r}`; use one of {}",
                        Regime::ALL
                            .iter()
                            .map(|x| format!("`{}`", x.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        regimes.push(regime);
    }
    let upper =
        |v: &[String]| -> Vec<String> { v.iter().map(|s| s.trim().to_ascii_uppercase()).collect() };
    let countries = upper(&f.countries);
    let regions = upper(&f.regions);
    if countries.is_empty() {
        return Ok(Candidates::Where(PlaceFilter { regimes, regions }));
    }
    let keep = |l: &Residence| {
        let country = l.country.as_deref();
        let region = l.region.as_deref();
        let place = Place::resolve(country, region);
        country.is_some_and(|c| countries.iter().any(|x| x == c))
            && (regimes.is_empty() || regimes.contains(&place.regime))
            && (regions.is_empty() || region.is_some_and(|r| regions.iter().any(|x| x == r)))
    };
    Ok(Candidates::Ids(index.directory()?.subjects_where(keep)))
}
