//! A campaign's dry run for the console: the audience service's answer for everyone, then the
//! same for each regime and each country subjects are in, so the page can show who is excluded
//! and why, broken down where it differs. Each run is one pass over the index's bitmaps.

use crate::decide::audiences::{AudienceInput, AudienceView, dry_run};
use crate::decide::candidates::FilterInput;
use crate::http::error::ApiError;
use crate::identity::resolve::Lookup;
use kept_core::UnixMillis;
use kept_core::regime::Regime;
use std::collections::BTreeSet;

/// A campaign's dry run, overall and broken down.
#[derive(Debug, Clone)]
pub struct Breakdown {
    pub overall: AudienceView,
    /// By regime, those with any candidate.
    pub by_regime: Vec<(String, AudienceView)>,
    /// By country, those with any candidate.
    pub by_country: Vec<(String, AudienceView)>,
    /// Every exclusion reason that appears, in the overall order, then any others.
    pub reasons: Vec<String>,
}

/// Dry-runs `input` (whose candidates are everyone) at `now`, then per regime and country.
pub async fn breakdown(
    lookup: Lookup<'_>,
    now: UnixMillis,
    input: AudienceInput,
) -> Result<Breakdown, ApiError> {
    let overall = dry_run(lookup, now, input.clone()).await?;
    let with = |filter: FilterInput| AudienceInput {
        candidates: crate::decide::audiences::CandidatesInput::Filter(filter),
        sample_size: 0,
        ..input.clone()
    };
    let mut by_regime = Vec::new();
    for regime in Regime::ALL {
        let view = dry_run(
            lookup,
            now,
            with(FilterInput {
                regimes: vec![regime.as_str().to_owned()],
                ..FilterInput::default()
            }),
        )
        .await?;
        if view.candidates > 0 {
            by_regime.push((regime.as_str().to_owned(), view));
        }
    }
    let countries: Vec<String> = lookup
        .index
        .directory()?
        .countries()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut by_country = Vec::new();
    for country in countries {
        let view = dry_run(
            lookup,
            now,
            with(FilterInput {
                countries: vec![country.clone()],
                ..FilterInput::default()
            }),
        )
        .await?;
        if view.candidates > 0 {
            by_country.push((country, view));
        }
    }
    let mut seen = BTreeSet::new();
    let reasons = overall
        .excluded
        .iter()
        .chain(by_regime.iter().flat_map(|(_, v)| v.excluded.iter()))
        .filter(|e| seen.insert(e.reason.clone()))
        .map(|e| e.reason.clone())
        .collect();
    Ok(Breakdown {
        overall,
        by_regime,
        by_country,
        reasons,
    })
}

/// How many of `view`'s candidates `reason` excluded.
pub fn count(view: &AudienceView, reason: &str) -> u64 {
    view.excluded
        .iter()
        .find(|e| e.reason == reason)
        .map_or(0, |e| e.count)
}

/// Why one person is or is not in a campaign's audience: the decision the audience made for
/// them, with its evidence. A view, not a use: nothing is recorded as a use of their data.
#[derive(Debug, Clone)]
pub struct Why {
    /// Kept's id of the person, `None` when nobody is known by what was given.
    pub subject: Option<kept_core::SubjectId>,
    pub allowed: bool,
    pub reason: String,
    /// Each piece of evidence, as the decision API writes it.
    pub evidence: Vec<String>,
}

/// Decides `request` at `at` for the person `name` names, from the index the audience reads.
pub async fn why(
    lookup: Lookup<'_>,
    name: crate::identity::resolve::SubjectName<'_>,
    request: &kept_core::decision::DecisionRequest,
    at: UnixMillis,
) -> Result<Why, ApiError> {
    let subject = crate::identity::resolve::resolve_subjects(lookup, &[name])
        .await?
        .into_iter()
        .next()
        .flatten();
    let snapshot = lookup.index.snapshot()?;
    let prepared = snapshot.prepare(request);
    let decision = match subject {
        Some(id) => snapshot.decide_prepared(id, &prepared, at),
        // Nobody known: the denial an unknown subject gets.
        None => snapshot.decide_prepared(kept_core::SubjectId(u32::MAX), &prepared, at),
    };
    let explained = decision.explain(snapshot.compiled(), &prepared.query);
    Ok(Why {
        subject,
        allowed: explained.allowed,
        reason: explained.reason.as_str().to_owned(),
        evidence: explained
            .evidence
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect(),
    })
}
