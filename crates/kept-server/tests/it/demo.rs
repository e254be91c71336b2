//! The demo population: deterministic, varied, and loaded once into an empty store.

use crate::support::{NOW, demo_manifest, signing_key};
use kept_core::SubjectId;
use kept_core::demo::{self, DemoPopulation};
use kept_core::ledger::{CollectionMethod, ConsentAction};
use kept_core::regime::Regime;
use kept_server::consent::ledger::Ledger;
use kept_store::Role;
use std::collections::{BTreeMap, BTreeSet};

fn population(seed: u64) -> DemoPopulation {
    demo::population(seed, demo::DEFAULT_SIZE, NOW, &demo_manifest()).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_population() {
    let a = population(7);
    let b = population(7);
    assert_eq!(a, b);
    let c = population(8);
    assert_ne!(a.subjects, c.subjects);
}

#[test]
fn the_population_spans_every_regime_and_kind_of_record() {
    let p = population(demo::DEFAULT_SEED);
    assert_eq!(p.subjects.len(), demo::DEFAULT_SIZE as usize);
    for (i, s) in p.subjects.iter().enumerate() {
        assert_eq!(s.id, SubjectId(i as u32), "ids are dense");
        assert!(s.created_at < NOW);
    }

    let mut regimes: BTreeMap<Regime, usize> = BTreeMap::new();
    for s in &p.subjects {
        *regimes.entry(s.regime()).or_default() += 1;
    }
    for regime in Regime::ALL {
        assert!(
            regimes.get(&regime).copied().unwrap_or(0) > 0,
            "no {regime} subject: {regimes:?}"
        );
    }
    let regions: BTreeSet<&str> = p
        .subjects
        .iter()
        .filter(|s| s.country.as_deref() == Some("US"))
        .filter_map(|s| s.region.as_deref())
        .collect();
    for state in ["CA", "CO", "TX", "FL"] {
        assert!(regions.contains(state), "no subject in US-{state}");
    }
    assert!(p.subjects.iter().any(|s| s.time_zone.is_none()));
    assert!(
        p.subjects
            .iter()
            .any(|s| s.time_zone.as_deref() == Some("America/Denver"))
    );

    // Provenance from every collection point of the demo manifest.
    let points: BTreeSet<&str> = p
        .traits
        .iter()
        .map(|t| t.provenance.collection_point.as_str())
        .collect();
    for cp in [
        "checkout",
        "rewards_signup",
        "newsletter_signup",
        "web_shop",
        "sms_offers_optin",
    ] {
        assert!(points.contains(cp), "no trait collected at {cp}");
    }
    let categories: BTreeSet<&str> = p.traits.iter().map(|t| t.category.as_str()).collect();
    for category in [
        "user.contact.email",
        "user.contact.phone_number",
        "user.contact.address",
        "user.name",
        "user.behavior.purchase_history",
        "user.behavior.browsing_history",
    ] {
        assert!(categories.contains(category), "no {category} trait");
    }

    let count = |f: &dyn Fn(&kept_core::ledger::ConsentRecord) -> bool| {
        p.consents.iter().filter(|c| f(c)).count()
    };
    assert!(
        count(&|c| c.topic.as_deref() == Some("newsletter") && c.action == ConsentAction::Given)
            > 100
    );
    assert!(count(&|c| c.topic.as_deref() == Some("offers")) > 0);
    assert!(count(&|c| c.action == ConsentAction::Withdrawn) > 0);
    assert!(count(&|c| c.action == ConsentAction::Objected) > 0);
    let gpc = count(&|c| {
        c.action == ConsentAction::OptedOut
            && c.method == CollectionMethod::Gpc
            && c.purpose == "marketing.advertising.third_party.targeted"
    });
    assert!(gpc > 0);

    // SMS marketing consent is written, and only from rewards members who used the SMS opt-in.
    let sms_written: Vec<_> = p
        .consents
        .iter()
        .filter(|c| c.channel.as_deref() == Some("sms") && c.action == ConsentAction::Given)
        .collect();
    assert!(!sms_written.is_empty());
    assert!(
        sms_written.len() < p.subjects.len() / 10,
        "only a few: {}",
        sms_written.len()
    );
    for c in &sms_written {
        assert_eq!(c.method, CollectionMethod::Written);
        assert_eq!(c.notice.as_ref().unwrap().id, "sms_offers");
        let phone = p
            .traits
            .iter()
            .find(|t| t.subject == c.subject && t.category == "user.contact.phone_number")
            .expect("an SMS subscriber has a phone number");
        assert_eq!(phone.provenance.collection_point, "sms_offers_optin");
    }

    // Every notice reference carries the manifest's version and hash.
    let manifest = demo_manifest();
    for c in &p.consents {
        if let Some(n) = &c.notice {
            assert_eq!(n.hash, manifest.notices[&n.id].hash);
            assert_eq!(n.version, manifest.notices[&n.id].version);
        }
        assert_eq!(c.regime, p.subjects[c.subject.0 as usize].regime().as_str());
        assert!(c.at <= NOW);
    }
    assert!(
        p.consents.windows(2).all(|w| w[0].at <= w[1].at),
        "ledger order is time order"
    );
    assert!(!p.preferences.is_empty());
    assert!(p.preferences.iter().any(|pr| pr.quiet_hours.is_some()));
    assert!(p.preferences.iter().any(|pr| pr.frequency.is_some()));
    assert!(!p.contacts.is_empty());
}

#[tokio::test]
async fn the_demo_loads_once_and_writes_its_keys_privately() {
    let dir = tempfile::tempdir().unwrap();
    let store = kept_server::store::open(dir.path().join("kept.db").to_str().unwrap())
        .await
        .unwrap();
    let ledger = Ledger::new(store.clone(), signing_key());
    let manifest = demo_manifest();
    let data_dir = dir.path().join("kept-data");
    // Everything logged while loading, to check no secret reaches it.
    let logged = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logged.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let loaded =
        kept_server::demo::load_if_empty(store.as_ref(), &ledger, &manifest, NOW, &data_dir)
            .await
            .unwrap()
            .expect("an empty store gets the demo");
    drop(guard);
    assert_eq!(loaded.subjects, demo::DEFAULT_SIZE as usize);
    assert_eq!(
        store.subject_count().await.unwrap(),
        u64::from(demo::DEFAULT_SIZE)
    );
    assert_eq!(store.ledger_len().await.unwrap(), loaded.consents as u64);
    assert!(!store.checkpoints().await.unwrap().is_empty());

    let mut file: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&loaded.keys_file).unwrap()).unwrap();
    let operators = file.remove("operators").expect("the console's operators");
    let keys: BTreeMap<String, String> = file
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        keys.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "admin",
            "decide",
            "identity_secret",
            "privacy",
            "public",
            "server"
        ]
    );
    let log = logged.text();
    assert!(log.contains("demo API key created"), "{log}");
    for key in keys.values() {
        assert!(!log.contains(key.as_str()), "a secret in the log: {log}");
    }
    let auth = kept_server::http::auth::Authenticator::new(store.clone());
    for (role, key) in keys.iter().filter(|(name, _)| *name != "identity_secret") {
        assert_eq!(auth.verify(key).await.unwrap().role.as_str(), role);
    }
    // One operator per team, who can sign in with what the file says.
    for role in kept_store::operators::OperatorRole::ALL {
        let op = &operators[role.as_str()];
        let email = op["email"].as_str().unwrap();
        let password = op["password"].as_str().unwrap();
        assert!(!log.contains(password), "a password in the log");
        let secret =
            kept_server::console::accounts::secret_from_base32(op["totp_secret"].as_str().unwrap())
                .unwrap();
        let code = kept_server::console::accounts::code_at(&secret, NOW);
        let signed =
            kept_server::console::accounts::sign_in(store.as_ref(), email, password, &code, NOW)
                .await
                .unwrap()
                .expect("the demo operator signs in");
        assert_eq!(signed.role, role);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&loaded.keys_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let again =
        kept_server::demo::load_if_empty(store.as_ref(), &ledger, &manifest, NOW, &data_dir)
            .await
            .unwrap();
    assert_eq!(again, None, "a restart leaves the demo data alone");
    assert_eq!(
        store.subject_count().await.unwrap(),
        u64::from(demo::DEFAULT_SIZE)
    );
    assert_eq!(store.list_api_keys().await.unwrap().len(), Role::ALL.len());
}

/// A log sink for tests: every line written, kept in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}
