//! A server on a fresh SQLite store in a temporary directory, with a fixed clock, the demo
//! manifest, three subjects and one API key per role.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use ed25519_dalek::SigningKey;
use kept_core::SubjectId;
use kept_core::UnixMillis;
use kept_core::manifest::Manifest;
use kept_server::consent::ledger::Ledger;
use kept_server::state::{AppState, Limits};
use kept_store::{NewSubject, Role, Store};
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

/// 2026-05-28T20:26:40Z, the time every test runs at.
pub const NOW: UnixMillis = 1_780_000_000_000;

pub fn demo_manifest() -> Manifest {
    demo_loaded().manifest
}

/// The demo manifest as loaded from its file, positions and all.
pub fn demo_loaded() -> kept_core::manifest::Loaded {
    kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
        .expect("the demo manifest loads")
}

/// A fresh, empty store for one test (see `test_store_url`).
#[allow(
    dead_code,
    reason = "kept for tests that need a store without a server"
)]
pub async fn test_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    kept_server::store::open(&test_store_url(dir).await)
        .await
        .unwrap()
}

/// A fresh, empty store for one test: SQLite in `dir`, or, when `KEPT_TEST_BACKEND=postgres`,
/// a schema of its own in the database `KEPT_TEST_DATABASE_URL` names (so tests run in
/// parallel; `.ci/run` drops the `kept_it_*` schemas before each run).
///
/// Returns where the store is (the schema made, on PostgreSQL), so that a test can open it
/// again as a restarted server would.
pub async fn test_store_url(dir: &tempfile::TempDir) -> String {
    let postgres = std::env::var("KEPT_TEST_BACKEND").is_ok_and(|b| b == "postgres");
    if !postgres {
        return dir.path().join("kept.db").to_str().unwrap().to_owned();
    }
    let url = std::env::var("KEPT_TEST_DATABASE_URL")
        .expect("KEPT_TEST_BACKEND=postgres needs KEPT_TEST_DATABASE_URL");
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // A random part too: process ids come back, and schemas of earlier runs may still be there.
    let schema = format!(
        "kept_it_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        rand::random::<u32>()
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options[search_path]={schema}")
}

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

pub struct TestApp {
    /// Holds the database; dropped (deleted) with the app.
    _dir: tempfile::TempDir,
    /// Where the store is, to open it again (`restart`).
    url: String,
    pub store: Arc<dyn Store>,
    pub state: AppState,
    pub keys: HashMap<Role, String>,
    /// Subjects in Germany (gdpr), California (ccpa) and nowhere known (strictest).
    pub subjects: Vec<SubjectId>,
}

impl TestApp {
    pub async fn new() -> TestApp {
        TestApp::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let url = test_store_url(&dir).await;
        let store = kept_server::store::open(&url).await.unwrap();
        let ledger = Arc::new(Ledger::new(store.clone(), signing_key()));
        let loaded = demo_loaded();
        let state = AppState::new(store.clone(), ledger, Arc::new(loaded.manifest.clone()))
            .with_manifest_source(Arc::new(loaded))
            .with_limits(limits)
            .with_clock(Arc::new(|| NOW));
        let mut keys = HashMap::new();
        for role in Role::ALL {
            let (secret, _) =
                kept_server::http::auth::create_key(store.as_ref(), role, "test", NOW)
                    .await
                    .unwrap();
            keys.insert(role, secret.expose().to_owned());
        }
        let subjects = store
            .insert_subjects(vec![
                new_subject("u1", Some("DE"), None),
                new_subject("u2", Some("US"), Some("CA")),
                new_subject("u3", None, None),
            ])
            .await
            .unwrap();
        // The index is built from the store, as at server start.
        state
            .index
            .load(store.as_ref(), NOW, &mut |_| {})
            .await
            .unwrap();
        TestApp {
            _dir: dir,
            url,
            store,
            state,
            keys,
            subjects,
        }
    }

    /// The same database as a restarted server sees it: the store closed and opened again, a
    /// new state, the index built from the store.
    pub async fn restart(self) -> TestApp {
        let manifest = self.state.manifest.as_ref().clone();
        self.restart_with(manifest).await
    }

    /// The server started again on the same database with `manifest`: the store closed and
    /// opened again, a new state, the index built from what is stored.
    pub async fn restart_with(self, manifest: Manifest) -> TestApp {
        self.state.decision_log.close().await;
        self.store.close().await.unwrap();
        let store = kept_server::store::open(&self.url).await.unwrap();
        let ledger = Arc::new(Ledger::new(store.clone(), signing_key()));
        let state = AppState::new(store.clone(), ledger, Arc::new(manifest))
            .with_limits(self.state.limits)
            .with_clock(Arc::new(|| NOW));
        state
            .index
            .load(store.as_ref(), NOW, &mut |_| {})
            .await
            .unwrap();
        TestApp {
            store,
            state,
            ..self
        }
    }

    /// Runs `sql` on the test's database directly, behind the server's back (to make it fail).
    pub async fn execute(&self, sql: &str) {
        if self.url.starts_with("postgres") {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&self.url)
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&self.url);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// Makes every insert into the record of uses fail, until `allow_uses`.
    pub async fn refuse_uses(&self) {
        if self.url.starts_with("postgres") {
            self.execute(
                "CREATE FUNCTION refuse_uses() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'uses refused'; END $$; \
                 CREATE TRIGGER refuse_uses BEFORE INSERT ON uses FOR EACH ROW \
                 EXECUTE FUNCTION refuse_uses();",
            )
            .await;
        } else {
            self.execute(
                "CREATE TRIGGER refuse_uses BEFORE INSERT ON uses \
                 BEGIN SELECT RAISE(ABORT, 'uses refused'); END;",
            )
            .await;
        }
    }

    pub async fn allow_uses(&self) {
        if self.url.starts_with("postgres") {
            self.execute("DROP TRIGGER refuse_uses ON uses;").await;
        } else {
            self.execute("DROP TRIGGER refuse_uses;").await;
        }
    }

    pub fn key(&self, role: Role) -> &str {
        &self.keys[&role]
    }

    pub fn router(&self) -> Router {
        kept_server::router(self.state.clone())
    }

    pub async fn send(&self, req: Request<Body>) -> Answer {
        send(self.router(), req).await
    }
}

pub fn new_subject(user_id: &str, country: Option<&str>, region: Option<&str>) -> NewSubject {
    NewSubject {
        user_id: Some(user_id.to_owned()),
        country: country.map(str::to_owned),
        region: region.map(str::to_owned),
        time_zone: None,
        created_at: NOW - 1000,
    }
}

/// An answer, its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: serde_json::Value,
    /// The body as sent (a zip is not text).
    pub bytes: Vec<u8>,
}

impl Answer {
    /// The `error.code` of an error body.
    /// The error code, checked to be also at the top of the body with the message, where
    /// Segment's and RudderStack's libraries read them.
    pub fn code(&self) -> &str {
        let code = self.json["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>");
        if self.json["error"]["code"].is_string() {
            assert_eq!(
                self.json["code"], self.json["error"]["code"],
                "{}",
                self.text
            );
            assert_eq!(
                self.json["message"], self.json["error"]["message"],
                "{}",
                self.text
            );
        }
        code
    }
}

pub async fn send(router: Router, req: Request<Body>) -> Answer {
    let response = router.oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        text,
        json,
        bytes: bytes.to_vec(),
    }
}

pub fn request(method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

pub fn get(path: &str, key: Option<&str>) -> Request<Body> {
    request("GET", path, key, None)
}

pub fn post(path: &str, key: Option<&str>, body: &str) -> Request<Body> {
    request("POST", path, key, Some(body))
}

/// A valid consent append for `subject`: the newsletter, by email.
pub fn newsletter_consent(subject: SubjectId) -> String {
    serde_json::json!({
        "records": [{
            "subject": subject.0,
            "purpose": "marketing.communications",
            "channel": "email",
            "topic": "newsletter",
            "action": "given",
            "notice": "newsletter",
            "method": "double_opt_in",
            "source": "api",
            "evidence": { "reference": "signup-42" }
        }]
    })
    .to_string()
}

/// Every subject's choices as the index serves them (`GET /v1/subjects/{id}/preferences`)
/// are exactly the ones read from the store, on `state` as it stands now; answers how many the
/// index served itself (the others go to the store: unknown ones, erasure requests).
pub async fn preference_reads_agree(state: &AppState) -> usize {
    use kept_server::subjects::standing::{Choices, choices, choices_in_index, standing};
    let (store, manifest) = (state.store.as_ref(), state.manifest.as_ref());
    let now = state.now();
    let beyond = state.index.snapshot().unwrap().id_space() + 2;
    let mut from_index = 0;
    for id in (0..beyond).map(SubjectId) {
        let stored = standing(store, &state.index, manifest, id, now)
            .await
            .unwrap()
            .map(Choices::from);
        if let Some(indexed) = choices_in_index(&state.index, &state.manifest, id, now).unwrap() {
            assert_eq!(Some(&indexed), stored.as_ref(), "subject {}", id.0);
            from_index += 1;
        }
        assert_eq!(
            choices(store, &state.index, manifest, id, now)
                .await
                .unwrap(),
            stored
        );
    }
    from_index
}
