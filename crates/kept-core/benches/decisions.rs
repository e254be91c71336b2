//! Single decisions in process, Kept's index beside the `cedar-policy` crate evaluating the same
//! consent rule over the same subjects (entities carrying the consent attributes). Prints
//! decisions per second, p50 and p99, and the ratio. Both answer for every subject and must
//! agree, or the benchmark stops.
//!
//! cargo bench -p kept-core --bench decisions   (KEPT_BENCH_SUBJECTS=100000 by default)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "bench code: a failed setup step ends the benchmark"
)]

mod common;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression,
};
use common::*;
use kept_core::SubjectId;
use kept_core::index::Index;
use kept_core::ledger::ConsentAction;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

const POLICY: &str = r#"
permit (principal, action == Action::"use", resource == Purpose::"marketing.communications")
when {
  !principal.erasure && !principal.suppressed && principal.email_promised &&
  (
    (["us", "ccpa", "us_state"].contains(principal.regime) && principal.consent != "withdrawn" && principal.consent != "opted_out") ||
    principal.consent == "given"
  ) &&
  (principal.weekly_max < 0 || principal.sent_this_week < principal.weekly_max)
};
"#;

fn entity(p: &Person) -> Entity {
    let consent = match p.consent {
        None => "none",
        Some((_, ConsentAction::Given)) => "given",
        Some((_, ConsentAction::Withdrawn)) => "withdrawn",
        Some((_, ConsentAction::OptedOut)) => "opted_out",
        Some(_) => "other",
    };
    let attrs = HashMap::from([
        (
            "erasure".to_string(),
            RestrictedExpression::new_bool(p.erasure),
        ),
        (
            "suppressed".to_string(),
            RestrictedExpression::new_bool(p.suppressed),
        ),
        (
            "email_promised".to_string(),
            RestrictedExpression::new_bool(p.email_newsletter),
        ),
        (
            "email_from_purchase".to_string(),
            RestrictedExpression::new_bool(p.email_checkout),
        ),
        (
            "regime".to_string(),
            RestrictedExpression::new_string(PLACES[p.place].2.to_string()),
        ),
        (
            "consent".to_string(),
            RestrictedExpression::new_string(consent.to_string()),
        ),
        (
            "weekly_max".to_string(),
            RestrictedExpression::new_long(if p.capped { 2 } else { -1 }),
        ),
        (
            "sent_this_week".to_string(),
            RestrictedExpression::new_long(sent_this_week(p)),
        ),
    ]);
    Entity::new(uid("Subject", &p.id.to_string()), attrs, HashSet::new()).unwrap()
}

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(kind).unwrap(),
        EntityId::from_str(id).unwrap(),
    )
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn latencies(mut f: impl FnMut(usize), n: usize) -> (Duration, Duration) {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        f(i);
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn main() {
    let n: u32 = std::env::var("KEPT_BENCH_SUBJECTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let seed = 42;
    println!("decisions: {n} synthetic subjects, marketing.communications by email");
    let people: Vec<Person> = (0..n).map(|i| person(seed, i)).collect();
    let ctx = compiled();
    let mut seq = 0;
    let all: Vec<_> = people.iter().flat_map(|p| changes(p, &mut seq)).collect();
    let (index, build) = time(|| Index::build(ctx.clone(), all));
    let snapshot = index.snapshot();
    println!("  index built in {:.2} s", build.as_secs_f64());

    let policies = PolicySet::from_str(POLICY).unwrap();
    let entities = Entities::from_entities(people.iter().map(entity), None).unwrap();
    let principals: Vec<EntityUid> = people
        .iter()
        .map(|p| uid("Subject", &p.id.to_string()))
        .collect();
    let action = uid("Action", "use");
    let resource = uid("Purpose", MARKETING);
    let authorizer = Authorizer::new();
    let cedar = |i: usize| -> bool {
        let request = Request::new(
            principals[i].clone(),
            action.clone(),
            resource.clone(),
            Context::empty(),
            None,
        )
        .unwrap();
        authorizer
            .is_authorized(&request, &policies, &entities)
            .decision()
            == CedarDecision::Allow
    };

    let req = request();
    let prepared = snapshot.prepare(&req);
    // Same answers for every subject, or the comparison means nothing.
    let mut allowed = 0;
    for (i, p) in people.iter().enumerate() {
        let kept = snapshot
            .decide_prepared(SubjectId(p.id), &prepared, NOW)
            .allowed;
        assert_eq!(kept, cedar(i), "subject {} disagrees: {p:?}", p.id);
        allowed += usize::from(kept);
    }
    println!("  Kept and Cedar agree on all {n} subjects ({allowed} allowed)");

    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let order: Vec<u32> = (0..2_000_000).map(|_| rng.gen_range(0..n)).collect();

    if std::env::var_os("KEPT_BENCH_PROFILE").is_some() {
        // Only Kept's loop, long enough for a profiler.
        for _ in 0..20 {
            for id in &order {
                black_box(snapshot.decide_prepared(SubjectId(*id), black_box(&prepared), NOW));
            }
        }
        return;
    }

    // Throughput: decisions in a loop over random subjects.
    let kept_n = order.len();
    let (_, kept_time) = time(|| {
        for id in &order {
            black_box(snapshot.decide_prepared(SubjectId(*id), black_box(&prepared), NOW));
        }
    });
    let unprepared_n = 500_000;
    let (_, unprepared_time) = time(|| {
        for id in &order[..unprepared_n] {
            black_box(snapshot.decide(SubjectId(*id), black_box(&req), NOW));
        }
    });
    let cedar_n = 200_000;
    let (_, cedar_time) = time(|| {
        for id in &order[..cedar_n] {
            black_box(cedar(*id as usize));
        }
    });

    // Latency of single calls (each timed on its own; the timer's own cost is included).
    let (kept_p50, kept_p99) = latencies(
        |i| {
            black_box(snapshot.decide_prepared(SubjectId(order[i]), &prepared, NOW));
        },
        1_000_000,
    );
    let (unprep_p50, unprep_p99) = latencies(
        |i| {
            black_box(snapshot.decide(SubjectId(order[i]), &req, NOW));
        },
        300_000,
    );
    let (cedar_p50, cedar_p99) = latencies(
        |i| {
            black_box(cedar(order[i] as usize));
        },
        100_000,
    );
    let (empty_p50, _) = latencies(
        |i| {
            black_box(i);
        },
        1_000_000,
    );

    let kept_rate = rate(kept_n, kept_time);
    let unprep_rate = rate(unprepared_n, unprepared_time);
    let cedar_rate = rate(cedar_n, cedar_time);
    println!();
    println!(
        "  {:<44} {:>14} {:>10} {:>10}",
        "engine", "decisions/s", "p50", "p99"
    );
    println!(
        "  {:<44} {:>14.0} {:>10?} {:>10?}",
        "Kept index, prepared request", kept_rate, kept_p50, kept_p99
    );
    println!(
        "  {:<44} {:>14.0} {:>10?} {:>10?}",
        "Kept index, request by keys (prepared per call)", unprep_rate, unprep_p50, unprep_p99
    );
    println!(
        "  {:<44} {:>14.0} {:>10?} {:>10?}",
        "cedar-policy 4.14", cedar_rate, cedar_p50, cedar_p99
    );
    println!("  (timer overhead per timed call: ~{empty_p50:?})");
    println!();
    println!(
        "  ratio, prepared: {:.0}x Cedar's rate",
        kept_rate / cedar_rate
    );
    println!(
        "  ratio, by keys:  {:.0}x Cedar's rate",
        unprep_rate / cedar_rate
    );
    let memory = snapshot.memory();
    println!(
        "  index memory: {:.1} bytes per subject ({} bitmap bytes, {} entry bytes)",
        memory.bytes_per_subject, memory.bitmap_bytes, memory.entry_bytes
    );
}
