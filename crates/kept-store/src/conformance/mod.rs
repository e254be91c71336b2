//! The conformance suite: one story every backend must tell the same way. A backend's test
//! crate implements [`Harness`] (a fresh, empty store per case) and expands
//! [`conformance_tests!`](crate::conformance_tests) once, which makes one `#[tokio::test]` per
//! case of every module here (`store`, `outbox`, `prefcenter`, `requests`, `operators`,
//! `erasure`).
//!
//! The cases panic on a failed expectation: they are test code, compiled only with the
//! `conformance` feature (which the backends' tests turn on, and the product never does), so
//! that both backend crates run the very same functions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is a failed test"
)]

pub mod erasure;
pub mod operators;
pub mod outbox;
pub mod prefcenter;
pub mod requests;
pub mod store;

use crate::group_commit::CheckpointSigner;
use crate::{ApiKeyRecord, NewSubject, NoticeContent, NoticeHash, Role, Store, StoreError};
use async_trait::async_trait;
use ed25519_dalek::SigningKey;
use futures::FutureExt;
use kept_core::SubjectId;
use kept_core::ledger::{
    ChainHash, ChainVerifier, Checkpoint, CollectionMethod, Columns, ConsentAction, ConsentRecord,
    Evidence, LedgerEntry, NoticeRef, check_checkpoint_chain, decode, encode,
};
use kept_core::subject::{
    ChannelPreference, Contact, Frequency, Period, Provenance, QuietHours, Trait,
};
use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Gives each conformance case its own fresh, empty store and cleans up after it.
#[async_trait]
pub trait Harness: Send + Sized + 'static {
    /// A fresh, empty store, or `None` when this backend cannot run here (having said why).
    async fn start() -> Option<Self>;
    fn store(&self) -> Arc<dyn Store>;
    /// Drops whatever `start` created (a schema, a directory).
    async fn finish(self);
}

/// Expands to one `#[tokio::test]` per conformance case of every module (the store's own, the
/// outbox's, the preference center's and the requests'), each with a fresh store from the given
/// [`Harness`] type. A backend's test crate calls it once.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:ty) => {
        $crate::conformance_tests!(@module $harness, $crate::conformance::store;
            empty_store_has_an_empty_ledger,
            ledger_appends_are_gapless_and_chained,
            concurrent_appends_are_all_acknowledged_and_verify,
            append_consents_is_atomic_and_ordered,
            ledger_rows_pages_through_everything,
            ledger_for_subject_returns_only_that_subject,
            checkpoints_round_trip,
            every_batch_ends_with_a_chained_checkpoint,
            a_checkpoint_of_the_tip_covers_records_appended_unsigned,
            notice_hashes_are_idempotent,
            notice_contents_are_kept_per_version_and_hash,
            api_keys_insert_lookup_revoke,
            settings_put_if_absent_keeps_the_first_value,
            subjects_get_dense_ids_in_insert_order,
            subjects_page_and_erasure,
            concurrent_subject_inserts_stay_dense,
            traits_upsert_replaces_and_pages,
            channel_preferences_round_trip,
            contacts_since_filters_and_orders,
            close_refuses_later_writes,
            identities_attach_merge_and_follow,
            an_identity_conflict_writes_nothing,
            verified_identities_the_identity_log_and_undo,
            events_deduplicate_and_follow_merges,
            events_and_visits_move_the_last_interaction_forward,
            retention_deletes_what_expired,
            key_collection_points_round_trip,
            decision_log_appends_and_filters,
            decision_log_prunes_the_oldest_first,
            decision_counts_add_up_per_day_and_reason,
            quarantine_holds_pages_and_prunes,
            uses_are_recorded_with_contacts_and_read_per_subject,
        );
        $crate::conformance_tests!(@module $harness, $crate::conformance::outbox;
            outbox_enqueue_is_idempotent_per_event_and_system,
            outbox_claims_due_deliveries_oldest_first_under_a_lease,
            outbox_concurrent_claims_never_share_a_delivery,
            outbox_attempts_retry_deliver_suppress_and_die,
            outbox_dead_letters_are_listed_and_retried,
            outbox_erasure_deletes_a_subjects_deliveries,
            outbox_obligations_and_events_are_kinds_of_delivery,
        );
        $crate::conformance_tests!(@module $harness, $crate::conformance::prefcenter;
            prefcenter_tokens_are_spent_once,
            prefcenter_concurrent_spends_let_one_through,
            prefcenter_sessions_end_when_revoked_expired_or_replaced,
        );
        $crate::conformance_tests!(@module $harness, $crate::conformance::requests;
            requests_erasure_is_filed_once_per_subject,
            requests_are_filed_stepped_and_logged,
            requests_a_refused_step_changes_nothing,
            requests_list_by_filter_and_count_what_is_due,
            requests_queue_lists_open_ones_soonest_due_first,
            requests_complete_only_when_every_task_is_settled,
            requests_gates_are_put_once_read_and_lifted,
            requests_corrections_are_filed_with_their_request_and_carried_out,
        );
        $crate::conformance_tests!(@module $harness, $crate::conformance::operators;
            operators_are_created_once_per_email_and_read_back,
            operators_use_each_totp_step_once_and_only_forward,
            operator_sessions_end_when_revoked_idle_or_expired,
            audit_log_appends_and_pages_newest_first,
        );
        $crate::conformance_tests!(@module $harness, $crate::conformance::erasure;
            erasure_deletes_everything_but_what_the_law_keeps,
            erasure_is_idempotent,
            erasure_suppressed_identifiers_mark_their_new_holder,
        );
    };
    (@module $harness:ty, $module:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $module as cases;
                $crate::conformance::run_case::<$harness, _, _>(cases::$case).await;
            }
        )*
    };
}

/// Runs one case on a fresh store, then closes it and lets the harness clean up, even when the
/// case fails.
pub async fn run_case<H, F, Fut>(case: F)
where
    H: Harness,
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(harness) = H::start().await else {
        return;
    };
    let store = harness.store();
    let outcome = AssertUnwindSafe(case(store.clone())).catch_unwind().await;
    let _ = store.close().await;
    drop(store);
    harness.finish().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

// --- helpers ---------------------------------------------------------------------------------

const T0: i64 = 1_790_000_000_000;

/// A record whose every field depends on `i`, so swapped or mixed-up records differ.
pub fn record(subject: u32, i: u32) -> ConsentRecord {
    ConsentRecord {
        subject: SubjectId(subject),
        purpose: if i.is_multiple_of(2) {
            "marketing.communications".into()
        } else {
            "personalize.content.profiled".into()
        },
        channel: (!i.is_multiple_of(3)).then(|| "email".to_string()),
        topic: i.is_multiple_of(5).then(|| "newsletter".to_string()),
        action: ConsentAction::ALL[(i as usize) % ConsentAction::ALL.len()],
        notice: Some(NoticeRef {
            id: "newsletter".into(),
            version: 1 + i % 3,
            hash: "ab".repeat(32),
        }),
        regime: "gdpr".into(),
        source: "conformance".into(),
        method: CollectionMethod::ALL[(i as usize) % CollectionMethod::ALL.len()],
        evidence: Evidence {
            ip_hash: Some(format!("{i:064x}")),
            user_agent: Some("Mozilla/5.0 (conformance)".into()),
            text_hash: None,
            reference: Some(format!("req-{i}")),
        },
        at: T0 + i64::from(i),
    }
}

/// Verifies the whole stored chain (with the columns cross-checked) and returns its length.
pub async fn verify_stored_chain(store: &dyn Store) -> u64 {
    let mut verifier = ChainVerifier::new(std::iter::empty());
    let mut after = 0;
    loop {
        let rows = store.ledger_rows(after, 257).await.unwrap();
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in &rows {
            let hash = ChainHash::from_slice(&row.hash).unwrap();
            verifier
                .push(
                    row.seq,
                    &row.bytes,
                    &hash,
                    Some(Columns {
                        subject: row.subject,
                        at: row.at,
                    }),
                )
                .unwrap();
        }
    }
    verifier.len()
}

/// A checkpoint signer for the suite: signs with a fixed key and remembers what it was told
/// was committed.
#[derive(Debug)]
pub struct TestSigner {
    pub key: SigningKey,
    pub committed: std::sync::Mutex<Vec<Checkpoint>>,
}

impl TestSigner {
    pub fn new(seed: u8) -> Arc<TestSigner> {
        Arc::new(TestSigner {
            key: SigningKey::from_bytes(&[seed; 32]),
            committed: std::sync::Mutex::new(Vec::new()),
        })
    }
}

impl CheckpointSigner for TestSigner {
    fn sign(&self, seq: u64, hash: ChainHash, prev: ChainHash) -> Checkpoint {
        Checkpoint::sign(&self.key, seq, hash, T0 + 1_000, prev)
    }
    fn committed(&self, checkpoint: &Checkpoint) {
        self.committed.lock().unwrap().push(checkpoint.clone());
    }
}

/// Checks the stored checkpoints: they chain, each signs the chain's hash at its position,
/// and the last covers the tip. Returns them.
pub async fn verify_stored_checkpoints(
    store: &dyn Store,
    keys: &[ed25519_dalek::VerifyingKey],
) -> Vec<Checkpoint> {
    let checkpoints = store.checkpoints().await.unwrap();
    check_checkpoint_chain(&checkpoints).unwrap();
    let mut verifier = ChainVerifier::new(checkpoints.iter().map(|c| c.seq));
    let rows = store.ledger_rows(0, u32::MAX).await.unwrap();
    for row in &rows {
        let hash = ChainHash::from_slice(&row.hash).unwrap();
        verifier.push(row.seq, &row.bytes, &hash, None).unwrap();
    }
    for cp in &checkpoints {
        let key = keys
            .iter()
            .find(|k| kept_core::ledger::key_id(k) == cp.key_id)
            .unwrap();
        verifier.finish(std::slice::from_ref(cp), key).unwrap();
    }
    assert_eq!(
        verifier.uncovered(),
        None,
        "records left without a checkpoint"
    );
    checkpoints
}

fn new_subject(user_id: Option<&str>, country: &str) -> NewSubject {
    NewSubject {
        user_id: user_id.map(str::to_string),
        country: Some(country.to_string()),
        region: None,
        time_zone: Some("Europe/Paris".into()),
        created_at: T0,
    }
}

fn provenance(point: &str, version: u32) -> Provenance {
    Provenance {
        collection_point: point.to_string(),
        notice_id: format!("{point}_notice"),
        notice_version: version,
        collected_at: T0 + i64::from(version),
        source: "collection".into(),
    }
}

fn a_trait(subject: SubjectId, key: &str, value: serde_json::Value, version: u32) -> Trait {
    Trait {
        subject,
        key: key.to_string(),
        value,
        category: format!("user.{key}"),
        provenance: provenance("checkout", version),
    }
}
