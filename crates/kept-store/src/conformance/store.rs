//! The store's own cases: the ledger and its checkpoints, notices, keys, settings, subjects,
//! traits, preferences, contacts, identities, events, the decision log, the quarantine and the
//! record of uses.

use super::*;

// --- ledger ----------------------------------------------------------------------------------

pub async fn empty_store_has_an_empty_ledger(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    assert_eq!(store.ledger_len().await.unwrap(), 0);
    assert_eq!(store.ledger_tip().await.unwrap(), None);
    assert!(store.ledger_rows(0, 10).await.unwrap().is_empty());
    assert!(store.checkpoints().await.unwrap().is_empty());
    assert!(store.append_consents(Vec::new()).await.unwrap().is_empty());
    assert_eq!(store.ledger_len().await.unwrap(), 0);
}

pub async fn ledger_appends_are_gapless_and_chained(store: Arc<dyn Store>) {
    let mut prev = ChainHash::GENESIS;
    let mut expected = Vec::new();
    for i in 1..=10u32 {
        let entry = store.append_consent(record(i % 4, i)).await.unwrap();
        let want = LedgerEntry::chain(&prev, u64::from(i), &record(i % 4, i));
        assert_eq!(entry, want, "append {i} returned the wrong entry");
        prev = entry.hash;
        expected.push(entry);
    }
    assert_eq!(store.ledger_len().await.unwrap(), 10);
    assert_eq!(store.ledger_tip().await.unwrap(), Some((10, prev)));

    let rows = store.ledger_rows(0, 100).await.unwrap();
    assert_eq!(rows.len(), 10);
    for (row, entry) in rows.iter().zip(&expected) {
        assert_eq!(row.seq, entry.seq);
        assert_eq!(
            row.bytes, entry.bytes,
            "record {} is not stored as written",
            row.seq
        );
        assert_eq!(row.hash, entry.hash.0.to_vec());
        assert_eq!(row.subject, decode(&row.bytes).unwrap().subject);
    }
    let middle: Vec<u64> = store
        .ledger_rows(3, 2)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(middle, vec![4, 5]);
    assert!(store.ledger_rows(10, 5).await.unwrap().is_empty());
    assert_eq!(verify_stored_chain(store.as_ref()).await, 10);
}

pub async fn concurrent_appends_are_all_acknowledged_and_verify(store: Arc<dyn Store>) {
    const WRITERS: u32 = 64;
    const EACH: u32 = 50;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..EACH {
                    let r = record(w, w * EACH + i);
                    let entry = store.append_consent(r.clone()).await.unwrap();
                    assert_eq!(entry.bytes, encode(&r));
                    acked.push(entry);
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        let entries = t.await.unwrap();
        // One writer's appends land in the order it made them.
        assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
        acked.extend(entries);
    }
    let total = u64::from(WRITERS * EACH);
    let seqs: BTreeSet<u64> = acked.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs.len() as u64,
        total,
        "two writers were given the same seq"
    );
    assert_eq!(seqs.first(), Some(&1));
    assert_eq!(
        seqs.last(),
        Some(&total),
        "the acknowledged seqs have a gap"
    );
    assert_eq!(verify_stored_chain(store.as_ref()).await, total);

    let rows = store.ledger_rows(0, u32::MAX).await.unwrap();
    acked.sort_by_key(|e| e.seq);
    for (row, entry) in rows.iter().zip(&acked) {
        assert_eq!((row.seq, &row.bytes), (entry.seq, &entry.bytes));
        assert_eq!(row.hash, entry.hash.0.to_vec());
    }
}

pub async fn append_consents_is_atomic_and_ordered(store: Arc<dyn Store>) {
    // Batches interleaved with single appends: each batch still occupies consecutive seqs, in
    // the order given.
    let tasks: Vec<_> = (0..16u32)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                if t % 2 == 0 {
                    let records: Vec<ConsentRecord> =
                        (0..25).map(|i| record(t, t * 100 + i)).collect();
                    let entries = store.append_consents(records.clone()).await.unwrap();
                    assert_eq!(entries.len(), 25);
                    for (pair, r) in entries.windows(2).zip(&records[1..]) {
                        assert_eq!(pair[1].seq, pair[0].seq + 1, "a batch was interleaved");
                        assert_eq!(pair[1].bytes, encode(r));
                    }
                    entries.len()
                } else {
                    for i in 0..10 {
                        store.append_consent(record(t, t * 100 + i)).await.unwrap();
                    }
                    10
                }
            })
        })
        .collect();
    let mut total = 0u64;
    for t in tasks {
        total += t.await.unwrap() as u64;
    }
    assert_eq!(store.ledger_len().await.unwrap(), total);
    assert_eq!(verify_stored_chain(store.as_ref()).await, total);

    // A large batch goes in whole.
    let big: Vec<ConsentRecord> = (0..3_000).map(|i| record(i % 97, i)).collect();
    let entries = store.append_consents(big).await.unwrap();
    assert_eq!(entries.first().map(|e| e.seq), Some(total + 1));
    assert_eq!(entries.last().map(|e| e.seq), Some(total + 3_000));
    assert_eq!(verify_stored_chain(store.as_ref()).await, total + 3_000);
}

pub async fn ledger_rows_pages_through_everything(store: Arc<dyn Store>) {
    let records: Vec<ConsentRecord> = (0..1_000).map(|i| record(i % 13, i)).collect();
    store.append_consents(records).await.unwrap();
    let mut after = 0;
    let mut seen = 0;
    loop {
        let page = store.ledger_rows(after, 333).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 333);
        assert_eq!(page[0].seq, after + 1);
        seen += page.len();
        after = page.last().unwrap().seq;
    }
    assert_eq!(seen, 1_000);
}

pub async fn ledger_for_subject_returns_only_that_subject(store: Arc<dyn Store>) {
    let subjects = [1u32, 2, 1, 3, 1, 2];
    let mut appended = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        appended.push(store.append_consent(record(*s, i as u32)).await.unwrap());
    }
    let ones = store.ledger_for_subject(SubjectId(1)).await.unwrap();
    assert_eq!(
        ones.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 3, 5]
    );
    assert_eq!(ones[1], appended[2]);
    assert_eq!(
        store.ledger_for_subject(SubjectId(3)).await.unwrap().len(),
        1
    );
    assert!(
        store
            .ledger_for_subject(SubjectId(9))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn checkpoints_round_trip(store: Arc<dyn Store>) {
    let key = SigningKey::from_bytes(&[42; 32]);
    let entries = store
        .append_consents((0..5).map(|i| record(1, i)).collect())
        .await
        .unwrap();
    // A version 1 checkpoint (as older releases stored) and a version 2 one after it.
    let early = Checkpoint::sign_v1(&key, 2, entries[1].hash, T0 + 2);
    let late = Checkpoint::sign(&key, 5, entries[4].hash, T0 + 5, early.digest());
    store.put_checkpoint(&late).await.unwrap();
    store.put_checkpoint(&early).await.unwrap();
    // A second signature for a position already signed does not replace the first.
    let again = Checkpoint::sign(&key, 5, entries[4].hash, T0 + 99, ChainHash::GENESIS);
    store.put_checkpoint(&again).await.unwrap();
    let stored = store.checkpoints().await.unwrap();
    assert_eq!(stored, vec![early.clone(), late.clone()]);
    assert!(stored[1].verify_signature(&key.verifying_key()));
    assert_eq!(check_checkpoint_chain(&stored), Ok(()));
    assert_eq!(
        store.checkpoint_covering(1).await.unwrap(),
        Some(early.clone())
    );
    assert_eq!(store.checkpoint_covering(2).await.unwrap(), Some(early));
    assert_eq!(store.checkpoint_covering(3).await.unwrap(), Some(late));
    assert_eq!(store.checkpoint_covering(6).await.unwrap(), None);
    assert_eq!(
        store.last_checkpoint().await.unwrap().map(|c| c.seq),
        Some(5)
    );
}

pub async fn every_batch_ends_with_a_chained_checkpoint(store: Arc<dyn Store>) {
    let signer = TestSigner::new(43);
    store.set_checkpoint_signer(Some(signer.clone()));
    // Nothing to sign yet.
    assert_eq!(store.checkpoint_tip().await.unwrap(), None);
    let tasks: Vec<_> = (0..64u32)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..8 {
                    store.append_consent(record(w, w * 8 + i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Contacts alone neither need nor make a checkpoint.
    let before = store.checkpoints().await.unwrap().len();
    store
        .record_contacts(
            vec![Contact {
                subject: SubjectId(1),
                channel: "email".into(),
                purpose: "marketing.communications".into(),
                topic: None,
                at: T0,
            }],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(store.checkpoints().await.unwrap().len(), before);
    let stored = verify_stored_checkpoints(store.as_ref(), &[signer.key.verifying_key()]).await;
    assert_eq!(stored.last().map(|c| c.seq), Some(512));
    // At most one checkpoint per batch, and the witness hook heard each one, in order.
    assert!(stored.len() <= 512);
    assert_eq!(*signer.committed.lock().unwrap(), stored);
    // The tip is covered: nothing more to sign.
    assert_eq!(store.checkpoint_tip().await.unwrap(), None);
    store.set_checkpoint_signer(None);
}

pub async fn a_checkpoint_of_the_tip_covers_records_appended_unsigned(store: Arc<dyn Store>) {
    // Appended while no signer was installed: as before an upgrade, or by a tool.
    store
        .append_consents((0..7).map(|i| record(2, i)).collect())
        .await
        .unwrap();
    assert_eq!(store.checkpoint_tip().await.unwrap(), None);
    assert!(store.checkpoints().await.unwrap().is_empty());
    let signer = TestSigner::new(44);
    store.set_checkpoint_signer(Some(signer.clone()));
    let cp = store.checkpoint_tip().await.unwrap().unwrap();
    assert_eq!((cp.seq, cp.prev), (7, Some(ChainHash::GENESIS)));
    assert_eq!(
        store.checkpoint_covering(3).await.unwrap(),
        Some(cp.clone())
    );
    assert_eq!(store.checkpoint_tip().await.unwrap(), None);
    store.append_consent(record(2, 7)).await.unwrap();
    let stored = verify_stored_checkpoints(store.as_ref(), &[signer.key.verifying_key()]).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].prev, Some(cp.digest()));
    store.set_checkpoint_signer(None);
}

// --- notices, keys, settings -----------------------------------------------------------------

pub async fn notice_hashes_are_idempotent(store: Arc<dyn Store>) {
    let h = |id: &str, version: u32, hash: &str| NoticeHash {
        notice_id: id.into(),
        version,
        hash: hash.into(),
        recorded_at: T0 + i64::from(version),
    };
    store
        .record_notice_hashes(&[h("rewards", 1, "aa"), h("newsletter", 2, "bb")])
        .await
        .unwrap();
    // Recording the same version again (even with another hash) keeps what was first seen:
    // that is what lint compares the manifest with.
    store
        .record_notice_hashes(&[h("rewards", 1, "cc"), h("rewards", 2, "dd")])
        .await
        .unwrap();
    store.record_notice_hashes(&[]).await.unwrap();
    assert_eq!(
        store.notice_hashes().await.unwrap(),
        vec![
            h("newsletter", 2, "bb"),
            h("rewards", 1, "aa"),
            h("rewards", 2, "dd")
        ]
    );
}

pub async fn notice_contents_are_kept_per_version_and_hash(store: Arc<dyn Store>) {
    let c = |id: &str, version: u32, hash: &str, content: &str, at: i64| NoticeContent {
        notice_id: id.into(),
        version,
        hash: hash.into(),
        content: content.into(),
        recorded_at: at,
    };
    store.record_notices(&[]).await.unwrap();
    store
        .record_notices(&[
            c("rewards", 1, "aa", "{\"a\":1}", T0),
            c("newsletter", 1, "bb", "{\"b\":1}", T0),
        ])
        .await
        .unwrap();
    // A later start: the same version again with other content under the same hash (never
    // overwritten), the same version under a new hash (a text changed without a new version
    // number: kept too), and a new version.
    store
        .record_notices(&[
            c("rewards", 1, "aa", "{\"a\":2}", T0 + 1),
            c("rewards", 1, "cc", "{\"c\":1}", T0 + 1),
            c("rewards", 2, "dd", "{\"d\":1}", T0 + 2),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.notice_contents("rewards").await.unwrap(),
        vec![
            c("rewards", 1, "aa", "{\"a\":1}", T0),
            c("rewards", 1, "cc", "{\"c\":1}", T0 + 1),
            c("rewards", 2, "dd", "{\"d\":1}", T0 + 2),
        ]
    );
    assert!(store.notice_contents("nope").await.unwrap().is_empty());
    // The hashes are recorded with the contents, first seen per id and version.
    let hashes: Vec<(String, u32, String)> = store
        .notice_hashes()
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.notice_id, h.version, h.hash))
        .collect();
    assert_eq!(
        hashes,
        vec![
            ("newsletter".to_owned(), 1, "bb".to_owned()),
            ("rewards".to_owned(), 1, "aa".to_owned()),
            ("rewards".to_owned(), 2, "dd".to_owned()),
        ]
    );
}

pub async fn api_keys_insert_lookup_revoke(store: Arc<dyn Store>) {
    let key = |id: &str, byte: u8, role: Role, at: i64| ApiKeyRecord {
        id: id.into(),
        hash: [byte; 32],
        role,
        name: format!("{id} key"),
        created_at: at,
        revoked_at: None,
    };
    let collect = key("kept_aaaa1111", 1, Role::Public, T0);
    let admin = key("kept_bbbb2222", 2, Role::Admin, T0 + 1);
    store.insert_api_key(&collect).await.unwrap();
    store.insert_api_key(&admin).await.unwrap();
    assert!(matches!(
        store.insert_api_key(&collect).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.api_key_by_hash(&[1; 32]).await.unwrap(),
        Some(collect.clone())
    );
    assert_eq!(store.api_key_by_hash(&[3; 32]).await.unwrap(), None);

    store
        .revoke_api_key("kept_aaaa1111", T0 + 10)
        .await
        .unwrap();
    assert_eq!(store.api_key_by_hash(&[1; 32]).await.unwrap(), None);
    store
        .revoke_api_key("kept_aaaa1111", T0 + 20)
        .await
        .unwrap();
    let listed = store.list_api_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, "kept_aaaa1111");
    assert_eq!(
        listed[0].revoked_at,
        Some(T0 + 10),
        "a second revocation moved the time"
    );
    assert_eq!(listed[1], admin);
    assert!(matches!(
        store.revoke_api_key("kept_nope", T0).await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn settings_put_if_absent_keeps_the_first_value(store: Arc<dyn Store>) {
    assert_eq!(store.get_setting("ledger.signing_key").await.unwrap(), None);
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_setting_if_absent("ledger.signing_key", &[i; 4])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = BTreeSet::new();
    for t in tasks {
        answers.insert(t.await.unwrap());
    }
    assert_eq!(answers.len(), 1, "racing starters disagreed: {answers:?}");
    let winner = answers.into_iter().next().unwrap();
    assert_eq!(
        store.get_setting("ledger.signing_key").await.unwrap(),
        Some(winner.clone())
    );
    assert_eq!(
        store
            .put_setting_if_absent("ledger.signing_key", b"other")
            .await
            .unwrap(),
        winner
    );
    store
        .put_setting("ledger.signing_key", b"replaced")
        .await
        .unwrap();
    assert_eq!(
        store.get_setting("ledger.signing_key").await.unwrap(),
        Some(b"replaced".to_vec())
    );
    store.put_setting("fresh", b"").await.unwrap();
    assert_eq!(store.get_setting("fresh").await.unwrap(), Some(Vec::new()));
}

// --- subjects --------------------------------------------------------------------------------

pub async fn subjects_get_dense_ids_in_insert_order(store: Arc<dyn Store>) {
    assert!(store.insert_subjects(Vec::new()).await.unwrap().is_empty());
    let ids = store
        .insert_subjects(vec![
            new_subject(Some("u-1"), "FR"),
            new_subject(None, "US"),
            new_subject(Some("u-3"), "BR"),
        ])
        .await
        .unwrap();
    assert_eq!(ids, vec![SubjectId(0), SubjectId(1), SubjectId(2)]);

    // A conflicting user id fails the whole call, names the id, and uses up no ids.
    match store
        .insert_subjects(vec![
            new_subject(Some("u-4"), "FR"),
            new_subject(Some("u-1"), "FR"),
        ])
        .await
    {
        Err(StoreError::Conflict { key, .. }) => assert_eq!(key, "u-1"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.subject_by_user_id("u-4").await.unwrap(), None);
    match store
        .insert_subjects(vec![
            new_subject(Some("u-5"), "FR"),
            new_subject(Some("u-5"), "FR"),
        ])
        .await
    {
        Err(StoreError::Conflict { key, .. }) => assert_eq!(key, "u-5"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let more = store
        .insert_subjects(vec![
            new_subject(Some("u-4"), "CA"),
            new_subject(None, "DE"),
        ])
        .await
        .unwrap();
    assert_eq!(more, vec![SubjectId(3), SubjectId(4)]);
    assert_eq!(store.subject_count().await.unwrap(), 5);

    let s = store.subject(SubjectId(2)).await.unwrap().unwrap();
    assert_eq!(s.user_id.as_deref(), Some("u-3"));
    assert_eq!(s.country.as_deref(), Some("BR"));
    assert_eq!(s.time_zone.as_deref(), Some("Europe/Paris"));
    assert_eq!(s.created_at, T0);
    assert_eq!(s.erasure_requested_at, None);
    assert!(!s.suppressed);
    assert_eq!(store.subject(SubjectId(5)).await.unwrap(), None);
    assert_eq!(
        store.subject_by_user_id("u-4").await.unwrap(),
        Some(SubjectId(3))
    );
    assert_eq!(store.subject_by_user_id("nobody").await.unwrap(), None);
}

pub async fn subjects_page_and_erasure(store: Arc<dyn Store>) {
    let batch: Vec<NewSubject> = (0..7)
        .map(|i| new_subject(Some(&format!("p-{i}")), "FR"))
        .collect();
    store.insert_subjects(batch).await.unwrap();
    let ids = |page: Vec<kept_core::subject::Subject>| -> Vec<u32> {
        page.iter().map(|s| s.id.0).collect()
    };
    assert_eq!(
        ids(store.subjects_page(None, 3).await.unwrap()),
        vec![0, 1, 2]
    );
    assert_eq!(
        ids(store.subjects_page(Some(SubjectId(2)), 3).await.unwrap()),
        vec![3, 4, 5]
    );
    assert_eq!(
        ids(store.subjects_page(Some(SubjectId(5)), 3).await.unwrap()),
        vec![6]
    );
    assert!(
        store
            .subjects_page(Some(SubjectId(6)), 3)
            .await
            .unwrap()
            .is_empty()
    );

    store
        .set_erasure_requested(SubjectId(4), Some(T0 + 7))
        .await
        .unwrap();
    let erased = store.subject(SubjectId(4)).await.unwrap().unwrap();
    assert_eq!(erased.erasure_requested_at, Some(T0 + 7));
    let page = store.subjects_page(Some(SubjectId(3)), 1).await.unwrap();
    assert_eq!(page[0].erasure_requested_at, Some(T0 + 7));
    store
        .set_erasure_requested(SubjectId(4), None)
        .await
        .unwrap();
    assert_eq!(
        store
            .subject(SubjectId(4))
            .await
            .unwrap()
            .unwrap()
            .erasure_requested_at,
        None
    );
    assert!(matches!(
        store.set_erasure_requested(SubjectId(70), Some(T0)).await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn concurrent_subject_inserts_stay_dense(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8u32)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let batch = (0..10).map(|_| new_subject(None, "US")).collect();
                let ids = store.insert_subjects(batch).await.unwrap();
                // One call's ids are consecutive.
                assert!(ids.windows(2).all(|w| w[1].0 == w[0].0 + 1), "{t}: {ids:?}");
                ids
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in tasks {
        all.extend(t.await.unwrap().into_iter().map(|id| id.0));
    }
    assert_eq!(all, (0..80).collect::<BTreeSet<u32>>());
    assert_eq!(store.subject_count().await.unwrap(), 80);
}

pub async fn traits_upsert_replaces_and_pages(store: Arc<dyn Store>) {
    let ids = store
        .insert_subjects((0..4).map(|_| new_subject(None, "FR")).collect())
        .await
        .unwrap();
    let (a, b, c) = (ids[0], ids[1], ids[3]);
    store
        .upsert_traits(vec![
            a_trait(a, "phone", serde_json::json!("+33 6 12 34 56 78"), 1),
            a_trait(a, "email", serde_json::json!("a@example.com"), 1),
            a_trait(
                b,
                "address",
                serde_json::json!({"city": "Lyon", "lines": ["1 rue X", null], "zip": 69001}),
                1,
            ),
            a_trait(c, "score", serde_json::json!(12.5), 1),
            a_trait(c, "vip", serde_json::json!(true), 1),
        ])
        .await
        .unwrap();
    // Upserting replaces the value and the provenance; within one call the last one wins.
    store
        .upsert_traits(vec![
            a_trait(a, "phone", serde_json::json!("+33 7 00 00 00 00"), 2),
            a_trait(a, "email", serde_json::json!("first@example.com"), 2),
            a_trait(a, "email", serde_json::json!("last@example.com"), 3),
        ])
        .await
        .unwrap();
    store.upsert_traits(Vec::new()).await.unwrap();

    let of_a = store.traits(a).await.unwrap();
    assert_eq!(
        of_a,
        vec![
            a_trait(a, "email", serde_json::json!("last@example.com"), 3),
            a_trait(a, "phone", serde_json::json!("+33 7 00 00 00 00"), 2),
        ]
    );
    assert_eq!(
        store.traits(b).await.unwrap()[0].value,
        serde_json::json!({"city": "Lyon", "lines": ["1 rue X", null], "zip": 69001})
    );
    assert!(store.traits(ids[2]).await.unwrap().is_empty());

    // Pages count subjects (with traits), never splitting one subject's traits.
    let page = store.traits_page(None, 2).await.unwrap();
    let keys: Vec<(u32, &str)> = page.iter().map(|t| (t.subject.0, t.key.as_str())).collect();
    assert_eq!(keys, vec![(a.0, "email"), (a.0, "phone"), (b.0, "address")]);
    let page = store.traits_page(Some(b), 2).await.unwrap();
    let keys: Vec<(u32, &str)> = page.iter().map(|t| (t.subject.0, t.key.as_str())).collect();
    assert_eq!(keys, vec![(c.0, "score"), (c.0, "vip")]);
    assert_eq!(page[0].value, serde_json::json!(12.5));
    assert!(store.traits_page(Some(c), 2).await.unwrap().is_empty());

    match store
        .upsert_traits(vec![a_trait(
            SubjectId(99),
            "phone",
            serde_json::json!("x"),
            1,
        )])
        .await
    {
        Err(StoreError::NotFound { what, key }) => {
            assert_eq!((what, key.as_str()), ("subject", "99"))
        }
        other => panic!("expected the unknown subject to be named, got {other:?}"),
    }
}

pub async fn channel_preferences_round_trip(store: Arc<dyn Store>) {
    let ids = store
        .insert_subjects((0..2).map(|_| new_subject(None, "US")).collect())
        .await
        .unwrap();
    let pref = |subject: SubjectId, channel: &str, at: i64| ChannelPreference {
        subject,
        channel: channel.into(),
        frequency: Some(Frequency {
            max: 2,
            period: Period::Week,
        }),
        quiet_hours: Some(QuietHours {
            start_minute: 22 * 60,
            end_minute: 7 * 60,
        }),
        updated_at: at,
    };
    store
        .put_channel_preference(&pref(ids[1], "sms", T0))
        .await
        .unwrap();
    store
        .put_channel_preference(&pref(ids[0], "email", T0))
        .await
        .unwrap();
    let replaced = ChannelPreference {
        frequency: None,
        quiet_hours: None,
        ..pref(ids[1], "sms", T0 + 1)
    };
    store.put_channel_preference(&replaced).await.unwrap();
    store
        .put_channel_preference(&pref(ids[1], "email", T0 + 2))
        .await
        .unwrap();

    assert_eq!(
        store.channel_preferences(ids[1]).await.unwrap(),
        vec![pref(ids[1], "email", T0 + 2), replaced.clone()]
    );
    assert_eq!(
        store.all_channel_preferences().await.unwrap(),
        vec![
            pref(ids[0], "email", T0),
            pref(ids[1], "email", T0 + 2),
            replaced
        ]
    );
    assert!(matches!(
        store
            .put_channel_preference(&pref(SubjectId(50), "sms", T0))
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn contacts_since_filters_and_orders(store: Arc<dyn Store>) {
    let contact = |subject: u32, at: i64, topic: Option<&str>| Contact {
        subject: SubjectId(subject),
        channel: "sms".into(),
        purpose: "marketing.communications".into(),
        topic: topic.map(str::to_string),
        at,
    };
    store
        .record_contacts(
            vec![
                contact(1, T0 + 30, Some("offers")),
                contact(2, T0 + 10, None),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    store.record_contacts(Vec::new(), Vec::new()).await.unwrap();
    // Contacts and ledger appends share the committer; both must land.
    let tasks: Vec<_> = (0..8u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_contacts(vec![contact(i, T0 + 20, None)], Vec::new())
                    .await
                    .unwrap();
                store.append_consent(record(i, i)).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.ledger_len().await.unwrap(), 8);

    let all = store.contacts_since(T0).await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(
        all.windows(2).all(|w| w[0].at <= w[1].at),
        "not in time order"
    );
    let since = store.contacts_since(T0 + 30).await.unwrap();
    assert_eq!(since, vec![contact(1, T0 + 30, Some("offers"))]);
    assert!(store.contacts_since(T0 + 31).await.unwrap().is_empty());

    // One subject's: only theirs, in time order, from `since` on.
    let of_one = store.contacts_of(SubjectId(1), T0).await.unwrap();
    assert_eq!(
        of_one,
        vec![
            contact(1, T0 + 20, None),
            contact(1, T0 + 30, Some("offers"))
        ]
    );
    assert_eq!(
        store.contacts_of(SubjectId(1), T0 + 21).await.unwrap(),
        vec![contact(1, T0 + 30, Some("offers"))]
    );
    assert!(
        store
            .contacts_of(SubjectId(99), T0)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn close_refuses_later_writes(store: Arc<dyn Store>) {
    store.append_consent(record(0, 0)).await.unwrap();
    // Writers racing with close: each is either written and acknowledged, or refused with
    // `Closed`; nothing is written without its writer hearing of it.
    let racing: Vec<_> = (1..=32u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append_consent(record(i, i)).await })
        })
        .collect();
    store.close().await.unwrap();
    let mut acked = vec![1];
    for t in racing {
        match t.await.unwrap() {
            Ok(entry) => acked.push(entry.seq),
            Err(StoreError::Closed) => {}
            Err(other) => panic!("a writer racing close got {other}"),
        }
    }
    acked.sort_unstable();
    let expected: Vec<u64> = (1..=acked.len() as u64).collect();
    assert_eq!(
        acked, expected,
        "acknowledged seqs are not the committed prefix"
    );
    assert!(matches!(
        store.append_consent(record(1, 1)).await,
        Err(StoreError::Closed)
    ));
    store.close().await.unwrap();
}

// --- decision log ----------------------------------------------------------------------------

pub(crate) fn logged(
    i: u32,
    subject: Option<u32>,
    purpose: &str,
    reason: &str,
) -> crate::DecisionLogEntry {
    crate::DecisionLogEntry {
        id: 0,
        at: T0 + i64::from(i) * 10,
        // Odd entries were asked a little ahead of the time they were decided for.
        asked_at: T0 + i64::from(i) * 10 - i64::from(i % 2),
        subject: subject.map(SubjectId),
        purpose: purpose.to_string(),
        channel: i.is_multiple_of(2).then(|| "sms".to_string()),
        topic: i.is_multiple_of(3).then(|| "offers".to_string()),
        categories: (0..i % 3).map(|c| format!("user.category_{c}")).collect(),
        allowed: reason.starts_with("allowed."),
        reason: reason.to_string(),
        evidence: format!(r#"[{{"kind":"ledger","seq":{i}}}]"#),
        obligations: if i.is_multiple_of(2) {
            r#"["honour_stop_reply"]"#.to_string()
        } else {
            "[]".to_string()
        },
        caller: format!("kept_{i:08x}"),
    }
}

pub async fn decision_log_prunes_the_oldest_first(store: Arc<dyn Store>) {
    use crate::DecisionLogQuery;
    let mut written: Vec<_> = (0..10u32)
        .map(|i| {
            let mut e = logged(i, Some(i), "marketing.communications", "denied.no_consent");
            e.asked_at = e.at;
            e
        })
        .collect();
    // Asked early, for a send a long way ahead: retention counts from when it was asked.
    let mut scheduled = logged(
        10,
        Some(10),
        "marketing.communications",
        "denied.no_consent",
    );
    scheduled.asked_at = T0 + 5;
    scheduled.at = T0 + 1_000_000;
    written.push(scheduled);
    store.append_decision_log(written).await.unwrap();
    // Entries asked at T0, T0 + 10, …, T0 + 90 and T0 + 5; those before T0 + 50 go, three at
    // a time.
    assert_eq!(store.prune_decision_log(T0 + 50, 3).await.unwrap(), 3);
    assert_eq!(store.prune_decision_log(T0 + 50, 3).await.unwrap(), 3);
    assert_eq!(store.prune_decision_log(T0 + 50, 3).await.unwrap(), 0);
    let left = store
        .decision_log(&DecisionLogQuery::default())
        .await
        .unwrap();
    let times: Vec<i64> = left.iter().map(|e| e.at).collect();
    assert_eq!(times, vec![T0 + 90, T0 + 80, T0 + 70, T0 + 60, T0 + 50]);
}

pub async fn decision_counts_add_up_per_day_and_reason(store: Arc<dyn Store>) {
    use crate::DecisionCount;
    const DAY: i64 = 24 * 60 * 60 * 1000;
    let at = |i: u32, day: i64, reason: &str| {
        let mut e = logged(i, Some(i), "marketing.communications", reason);
        e.allowed = reason.starts_with("allowed");
        e.asked_at = T0 + day * DAY;
        e
    };
    store
        .append_decision_log(vec![
            at(0, 0, "denied.no_consent"),
            at(1, 0, "denied.no_consent"),
            at(2, 0, "allowed.consent"),
            at(3, 1, "denied.no_consent"),
        ])
        .await
        .unwrap();
    // A second batch adds to the same day's counts; pruning the log leaves them.
    store
        .append_decision_log(vec![at(4, 1, "denied.no_consent")])
        .await
        .unwrap();
    store.prune_decision_log(T0 + 10 * DAY, 100).await.unwrap();
    let day0 = crate::decision_log::day_of(T0);
    let count = |day: i64, reason: &str, allowed: bool, count: u64| DecisionCount {
        day,
        reason: reason.to_owned(),
        allowed,
        count,
    };
    assert_eq!(
        store.decision_counts(day0).await.unwrap(),
        vec![
            count(day0, "allowed.consent", true, 1),
            count(day0, "denied.no_consent", false, 2),
            count(day0 + 1, "denied.no_consent", false, 2),
        ]
    );
    assert_eq!(
        store.decision_counts(day0 + 1).await.unwrap(),
        vec![count(day0 + 1, "denied.no_consent", false, 2)]
    );
}

pub async fn quarantine_holds_pages_and_prunes(store: Arc<dyn Store>) {
    use crate::quarantine::QuarantineEntry;
    let entry = |i: u32| QuarantineEntry {
        id: 0,
        received_at: T0 + i64::from(i) * 10,
        key_id: "kept_ab12cd34".to_owned(),
        key_name: "shop backend".to_owned(),
        index: i,
        code: "request.invalid_event".to_owned(),
        path: format!("batch[{i}].event"),
        message: "`event` is required".to_owned(),
        sealed: vec![0, 1, 2, u8::try_from(i).unwrap(), 255],
    };
    assert_eq!(store.quarantine_len().await.unwrap(), 0);
    assert!(store.quarantined(None, 10).await.unwrap().is_empty());
    store.quarantine(Vec::new()).await.unwrap();
    store.quarantine((0..5).map(entry).collect()).await.unwrap();
    store.quarantine((5..8).map(entry).collect()).await.unwrap();
    assert_eq!(store.quarantine_len().await.unwrap(), 8);
    // Oldest first, in pages, every field as written.
    let first = store.quarantined(None, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    let mut expected = entry(0);
    expected.id = first[0].id;
    assert_eq!(first[0], expected);
    let mut seen: Vec<u32> = first.iter().map(|e| e.index).collect();
    let mut after = first.last().map(|e| e.id);
    loop {
        let page = store.quarantined(after, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.iter().all(|e| Some(e.id) > after));
        seen.extend(page.iter().map(|e| e.index));
        after = page.last().map(|e| e.id);
    }
    assert_eq!(seen, (0..8).collect::<Vec<u32>>());
    // Received at T0, T0 + 10, …, T0 + 70; those before T0 + 50 go, three at a time.
    assert_eq!(store.prune_quarantine(T0 + 50, 3).await.unwrap(), 3);
    assert_eq!(store.prune_quarantine(T0 + 50, 3).await.unwrap(), 2);
    assert_eq!(store.prune_quarantine(T0 + 50, 3).await.unwrap(), 0);
    assert_eq!(store.quarantine_len().await.unwrap(), 3);
    let left: Vec<u32> = store
        .quarantined(None, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.index)
        .collect();
    assert_eq!(left, vec![5, 6, 7]);
}

pub async fn decision_log_appends_and_filters(store: Arc<dyn Store>) {
    use crate::DecisionLogQuery;
    assert!(
        store
            .decision_log(&DecisionLogQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    store.append_decision_log(Vec::new()).await.unwrap();
    let written: Vec<_> = (0..12u32)
        .map(|i| {
            let reason = match i % 3 {
                0 => "denied.not_promised",
                1 => "denied.no_consent",
                _ => "allowed.consent",
            };
            let purpose = if i < 6 {
                "marketing.communications"
            } else {
                "personalize.content.profiled"
            };
            logged(i, (i != 7).then_some(i % 4), purpose, reason)
        })
        .collect();
    // Two transactions: ids keep increasing across them.
    store
        .append_decision_log(written[..5].to_vec())
        .await
        .unwrap();
    store
        .append_decision_log(written[5..].to_vec())
        .await
        .unwrap();

    let all = store
        .decision_log(&DecisionLogQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 12);
    assert!(
        all.windows(2).all(|w| w[0].id > w[1].id),
        "not newest first"
    );
    // Round trip of every field, oldest last.
    let mut oldest_first = all.clone();
    oldest_first.reverse();
    for (got, want) in oldest_first.iter().zip(&written) {
        assert_eq!(
            crate::DecisionLogEntry {
                id: 0,
                ..got.clone()
            },
            *want
        );
    }

    let q = |f: fn(&mut DecisionLogQuery)| {
        let mut query = DecisionLogQuery::default();
        f(&mut query);
        query
    };
    let by_subject = store
        .decision_log(&q(|q| q.subject = Some(SubjectId(1))))
        .await
        .unwrap();
    let want: Vec<u32> = (0..12).filter(|i| *i != 7 && i % 4 == 1).rev().collect();
    let got: Vec<i64> = by_subject.iter().map(|e| (e.at - T0) / 10).collect();
    assert_eq!(got, want.iter().map(|i| i64::from(*i)).collect::<Vec<_>>());

    let by_reason = store
        .decision_log(&q(|q| q.reason = Some("denied.no_consent".into())))
        .await
        .unwrap();
    assert_eq!(by_reason.len(), 4);
    assert!(by_reason.iter().all(|e| e.reason == "denied.no_consent"));

    let by_purpose_since = store
        .decision_log(&q(|q| {
            q.purpose = Some("marketing.communications".into());
            q.since = Some(T0 + 30);
        }))
        .await
        .unwrap();
    let got: Vec<i64> = by_purpose_since.iter().map(|e| (e.at - T0) / 10).collect();
    assert_eq!(got, vec![5, 4, 3]);

    // Paging with `before`: two pages of 5 and one of 2, no entry twice.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .decision_log(&DecisionLogQuery {
                before,
                limit: 5,
                ..DecisionLogQuery::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        assert!(page.len() <= 5);
        seen.extend(page.iter().map(|e| e.id));
    }
    assert_eq!(seen, all.iter().map(|e| e.id).collect::<Vec<_>>());
    let unknown = all.iter().find(|e| e.subject.is_none()).unwrap();
    assert_eq!(unknown.caller, "kept_00000007");
}

// --- collection: identities, merges, events, retention ----------------------------------------

pub(crate) fn ident(n: u8) -> kept_core::identity::IdentifierHash {
    kept_core::identity::IdentifierHash([n; 32])
}

pub(crate) fn new_identity(
    subject: kept_core::identity::PlannedSubject,
    kind: kept_core::identity::IdentifierKind,
    n: u8,
) -> crate::collection::NewIdentity {
    crate::collection::NewIdentity {
        subject,
        key_subject: subject,
        kind,
        hash: ident(n),
        sealed: vec![n; 40],
        verified: false,
    }
}

pub(crate) fn event(
    source: &str,
    message_id: &str,
    subject: SubjectId,
    at: i64,
) -> crate::collection::NewEvent {
    crate::collection::NewEvent {
        source: source.into(),
        message_id: message_id.into(),
        subject,
        kind: "track".into(),
        name: Some(format!("Viewed {message_id}")),
        at,
        received_at: at,
        retain_until: at + 1000,
        consent: r#"{"carried":false}"#.into(),
        properties: format!(r#"{{"n":"{message_id}"}}"#),
        context: "{}".into(),
        extra: format!(r#"{{"category":"c-{message_id}"}}"#),
    }
}

pub async fn events_and_visits_move_the_last_interaction_forward(store: Arc<dyn Store>) {
    use crate::collection::EventWrite;
    let ids = store
        .insert_subjects(vec![
            new_subject(Some("u-a"), "US"),
            new_subject(Some("u-b"), "US"),
            new_subject(Some("u-c"), "US"),
        ])
        .await
        .unwrap();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert!(store.last_interactions().await.unwrap().is_empty());
    assert_eq!(store.last_interaction(a).await.unwrap(), None);
    let write = |events| EventWrite {
        events,
        traits: Vec::new(),
    };
    // The latest event of each subject in the write, in the same transaction.
    store
        .write_events(write(vec![
            event("k", "a1", a, T0 + 20),
            event("k", "a2", a, T0 + 50),
            event("k", "b1", b, T0 + 10),
        ]))
        .await
        .unwrap();
    assert_eq!(
        store.last_interactions().await.unwrap(),
        vec![(a, T0 + 50), (b, T0 + 10)]
    );
    // An older event (a late delivery) never moves it back; a newer one moves it forward.
    store
        .write_events(write(vec![
            event("k", "a3", a, T0 + 30),
            event("k", "b2", b, T0 + 40),
        ]))
        .await
        .unwrap();
    assert_eq!(store.last_interaction(a).await.unwrap(), Some(T0 + 50));
    assert_eq!(store.last_interaction(b).await.unwrap(), Some(T0 + 40));
    // A preference-center visit is an interaction, recorded with its session.
    store
        .open_session(crate::prefcenter::NewSession {
            id: "visit".into(),
            subject: c,
            created_at: T0 + 60,
            expires_at: T0 + 1_000,
        })
        .await
        .unwrap();
    assert_eq!(
        store.last_interactions().await.unwrap(),
        vec![(a, T0 + 50), (b, T0 + 40), (c, T0 + 60)]
    );
    assert_eq!(
        store.last_interaction(SubjectId(999_999)).await.unwrap(),
        None
    );
}

pub async fn identities_attach_merge_and_follow(store: Arc<dyn Store>) {
    use crate::collection::{IdentityWrite, NewMerge};
    use kept_core::identity::{IdentifierKind as K, PlannedSubject};
    // One existing subject from outside collection, with a user id column only.
    let known = store
        .insert_subjects(vec![new_subject(Some("u-known"), "DE")])
        .await
        .unwrap()[0];
    let ids = store
        .write_identities(IdentityWrite {
            new_subjects: vec![new_subject(None, "FR"), new_subject(None, "FR")],
            keys: vec![
                (PlannedSubject::New(0), vec![1; 56]),
                (PlannedSubject::New(1), vec![2; 56]),
                (PlannedSubject::Existing(known), vec![3; 56]),
            ],
            attach: vec![
                new_identity(PlannedSubject::New(0), K::AnonymousId, 10),
                new_identity(PlannedSubject::New(0), K::Email, 11),
                new_identity(PlannedSubject::New(1), K::AnonymousId, 12),
                new_identity(PlannedSubject::Existing(known), K::UserId, 13),
            ],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(ids, vec![SubjectId(known.0 + 1), SubjectId(known.0 + 2)]);
    let (anon, other) = (ids[0], ids[1]);

    let mut found = store
        .find_identities(&[ident(10), ident(11), ident(13), ident(99)])
        .await
        .unwrap();
    found.sort();
    assert_eq!(
        found,
        vec![(ident(10), anon), (ident(11), anon), (ident(13), known)]
    );
    let by_user = store
        .subjects_by_user_ids(&["u-known".into(), "u-nobody".into()])
        .await
        .unwrap();
    assert_eq!(by_user, vec![("u-known".to_string(), known)]);
    let mut facts = store
        .identity_facts(&[anon, known, SubjectId(999)])
        .await
        .unwrap();
    facts.sort_by_key(|f| f.subject);
    assert_eq!(facts.len(), 2);
    assert!(facts[0].identified && !facts[1].identified);
    assert_eq!(facts[1].counts.get(K::AnonymousId), 1);
    assert_eq!(facts[1].counts.get(K::Email), 1);
    assert_eq!(facts[1].country.as_deref(), Some("FR"));
    let mut keys = store.subject_keys(&[anon, known, other]).await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            (known, vec![3; 56]),
            (anon, vec![1; 56]),
            (other, vec![2; 56])
        ]
    );

    // The anonymous profile's trait moves with the merge; the survivor's own newer one stays.
    store
        .upsert_traits(vec![
            a_trait(anon, "name", serde_json::json!("From browsing"), 1),
            a_trait(anon, "shoe", serde_json::json!(38), 1),
            a_trait(known, "name", serde_json::json!("Known"), 2),
        ])
        .await
        .unwrap();
    store
        .write_identities(IdentityWrite {
            merges: vec![NewMerge {
                from: PlannedSubject::Existing(anon),
                into: PlannedSubject::Existing(known),
                reason: "identify".into(),
            }],
            user_ids: vec![(other, "u-other".into())],
            at: T0 + 1,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    let found = store
        .find_identities(&[ident(10), ident(11)])
        .await
        .unwrap();
    assert!(found.iter().all(|(_, s)| *s == known), "{found:?}");
    let held = store.identities_of(known).await.unwrap();
    assert_eq!(held.len(), 3);
    let email = held.iter().find(|i| i.kind == K::Email).unwrap();
    // The seal stays bound to the key it was made with.
    assert_eq!(
        (email.key_subject, email.sealed.clone()),
        (anon, vec![11; 40])
    );
    assert!(store.identities_of(anon).await.unwrap().is_empty());
    assert_eq!(store.merged_into(known).await.unwrap(), vec![anon]);
    assert!(store.merged_into(anon).await.unwrap().is_empty());
    let traits = store.traits(known).await.unwrap();
    let value = |k: &str| traits.iter().find(|t| t.key == k).map(|t| t.value.clone());
    assert_eq!(value("name"), Some(serde_json::json!("Known")));
    assert_eq!(value("shoe"), Some(serde_json::json!(38)));
    assert!(store.traits(anon).await.unwrap().is_empty());
    assert_eq!(
        store.subject_by_user_id("u-other").await.unwrap(),
        Some(other)
    );

    // A chain of merges is followed all the way.
    store
        .write_identities(IdentityWrite {
            merges: vec![NewMerge {
                from: PlannedSubject::Existing(known),
                into: PlannedSubject::Existing(other),
                reason: "alias".into(),
            }],
            at: T0 + 2,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(store.merged_into(other).await.unwrap(), vec![known, anon]);
}

/// Identifiers carry whether they are verified; every merge is in the identity log with what it
/// moved; an undo gives the merged-away subject back its identifiers and traits, once.
pub async fn verified_identities_the_identity_log_and_undo(store: Arc<dyn Store>) {
    use crate::collection::{IdentityWrite, NewMerge};
    use kept_core::identity::{IdentifierKind as K, PlannedSubject};
    let [a, b]: [SubjectId; 2] = store
        .insert_subjects(vec![
            new_subject(Some("u-a"), "DE"),
            new_subject(Some("u-b"), "DE"),
        ])
        .await
        .unwrap()
        .try_into()
        .unwrap();
    let mut verified_email = new_identity(PlannedSubject::Existing(a), K::Email, 30);
    verified_email.verified = true;
    store
        .write_identities(IdentityWrite {
            attach: vec![
                verified_email,
                new_identity(PlannedSubject::Existing(a), K::Phone, 31),
                new_identity(PlannedSubject::Existing(b), K::Email, 32),
            ],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    let facts = store.identity_facts(&[a, b]).await.unwrap();
    let of = |s: SubjectId| facts.iter().find(|f| f.subject == s).unwrap().verified;
    assert!(of(a));
    assert!(!of(b));
    assert_eq!(
        store
            .verified_identities(&[ident(30), ident(31), ident(32), ident(99)])
            .await
            .unwrap(),
        vec![ident(30)]
    );
    // A held identifier becomes verified.
    store
        .write_identities(IdentityWrite {
            verify: vec![ident(32)],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    assert!(store.identities_of(b).await.unwrap()[0].verified);

    store
        .upsert_traits(vec![
            a_trait(a, "name", serde_json::json!("Anna"), 1),
            a_trait(b, "name", serde_json::json!("Berta"), 2),
            a_trait(a, "shoe", serde_json::json!(38), 1),
        ])
        .await
        .unwrap();
    store
        .write_identities(IdentityWrite {
            merges: vec![NewMerge {
                from: PlannedSubject::Existing(a),
                into: PlannedSubject::Existing(b),
                reason: "alias".into(),
            }],
            key_id: Some("kept_aaaa1111".into()),
            at: T0 + 5,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(store.survivors(&[a, b]).await.unwrap(), vec![(a, b)]);
    assert_eq!(store.merges_page(None, 10).await.unwrap(), vec![(a, b)]);
    let log = store.identity_log(None, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    let merge = &log[0];
    assert_eq!(
        (
            merge.action.as_str(),
            merge.from,
            merge.into,
            merge.cause.as_str()
        ),
        ("merge", a, b, "alias")
    );
    assert_eq!(merge.key_id.as_deref(), Some("kept_aaaa1111"));
    assert_eq!((merge.at, merge.undone_at), (T0 + 5, None));
    assert_eq!(store.identities_of(b).await.unwrap().len(), 3);

    let undone = store
        .undo_merge(merge.id, Some("kept_bbbb2222"), T0 + 9)
        .await
        .unwrap();
    assert_eq!((undone.identifiers, undone.traits), (2, 2));
    assert_eq!(undone.entry.undoes, Some(merge.id));
    let mine: Vec<_> = store
        .identities_of(a)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.hash, i.verified))
        .collect();
    assert_eq!(mine, vec![(ident(30), true), (ident(31), false)]);
    assert_eq!(store.identities_of(b).await.unwrap().len(), 1);
    let name = |traits: Vec<kept_core::subject::Trait>| {
        traits
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        name(store.traits(a).await.unwrap()),
        vec![
            ("name".to_owned(), serde_json::json!("Anna")),
            ("shoe".to_owned(), serde_json::json!(38))
        ]
    );
    assert_eq!(
        name(store.traits(b).await.unwrap()),
        vec![("name".to_owned(), serde_json::json!("Berta"))]
    );
    assert!(store.survivors(&[a]).await.unwrap().is_empty());
    assert!(store.merges_page(None, 10).await.unwrap().is_empty());
    let log = store.identity_log(None, 10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].action, "undo");
    assert_eq!(log[1].undone_at, Some(T0 + 9));
    assert_eq!(
        store.identity_log(Some(log[0].id), 10).await.unwrap().len(),
        1
    );
    // A subject's own entries, oldest first: the merge of `a` and its undo name `a` as the
    // subject merged away; `b` merged nobody away.
    let of_a = store.identity_log_of(&[a]).await.unwrap();
    assert_eq!(
        of_a.iter().map(|m| m.action.as_str()).collect::<Vec<_>>(),
        vec!["merge", "undo"]
    );
    assert_eq!(of_a[0], log[1]);
    assert!(store.identity_log_of(&[b]).await.unwrap().is_empty());
    assert!(store.identity_log_of(&[]).await.unwrap().is_empty());
    match store.undo_merge(merge.id, None, T0 + 10).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("a second undo must conflict, got {other:?}"),
    }
    match store.undo_merge(merge.id + 100, None, T0 + 10).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("an unknown merge must be not found, got {other:?}"),
    }

    // The copies a merge keeps for its undo expire with the traits they copy.
    store
        .write_identities(IdentityWrite {
            merges: vec![NewMerge {
                from: PlannedSubject::Existing(a),
                into: PlannedSubject::Existing(b),
                reason: "alias".into(),
            }],
            at: T0 + 20,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    store
        .delete_expired_traits(&kept_core::collection::TraitCutoffs {
            by_notice: Vec::new(),
            otherwise: i64::MAX,
        })
        .await
        .unwrap();
    let again = store.identity_log(None, 1).await.unwrap()[0].id;
    let undone = store.undo_merge(again, None, T0 + 21).await.unwrap();
    assert_eq!((undone.identifiers, undone.traits), (2, 0));
    assert!(store.traits(a).await.unwrap().is_empty());
}

pub async fn an_identity_conflict_writes_nothing(store: Arc<dyn Store>) {
    use crate::collection::IdentityWrite;
    use kept_core::identity::{IdentifierKind as K, PlannedSubject};
    let first = store
        .write_identities(IdentityWrite {
            new_subjects: vec![new_subject(None, "DE")],
            keys: vec![(PlannedSubject::New(0), vec![1; 56])],
            attach: vec![new_identity(PlannedSubject::New(0), K::AnonymousId, 1)],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    // A second writer that did not see the first claims the same anonymous id.
    let err = store
        .write_identities(IdentityWrite {
            new_subjects: vec![new_subject(Some("u-late"), "DE")],
            keys: vec![(PlannedSubject::New(0), vec![2; 56])],
            attach: vec![
                new_identity(PlannedSubject::New(0), K::UserId, 2),
                new_identity(PlannedSubject::New(0), K::AnonymousId, 1),
            ],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "store.conflict", "{err}");
    assert_eq!(store.subject_count().await.unwrap(), 1);
    assert!(store.find_identities(&[ident(2)]).await.unwrap().is_empty());
    assert_eq!(store.subject_by_user_id("u-late").await.unwrap(), None);
    // A key for a subject that has one is a conflict too; ids stay dense afterwards.
    let err = store
        .write_identities(IdentityWrite {
            keys: vec![(PlannedSubject::Existing(first[0]), vec![3; 56])],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "store.conflict");
    let next = store
        .write_identities(IdentityWrite {
            new_subjects: vec![new_subject(None, "DE")],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(next, vec![SubjectId(first[0].0 + 1)]);
}

pub async fn events_deduplicate_and_follow_merges(store: Arc<dyn Store>) {
    use crate::collection::{EventWrite, IdentityWrite, NewMerge};
    use kept_core::identity::PlannedSubject;
    let ids = store
        .insert_subjects(vec![new_subject(Some("a"), "DE"), new_subject(None, "DE")])
        .await
        .unwrap();
    let (user, anon) = (ids[0], ids[1]);
    // Concurrent writers, one of them retrying a message the other already sent.
    let writes = [
        EventWrite {
            events: vec![
                event("key1", "m1", anon, T0),
                event("key1", "m2", anon, T0 + 1),
            ],
            traits: vec![a_trait(anon, "name", serde_json::json!("Ada"), 1)],
        },
        EventWrite {
            events: vec![
                event("key1", "m1", anon, T0 + 5),
                event("key2", "m1", user, T0 + 2),
            ],
            traits: Vec::new(),
        },
        EventWrite {
            events: vec![
                event("key1", "m3", user, T0 + 3),
                event("key1", "m3", user, T0 + 3),
            ],
            traits: Vec::new(),
        },
    ];
    let tasks: Vec<_> = writes
        .into_iter()
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move { store.write_events(w).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let of_anon = store.events_of(anon, None, 100).await.unwrap();
    let keys: BTreeSet<(String, String)> = of_anon
        .iter()
        .map(|e| (e.event.source.clone(), e.event.message_id.clone()))
        .collect();
    assert_eq!(of_anon.len(), 2, "{of_anon:?}");
    assert!(keys.contains(&("key1".into(), "m1".into())));
    assert_eq!(store.traits(anon).await.unwrap().len(), 1);
    assert_eq!(store.events_of(user, None, 100).await.unwrap().len(), 2);

    store
        .write_identities(IdentityWrite {
            merges: vec![NewMerge {
                from: PlannedSubject::Existing(anon),
                into: PlannedSubject::Existing(user),
                reason: "identify".into(),
            }],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    let all = store.events_of(user, None, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let page = store.events_of(user, Some(all[1].id), 2).await.unwrap();
    assert_eq!(page, all[2..4].to_vec());
    let stored = &all
        .iter()
        .find(|e| e.event.message_id == "m2")
        .unwrap()
        .event;
    assert_eq!(stored, &event("key1", "m2", anon, T0 + 1));
}

pub async fn retention_deletes_what_expired(store: Arc<dyn Store>) {
    use crate::collection::EventWrite;
    use kept_core::collection::TraitCutoffs;
    let made = store
        .insert_subjects(vec![
            new_subject(None, "DE"),
            new_subject(None, "FR"),
            new_subject(None, "IT"),
        ])
        .await
        .unwrap();
    let (s, other, untouched) = (made[0], made[1], made[2]);
    let mut short = event("k", "short", s, T0);
    short.retain_until = T0 + 10;
    let mut long = event("k", "long", s, T0);
    long.retain_until = T0 + 1_000_000;
    let mut old = event("k", "old", s, T0 - 500);
    old.received_at = T0 - 500;
    old.retain_until = T0 + 1_000_000;
    store
        .write_events(EventWrite {
            events: vec![short, long, old],
            traits: Vec::new(),
        })
        .await
        .unwrap();
    // `short` is past its own retention; `old` was received before the manifest-wide cutoff.
    assert_eq!(
        store
            .delete_expired_events(T0 + 10, T0 - 100, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .delete_expired_events(T0 + 10, T0 - 100, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .delete_expired_events(T0 + 10, T0 - 100, 100)
            .await
            .unwrap(),
        0
    );
    let left = store.events_of(s, None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event.message_id, "long");

    // Traits: `a_trait` files them under `checkout_notice`, collected at T0 + version.
    let mut elsewhere = a_trait(s, "elsewhere", serde_json::json!(1), 1);
    elsewhere.provenance.notice_id = "gone_notice".into();
    store
        .upsert_traits(vec![
            a_trait(s, "old", serde_json::json!(1), 1),
            a_trait(s, "new", serde_json::json!(1), 9),
            elsewhere,
            a_trait(other, "old", serde_json::json!(2), 2),
            a_trait(untouched, "new", serde_json::json!(3), 8),
        ])
        .await
        .unwrap();
    let cutoffs = TraitCutoffs {
        by_notice: vec![("checkout_notice".into(), T0 + 5)],
        otherwise: T0 + 2,
    };
    let deleted = store.delete_expired_traits(&cutoffs).await.unwrap();
    // Three rows, two subjects, each named once in ascending order.
    assert_eq!(deleted.count, 3);
    assert_eq!(deleted.subjects, vec![s, other]);
    let again = store.delete_expired_traits(&cutoffs).await.unwrap();
    assert_eq!(again, crate::collection::DeletedTraits::default());
    assert_eq!(store.traits(untouched).await.unwrap().len(), 1);
    let keys: Vec<String> = store
        .traits(s)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(keys, vec!["new".to_string()]);
}

pub async fn key_collection_points_round_trip(store: Arc<dyn Store>) {
    let key = ApiKeyRecord {
        id: "kept_0000abcd".into(),
        hash: [5; 32],
        role: Role::Public,
        name: "web".into(),
        created_at: T0,
        revoked_at: None,
    };
    store.insert_api_key(&key).await.unwrap();
    assert_eq!(store.key_collection_point(&key.id).await.unwrap(), None);
    store
        .set_key_collection_point(&key.id, Some("web_shop"))
        .await
        .unwrap();
    store
        .set_key_collection_point(&key.id, Some("checkout"))
        .await
        .unwrap();
    assert_eq!(
        store
            .key_collection_point(&key.id)
            .await
            .unwrap()
            .as_deref(),
        Some("checkout")
    );
    store.set_key_collection_point(&key.id, None).await.unwrap();
    assert_eq!(store.key_collection_point(&key.id).await.unwrap(), None);
    let err = store
        .set_key_collection_point("kept_ffffffff", Some("checkout"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "store.not_found");
}

pub async fn uses_are_recorded_with_contacts_and_read_per_subject(store: Arc<dyn Store>) {
    use crate::uses::{UseKind, UseQuery, UseRecord, UseSubjects};
    let used = |kind: UseKind, subjects: UseSubjects, reference: Option<&str>, at: i64| UseRecord {
        id: 0,
        at,
        kind,
        subjects,
        purpose: "marketing.communications".into(),
        channel: Some("email".into()),
        topic: None,
        categories: vec!["user.contact.email".into()],
        reason: "allowed.consent".into(),
        evidence: r#"[{"kind":"ledger","seq":1}]"#.into(),
        actor: "kept_test".into(),
        reference: reference.map(str::to_owned),
    };
    let contact = Contact {
        subject: SubjectId(1),
        channel: "email".into(),
        purpose: "marketing.communications".into(),
        topic: None,
        at: T0,
    };
    // A contact and its use commit together, alongside a ledger append.
    let (a, b) = tokio::join!(
        store.record_contacts(
            vec![contact.clone()],
            vec![used(
                UseKind::Contact,
                UseSubjects::One(SubjectId(1)),
                None,
                T0
            )],
        ),
        store.append_consent(record(1, 0)),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(store.contacts_since(T0).await.unwrap(), vec![contact]);
    // A set naming subjects 1 and 3 (an export), another without 1, and a forward twice.
    let set = |ids: &[u32]| UseSubjects::set(&ids.iter().copied().collect());
    store
        .record_uses(vec![
            used(UseKind::Export, set(&[1, 3]), Some("exp_1"), T0 + 1),
            used(UseKind::Export, set(&[2, 3]), Some("exp_2"), T0 + 2),
            used(
                UseKind::Forward,
                UseSubjects::One(SubjectId(1)),
                Some("msg_1"),
                T0 + 3,
            ),
        ])
        .await
        .unwrap();
    // A retried forward is one use: the second is skipped (its time would show otherwise).
    let again = used(
        UseKind::Forward,
        UseSubjects::One(SubjectId(1)),
        Some("msg_1"),
        T0 + 9,
    );
    store.record_uses(vec![again]).await.unwrap();

    let query = |subject: u32, before: Option<u64>, limit: u32| UseQuery {
        subject: SubjectId(subject),
        before,
        limit,
    };
    let of_one = store.uses_of(&query(1, None, 10)).await.unwrap();
    let kinds: Vec<_> = of_one.iter().map(|u| (u.kind, u.at)).collect();
    assert_eq!(
        kinds,
        vec![
            (UseKind::Forward, T0 + 3),
            (UseKind::Export, T0 + 1),
            (UseKind::Contact, T0)
        ],
        "newest first, the export without subject 1 left out"
    );
    assert_eq!(of_one[0].reason, "allowed.consent");
    assert_eq!(of_one[0].categories, vec!["user.contact.email".to_owned()]);
    assert_eq!(of_one[1].subjects.count(), 2);
    // Pages of one, each after the last one returned, reach the same three.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store.uses_of(&query(1, before, 1)).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, of_one);
    let of_three = store.uses_of(&query(3, None, 10)).await.unwrap();
    assert_eq!(of_three.len(), 2);
    assert!(store.uses_of(&query(9, None, 10)).await.unwrap().is_empty());
}
