//! Retention: events and traits are deleted once older than the retention of the purposes they
//! serve, as the manifest declares it, and quarantined messages after seven days, by a job that
//! runs at a configured interval. The consent ledger is never touched: it is the proof, and it
//! holds no identifiers.

use super::Collector;
use crate::clock::Clock;
use crate::decide::log::DecisionLog;
use crate::index::{IndexError, IndexHandle};
use kept_core::UnixMillis;
use kept_core::collection::{event_cutoff, trait_cutoffs};
use kept_core::manifest::Manifest;
use kept_store::Store;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Events deleted per statement, so that the writer is never held for long.
const EVENTS_PER_ROUND: u32 = 10_000;

pub const RETENTION_DELETED: &str = "kept_retention_deleted_total";

/// What retention reads and deletes from: the store, the manifest's retention periods, the
/// index that forgets deleted traits, the decision log's retention, the collector's count of
/// quarantined messages, and the clock the job reads. Cheap to clone; the job owns one.
#[derive(Clone)]
pub struct Retention {
    pub store: Arc<dyn Store>,
    pub manifest: Arc<Manifest>,
    pub index: IndexHandle,
    pub decision_log: DecisionLog,
    pub collector: Arc<Collector>,
    pub clock: Clock,
}

impl fmt::Debug for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retention")
            .field("store", &self.store)
            .field("collector", &self.collector)
            .finish_non_exhaustive()
    }
}

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub events: u64,
    pub traits: u64,
    /// Decision log entries older than `decision_log_retention`.
    pub decisions: u64,
    /// Rejected messages held longer than seven days.
    pub quarantined: u64,
}

/// Deletes everything past its retention at `now`, and lets the decision index forget the
/// deleted traits before answering (a store failure comes back as `IndexError::Store`).
pub async fn run_retention(
    retention: &Retention,
    now: UnixMillis,
) -> Result<RetentionReport, IndexError> {
    let Retention {
        store,
        manifest,
        index,
        decision_log,
        collector,
        clock: _,
    } = retention;
    let store = store.as_ref();
    let manifest = manifest.as_ref();
    let deleted = store
        .delete_expired_traits(&trait_cutoffs(manifest, now))
        .await?;
    // Fail closed: until the index lets go of their provenance, decisions would still count
    // promises made for the deleted traits.
    index.reload_traits(store, &deleted.subjects).await?;
    let traits = deleted.count;
    let cutoff = event_cutoff(manifest, now);
    let mut events = 0;
    loop {
        let n = store
            .delete_expired_events(now, cutoff, EVENTS_PER_ROUND)
            .await?;
        events += n;
        if n < u64::from(EVENTS_PER_ROUND) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let before = decision_log.cutoff(now);
    let mut decisions = 0;
    loop {
        let n = store.prune_decision_log(before, EVENTS_PER_ROUND).await?;
        decisions += n;
        if n < u64::from(EVENTS_PER_ROUND) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let quarantined = super::quarantine::prune(store, collector, now, EVENTS_PER_ROUND).await?;
    metrics::counter!(RETENTION_DELETED, "what" => "events").increment(events);
    metrics::counter!(RETENTION_DELETED, "what" => "traits").increment(traits);
    metrics::counter!(RETENTION_DELETED, "what" => "decisions").increment(decisions);
    metrics::counter!(RETENTION_DELETED, "what" => "quarantine").increment(quarantined);
    Ok(RetentionReport {
        events,
        traits,
        decisions,
        quarantined,
    })
}

/// Runs retention every `every` until `stop` turns true.
pub fn spawn_retention(
    retention: Retention,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // The first run is always reported, so a start shows what retention found.
        let mut first = true;
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
            match run_retention(&retention, (retention.clock)()).await {
                Ok(r) if first || r.events + r.traits > 0 => {
                    first = false;
                    tracing::info!(
                        events = r.events,
                        traits = r.traits,
                        "retention deleted expired data"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention failed; retrying next time"),
            }
        }
    })
}
