//! find, plan_erase and erase on the fixture shop, each on PostgreSQL and on MariaDB/MySQL,
//! checked with plain SQL.

use crate::support::{Shop, dataset, env_of};
use kept_connect::{ConnectError, Connector, HashKey, RowAction, Subject, hash_value};
use kept_core::identity::IdentifierKind;
use kept_core::manifest::dataset::{Column, DatabaseKind, Erasure};

const KEY: HashKey = HashKey([42; 32]);

fn ada() -> Subject {
    Subject::new()
        .with(IdentifierKind::Email, "Ada@Example.com")
        .unwrap()
}

/// One test per database kind from one async scenario.
macro_rules! on_both {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn postgres() {
                super::$scenario(kept_core::manifest::dataset::DatabaseKind::Postgres).await;
            }
            #[tokio::test]
            async fn mysql() {
                super::$scenario(kept_core::manifest::dataset::DatabaseKind::Mysql).await;
            }
        }
    };
}

on_both!(find_returns_every_row_the_identity_paths_reach);
on_both!(plan_lists_every_change_and_changes_nothing);
on_both!(erase_applies_each_strategy_and_a_second_erase_changes_nothing);
on_both!(a_trigger_refusing_the_last_statement_rolls_everything_back);
on_both!(a_null_that_breaks_not_null_rolls_back);
on_both!(the_database_must_have_what_the_manifest_declares);
on_both!(a_connection_lost_mid_erasure_leaves_nothing_half_done);

async fn find_returns_every_row_the_identity_paths_reach(kind: DatabaseKind) {
    let Some(shop) = Shop::new(kind, "find").await else {
        return;
    };
    let dataset = dataset(kind);
    let mut connector = Connector::open(&dataset, &shop.lookup()).await.unwrap();
    let found = connector.find(&ada()).await.unwrap();
    let ids = |table: &str, column: &str| -> Vec<String> {
        let t = found.tables.iter().find(|t| t.table == table).unwrap();
        let mut v: Vec<String> = t
            .rows
            .iter()
            .map(|r| r[column].clone().unwrap_or_default())
            .collect();
        v.sort();
        v
    };
    // Parents first.
    let order: Vec<&str> = found.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(
        order,
        [
            "customers",
            "addresses",
            "orders",
            "order_lines",
            "support_tickets"
        ]
    );
    assert_eq!(ids("customers", "email"), ["ada@example.com"]);
    assert_eq!(ids("addresses", "city"), ["Berlin", "London"]);
    // Two through the customer, and the guest checkout through the email alone.
    assert_eq!(ids("orders", "total_cents"), ["1999", "4200", "750"]);
    assert_eq!(
        ids("order_lines", "sku"),
        ["CUP-02", "SPOON-1", "TEA-01", "TEA-03"]
    );
    assert_eq!(
        ids("support_tickets", "subject"),
        ["Guest order", "Where is my order?"]
    );
    assert_eq!(found.rows(), 12);
    let customers = &found.tables[0];
    assert!(
        customers
            .columns
            .iter()
            .any(|c| c.name == "phone" && c.category == "user.contact.phone_number")
    );

    // By user id: the customer's rows, not the guest order or guest ticket.
    let by_id = Subject::new().with(IdentifierKind::UserId, "1").unwrap();
    let found = connector.find(&by_id).await.unwrap();
    assert_eq!(found.rows(), 1 + 2 + 2 + 3 + 1);

    // A phone number written another way finds the same customer (normalised to E.164).
    let by_phone = Subject::new()
        .with(IdentifierKind::Phone, "+49 151 12345678")
        .unwrap();
    assert_eq!(connector.find(&by_phone).await.unwrap().rows(), 9);

    // Someone the shop never saw: nothing, and no error.
    let nobody = Subject::new()
        .with(IdentifierKind::Email, "nobody@example.com")
        .unwrap();
    assert_eq!(connector.find(&nobody).await.unwrap().rows(), 0);
    drop(connector);
    shop.drop_database().await;
}

async fn plan_lists_every_change_and_changes_nothing(kind: DatabaseKind) {
    let Some(shop) = Shop::new(kind, "plan").await else {
        return;
    };
    let before = shop.dump().await;
    let dataset = dataset(kind);
    let mut connector = Connector::open(&dataset, &shop.lookup()).await.unwrap();
    let plan = connector.plan_erase(&ada(), &KEY).await.unwrap();
    // Children first.
    let order: Vec<&str> = plan.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(
        order,
        [
            "support_tickets",
            "order_lines",
            "orders",
            "addresses",
            "customers"
        ]
    );
    let table = |name: &str| plan.tables.iter().find(|t| t.table == name).unwrap();
    let actions =
        |name: &str| -> Vec<RowAction> { table(name).rows.iter().map(|r| r.action).collect() };
    assert_eq!(actions("customers"), [RowAction::Delete]);
    assert_eq!(actions("addresses"), [RowAction::Delete; 2]);
    assert_eq!(actions("support_tickets"), [RowAction::Delete; 2]);
    assert_eq!(actions("orders"), [RowAction::Update; 3]);
    assert_eq!(actions("order_lines"), [RowAction::Unchanged; 4]);
    assert_eq!(plan.counts(), (5, 3));

    // The guest order: only its email is hashed (it has no customer to detach from); the
    // others lose their customer too. What is kept is listed with its reason.
    let guest = table("orders")
        .rows
        .iter()
        .find(|r| r.values["customer_id"].is_none())
        .unwrap();
    let strategies: Vec<(&str, &str)> = guest
        .changes
        .iter()
        .map(|c| (c.column.as_str(), c.strategy))
        .collect();
    assert_eq!(
        strategies,
        [
            ("currency", "keep"),
            ("email", "hash"),
            ("id", "keep"),
            ("placed_at", "keep"),
            ("total_cents", "keep")
        ]
    );
    let hash = guest.changes.iter().find(|c| c.strategy == "hash").unwrap();
    assert_eq!(
        hash.to.as_deref(),
        Some(hash_value(&KEY, "ada@example.com").as_str())
    );
    let kept = guest.changes.iter().find(|c| c.strategy == "keep").unwrap();
    assert_eq!(kept.purpose.as_deref(), Some("essential.legal_obligation"));

    assert_eq!(shop.dump().await, before, "a dry run changed the database");
    drop(connector);
    shop.drop_database().await;
}

async fn erase_applies_each_strategy_and_a_second_erase_changes_nothing(kind: DatabaseKind) {
    let Some(shop) = Shop::new(kind, "erase").await else {
        return;
    };
    let dataset = dataset(kind);
    let mut connector = Connector::open(&dataset, &shop.lookup()).await.unwrap();
    let erased = connector.erase(&ada(), &KEY).await.unwrap();
    assert_eq!((erased.rows_deleted, erased.rows_updated), (5, 3));

    assert_eq!(
        shop.count("SELECT COUNT(*) FROM customers WHERE id = 1")
            .await,
        0
    );
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM addresses WHERE customer_id = 1")
            .await,
        0
    );
    assert_eq!(
        shop.strings("SELECT subject FROM support_tickets ORDER BY id")
            .await,
        [Some("Refund".to_owned())]
    );
    // Orders stay for tax law, detached and with the email hashed.
    let hashed = hash_value(&KEY, "ada@example.com");
    assert_eq!(
        shop.strings("SELECT email FROM orders WHERE id IN (100, 101, 103) ORDER BY id")
            .await,
        [Some(hashed.clone()), Some(hashed.clone()), Some(hashed)]
    );
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM orders WHERE customer_id IS NOT NULL AND id <> 102")
            .await,
        0
    );
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM orders WHERE total_cents IN (4200, 1999, 500, 750)")
            .await,
        4
    );
    assert_eq!(shop.count("SELECT COUNT(*) FROM order_lines").await, 5);
    // Bob is untouched.
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM customers WHERE email = 'bob@example.com'")
            .await,
        1
    );
    assert_eq!(
        shop.count(
            "SELECT COUNT(*) FROM orders WHERE customer_id = 2 AND email = 'bob@example.com'"
        )
        .await,
        1
    );
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM addresses WHERE customer_id = 2")
            .await,
        1
    );

    // Erasing again finds nothing and changes nothing.
    let after = shop.dump().await;
    let again = connector.erase(&ada(), &KEY).await.unwrap();
    assert_eq!((again.rows_deleted, again.rows_updated), (0, 0));
    assert_eq!(shop.dump().await, after);
    assert_eq!(connector.find(&ada()).await.unwrap().rows(), 0);
    drop(connector);
    shop.drop_database().await;
}

async fn a_trigger_refusing_the_last_statement_rolls_everything_back(kind: DatabaseKind) {
    let Some(shop) = Shop::new(kind, "trigger").await else {
        return;
    };
    // Customers are deleted last, after every other table was changed.
    match kind {
        DatabaseKind::Postgres => {
            shop.run(
                "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'customers are archived, never deleted'; END $$; \
                 CREATE TRIGGER no_delete BEFORE DELETE ON customers \
                 FOR EACH ROW EXECUTE FUNCTION refuse_delete();",
            )
            .await;
        }
        DatabaseKind::Mysql => {
            shop.run(
                "CREATE TRIGGER no_delete BEFORE DELETE ON customers FOR EACH ROW \
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'customers are archived, never deleted'",
            )
            .await;
        }
    }
    let before = shop.dump().await;
    let dataset = dataset(kind);
    let mut connector = Connector::open(&dataset, &shop.lookup()).await.unwrap();
    let e = connector.erase(&ada(), &KEY).await.unwrap_err();
    assert_eq!(e.code(), "connect.query_failed", "{e}");
    let message = e.to_string();
    assert!(message.contains("customers are archived"), "{message}");
    assert!(message.contains("table `customers`"), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    assert_eq!(
        shop.dump().await,
        before,
        "the failed erasure left changes behind"
    );
    // The connector is still usable: the transaction ended.
    assert_eq!(connector.find(&ada()).await.unwrap().rows(), 12);
    drop(connector);
    shop.drop_database().await;
}

async fn a_null_that_breaks_not_null_rolls_back(kind: DatabaseKind) {
    let Some(shop) = Shop::new(kind, "notnull").await else {
        return;
    };
    let mut dataset = dataset(kind);
    // `orders.email` is NOT NULL: the orders statement fails after support tickets and order
    // lines were handled.
    let orders = dataset
        .tables
        .iter_mut()
        .find(|t| t.name == "orders")
        .unwrap();
    orders.columns.insert(
        "email".to_owned(),
        Column {
            category: "user.contact.email".to_owned(),
            erase: Erasure::Null,
        },
    );
    let before = shop.dump().await;
    let mut connector = Connector::open(&dataset, &shop.lookup()).await.unwrap();
    let e = connector.erase(&ada(), &KEY).await.unwrap_err();
    assert_eq!(e.code(), "connect.query_failed", "{e}");
    assert!(e.to_string().contains("table `orders`"), "{e}");
    assert_eq!(
        shop.dump().await,
        before,
        "the failed erasure left changes behind"
    );
    drop(connector);
    shop.drop_database().await;
}

async fn the_database_must_have_what_the_manifest_declares(kind: DatabaseKind) {
    let Some(shop) = Shop::new(kind, "schema").await else {
        return;
    };
    let mut dataset = dataset(kind);
    let customers = dataset
        .tables
        .iter_mut()
        .find(|t| t.name == "customers")
        .unwrap();
    customers.columns.insert(
        "nickname".to_owned(),
        Column {
            category: "user.name".to_owned(),
            erase: Erasure::Delete,
        },
    );
    let mut connector = Connector::open(&dataset, &shop.lookup()).await.unwrap();
    let e = connector.find(&ada()).await.unwrap_err();
    assert_eq!(e.code(), "connect.schema");
    assert!(
        e.to_string()
            .contains("table `customers` has no column `nickname`"),
        "{e}"
    );

    // A keyed hash is text: hashing a number is refused before anything runs.
    let mut dataset = crate::support::dataset(kind);
    let orders = dataset
        .tables
        .iter_mut()
        .find(|t| t.name == "orders")
        .unwrap();
    orders.columns.insert(
        "total_cents".to_owned(),
        Column {
            category: "user.behavior.purchase_history".to_owned(),
            erase: Erasure::Hash,
        },
    );
    let mut connector = Connector::open(&dataset, &shop.lookup()).await.unwrap();
    let e = connector.erase(&ada(), &KEY).await.unwrap_err();
    assert_eq!(e.code(), "connect.schema");
    assert!(
        e.to_string().contains("`orders.total_cents` is of type"),
        "{e}"
    );
    drop(connector);
    shop.drop_database().await;
}

/// What a `kill -9` of the process does to its database: the connection goes in the middle of
/// the transaction, after some tables were changed, and the database keeps none of it.
async fn a_connection_lost_mid_erasure_leaves_nothing_half_done(kind: DatabaseKind) {
    let Some(shop) = Shop::new(kind, "lost").await else {
        return;
    };
    // Deleting the customer (the last statement) takes two seconds.
    match kind {
        DatabaseKind::Postgres => {
            shop.run(
                "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN PERFORM pg_sleep(2); RETURN OLD; END $$; \
                 CREATE TRIGGER slow_delete BEFORE DELETE ON customers \
                 FOR EACH ROW EXECUTE FUNCTION slow_delete();",
            )
            .await;
        }
        DatabaseKind::Mysql => {
            shop.run(
                "CREATE TRIGGER slow_delete BEFORE DELETE ON customers FOR EACH ROW \
                 SET @slept = SLEEP(2)",
            )
            .await;
        }
    }
    let before = shop.dump().await;
    let dataset = dataset(kind);
    let mut connector = Connector::open(&dataset, &shop.lookup()).await.unwrap();
    let erasing = tokio::spawn(async move { connector.erase(&ada(), &KEY).await });
    // Whatever the erasure reached by then, dropping it closes its connection uncommitted.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    erasing.abort();
    assert!(erasing.await.unwrap_err().is_cancelled());
    assert_eq!(
        shop.dump().await,
        before,
        "a lost connection left changes behind"
    );

    // The next erasure waits for the dead session's locks, then erases everything.
    let mut connector = Connector::open(&dataset, &shop.lookup()).await.unwrap();
    let erased = connector.erase(&ada(), &KEY).await.unwrap();
    assert_eq!((erased.rows_deleted, erased.rows_updated), (5, 3));
    assert_eq!(shop.count("SELECT COUNT(*) FROM customers").await, 1);
    drop(connector);
    shop.drop_database().await;
}

#[tokio::test]
async fn a_missing_variable_or_a_wrong_url_is_a_clear_error() {
    for kind in [DatabaseKind::Postgres, DatabaseKind::Mysql] {
        let dataset = dataset(kind);
        let e = Connector::open(&dataset, &|_| None).await.unwrap_err();
        assert_eq!(
            e,
            ConnectError::MissingUrl {
                dataset: dataset.id.clone(),
                env: env_of(kind).to_owned()
            }
        );
        assert!(
            e.to_string().contains(&format!("`{}`", env_of(kind))),
            "{e}"
        );

        let wrong = match kind {
            DatabaseKind::Postgres => "mysql://shop:s3cret@127.0.0.1/shop",
            DatabaseKind::Mysql => "postgres://shop:s3cret@127.0.0.1/shop",
        };
        let e = Connector::open(&dataset, &|_| Some(wrong.to_owned()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "connect.bad_url");
        assert!(!e.to_string().contains("s3cret"), "{e}");

        // Nothing listens on port 1.
        let unreachable = match kind {
            DatabaseKind::Postgres => "postgres://shop:s3cret@127.0.0.1:1/shop",
            DatabaseKind::Mysql => "mysql://shop:s3cret@127.0.0.1:1/shop",
        };
        let e = Connector::open(&dataset, &|_| Some(unreachable.to_owned()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "connect.unreachable");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("shop:***@127.0.0.1:1"), "{e}");
    }
}
