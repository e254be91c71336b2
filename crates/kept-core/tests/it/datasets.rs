//! `[[dataset]]`: the company's own databases. The fixture shop's declaration loads and lints
//! clean on top of the demo; each load error and lint finding is produced by breaking it once,
//! and points at the line it is about.

use crate::manifest::position;
use kept_core::identity::IdentifierKind;
use kept_core::lint::{Finding, Severity, codes, lint};
use kept_core::manifest::dataset::{DatabaseKind, Erasure};
use kept_core::manifest::{ManifestError, demo_toml, load};

const SHOP: &str = include_str!("../../../../tests/fixtures/shop/kept.toml");

fn shop_manifest() -> String {
    format!("{}\n{SHOP}", demo_toml())
}

/// The shop manifest with its first `from` replaced by `to`.
fn broken(from: &str, to: &str) -> String {
    let source = shop_manifest();
    assert!(
        source.contains(from),
        "`{from}` is not in the shop manifest"
    );
    source.replacen(from, to, 1)
}

fn load_error(source: &str) -> ManifestError {
    match load(source, "kept.toml") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// The error's message contains `says`, and it points at the line and column of `at`.
fn assert_error_at(source: &str, says: &str, at: &str) {
    let e = load_error(source);
    assert!(e.message().contains(says), "{e}");
    let (line, column) = position(source, at, 0);
    let got = e.location().at.unwrap();
    assert_eq!((got.line, got.column), (line, column), "{e}");
    assert_eq!(e.code(), "manifest.invalid_value");
}

fn dataset_findings(source: &str) -> Vec<Finding> {
    let loaded = load(source, "kept.toml").unwrap_or_else(|e| panic!("{e}"));
    lint(&loaded, &[])
        .into_iter()
        .filter(|f| f.path.starts_with("dataset") || f.code.starts_with("dataset."))
        .collect()
}

#[test]
fn the_shop_declaration_loads_and_lints_clean() {
    let source = shop_manifest();
    let loaded = load(&source, "kept.toml").unwrap();
    assert_eq!(lint(&loaded, &[]), []);
    let datasets = &loaded.manifest.datasets;
    assert_eq!(datasets.len(), 2);
    let shop = &datasets[0];
    assert_eq!(
        (shop.id.as_str(), shop.kind, shop.url_env.as_str()),
        ("shop", DatabaseKind::Postgres, "SHOP_POSTGRES_URL")
    );
    assert_eq!(datasets[1].kind, DatabaseKind::Mysql);
    let names: Vec<&str> = shop.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "customers",
            "addresses",
            "orders",
            "order_lines",
            "support_tickets"
        ]
    );
    let customers = &shop.tables[0];
    assert_eq!(customers.identity[&IdentifierKind::Email], "email");
    assert_eq!(customers.identity[&IdentifierKind::UserId], "id");
    assert!(customers.deletes_rows());
    let orders = &shop.tables[2];
    assert_eq!(orders.references[0].parent_table, "customers");
    assert_eq!(orders.references[0].parent_column, "id");
    assert_eq!(orders.columns["email"].erase, Erasure::Hash);
    assert_eq!(orders.columns["customer_id"].erase, Erasure::Null);
    assert_eq!(
        orders.columns["total_cents"].erase,
        Erasure::Keep {
            purpose: "essential.legal_obligation".to_owned()
        }
    );
}

#[test]
fn names_that_are_not_plain_identifiers_are_refused_where_they_stand() {
    let source = broken("name = \"order_lines\"", "name = \"order lines\"");
    assert_error_at(
        &source,
        "invalid table name `order lines`",
        "\"order lines\"",
    );

    let source = broken("columns.sku =", "columns.\"sku;drop\" =");
    assert_error_at(&source, "invalid column name `sku;drop`", "\"sku;drop\"");

    let source = broken(
        "identity = { email = \"email\" }",
        "identity = { email = \"e`mail\" }",
    );
    assert_error_at(&source, "invalid column name `e`mail`", "\"e`mail\"");

    let source = broken(
        "references = { order_id = \"orders.id\" }",
        "references = { order_id = \"public.orders.id\" }",
    );
    assert_error_at(
        &source,
        "`orders.id` is not a plain identifier",
        "\"public.orders.id\"",
    );
}

#[test]
fn the_url_comes_from_an_environment_variable_never_the_file() {
    let source = broken(
        "url_env = \"SHOP_POSTGRES_URL\"",
        "url_env = \"postgres://shop:s3cret@db/shop\"",
    );
    let e = load_error(&source);
    assert!(e.message().contains("never the URL itself"), "{e}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert!(e.message().contains("postgres://shop:***@db/shop"), "{e}");

    let source = broken("url_env = \"SHOP_POSTGRES_URL\"", "url_env = \"shop url\"");
    assert_error_at(&source, "invalid `url_env` `shop url`", "\"shop url\"");
}

#[test]
fn kinds_strategies_and_references_are_checked_at_load() {
    let source = broken("kind = \"postgres\"\nurl_env", "kind = \"oracle\"\nurl_env");
    assert_error_at(&source, "unknown database kind `oracle`", "\"oracle\"");

    let source = broken("erase = \"hash\"", "erase = \"scramble\"");
    assert_error_at(&source, "unknown erasure `scramble`", "\"scramble\"");

    let source = broken(
        "columns.sku = { category = \"user.behavior.purchase_history\", erase = \"keep\", keep_for = \"essential.legal_obligation\" }",
        "columns.sku = { category = \"user.behavior.purchase_history\", erase = \"keep\" }",
    );
    assert_error_at(&source, "names no purpose", "\"keep\" }");

    let source = broken(
        "columns.customer_id = { category = \"user.unique_id\", erase = \"null\" }",
        "columns.customer_id = { category = \"user.unique_id\", erase = \"delete\" }",
    );
    let e = load_error(&source);
    assert!(
        e.message()
            .contains("keeps a column on erasure but deletes its rows"),
        "{e}"
    );

    let source = broken(
        "references = { order_id = \"orders.id\" }",
        "references = { order_id = \"invoices.id\" }",
    );
    assert_error_at(
        &source,
        "declares no table `invoices`",
        "order_id = \"invoices",
    );

    let source = broken(
        "identity = { email = \"email\" }",
        "identity = { email = \"contact\" }",
    );
    assert_error_at(&source, "is not declared under `columns`", "\"contact\"");

    let source = broken(
        "identity = { email = \"email\" }",
        "identity = { fax = \"email\" }",
    );
    assert_error_at(&source, "unknown identifier `fax`", "fax = ");
}

#[test]
fn references_that_go_round_in_a_circle_are_refused() {
    let source = broken(
        "name = \"customers\"\nidentity = { email = \"email\", phone = \"phone\", user_id = \"id\" }",
        "name = \"customers\"\nidentity = { email = \"email\", phone = \"phone\", user_id = \"id\" }\nreferences = { id = \"support_tickets.customer_id\" }",
    );
    let e = load_error(&source);
    assert!(e.message().contains("go round in a circle"), "{e}");
    assert!(
        e.message()
            .contains("customers → support_tickets → customers")
            || e.message()
                .contains("support_tickets → customers → support_tickets"),
        "{e}"
    );
}

#[test]
fn a_category_no_notice_covers_is_a_finding_on_its_line() {
    let source = broken(
        "columns.quantity = { category = \"user.behavior.purchase_history\"",
        "columns.quantity = { category = \"user.financial\"",
    );
    let found = dataset_findings(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].code, codes::DATASET_CATEGORY_NOT_IN_NOTICE);
    assert_eq!(found[0].severity, Severity::Error);
    let (line, column) = position(&source, "\"user.financial\"", 0);
    assert_eq!((found[0].line, found[0].column), (Some(line), Some(column)));

    let source = broken("category = \"user.name\"", "category = \"user.nmae\"");
    let found = dataset_findings(&source);
    assert_eq!(found[0].code, codes::CATEGORY_UNKNOWN, "{found:#?}");
}

#[test]
fn a_table_no_identity_path_reaches_is_a_finding() {
    let source = broken("references = { order_id = \"orders.id\" }\n", "");
    let source = source.replacen(
        "columns.order_id = { category = \"user.behavior.purchase_history\", erase = \"keep\", keep_for = \"essential.legal_obligation\" }\n",
        "",
        1,
    );
    let found = dataset_findings(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].code, codes::DATASET_TABLE_UNREACHABLE);
    assert!(found[0].message.contains("`order_lines`"));
    let (line, column) = position(&source, "\"order_lines\"", 0);
    assert_eq!((found[0].line, found[0].column), (Some(line), Some(column)));
}

#[test]
fn keep_names_a_purpose_the_law_or_a_contract_requires() {
    let source = broken(
        "columns.sku = { category = \"user.behavior.purchase_history\", erase = \"keep\", keep_for = \"essential.legal_obligation\" }",
        "columns.sku = { category = \"user.behavior.purchase_history\", erase = \"keep\", keep_for = \"marketing.communications\" }",
    );
    let found = dataset_findings(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].code, codes::DATASET_KEEP_WITHOUT_OBLIGATION);
    let (line, column) = position(&source, "keep_for = \"marketing.communications\"", 0);
    assert_eq!(
        (found[0].line, found[0].column),
        (Some(line), Some(column + 11))
    );

    let source = broken(
        "keep_for = \"essential.legal_obligation\" }",
        "keep_for = \"essential.legal_obligaton\" }",
    );
    let found = dataset_findings(&source);
    assert_eq!(found[0].code, codes::DANGLING_REFERENCE, "{found:#?}");
    assert!(found[0].message.contains("did you mean"), "{found:#?}");
}

#[test]
fn erasure_that_would_break_a_foreign_key_is_a_finding() {
    // Orders would keep pointing at a deleted customer.
    let source = broken(
        "columns.customer_id = { category = \"user.unique_id\", erase = \"null\" }",
        "columns.customer_id = { category = \"user.unique_id\", erase = \"keep\", keep_for = \"essential.legal_obligation\" }",
    );
    let found = dataset_findings(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].code, codes::DATASET_DELETE_LEAVES_CHILDREN);
    // The second `customers.id` reference of the first dataset is the one of `orders`.
    let (line, column) = position(&source, "customer_id = \"customers.id\"", 1);
    assert_eq!((found[0].line, found[0].column), (Some(line), Some(column)));

    // Order lines would point at an order id nulled under them.
    let source = broken(
        "columns.id = { category = \"user.behavior.purchase_history\", erase = \"keep\", keep_for = \"essential.legal_obligation\" }",
        "columns.id = { category = \"user.behavior.purchase_history\", erase = \"hash\" }",
    );
    let found = dataset_findings(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].code, codes::DATASET_KEY_ERASED);
}
