//! `kept lint` on the company's own databases (`[[dataset]]`): every column's category is one a
//! notice covers, every table is reached from an identity column through the declared
//! references, a kept column names a purpose the law or a contract requires, and an erasure can
//! be carried out (no deleted row leaves children pointing at it, no key children follow is
//! nulled or hashed under them).

use super::{Linter, codes};
use crate::manifest::dataset::{Dataset, Erasure, column_path, table_path};
use crate::manifest::{LegalBasis, child_path, is_within};
use std::collections::BTreeSet;

impl Linter<'_> {
    pub(super) fn datasets(&mut self) {
        for (d, dataset) in self.manifest.datasets.iter().enumerate() {
            self.dataset_columns(d, dataset);
            self.dataset_reach(d, dataset);
            self.dataset_erasure_order(d, dataset);
        }
    }

    fn dataset_columns(&mut self, d: usize, dataset: &Dataset) {
        for (t, table) in dataset.tables.iter().enumerate() {
            for (name, column) in &table.columns {
                let path = column_path(d, t, name);
                let category = &column.category;
                if self.check_category(child_path(&path, "category"), category) {
                    let covered = self
                        .manifest
                        .notices
                        .values()
                        .any(|n| n.categories.iter().any(|c| is_within(category, c)));
                    if !covered {
                        self.error(
                            codes::DATASET_CATEGORY_NOT_IN_NOTICE,
                            child_path(&path, "category"),
                            format!(
                                "dataset `{}` holds `{}.{name}` as `{category}`, which no notice covers; the data was collected under no promise, so add the category to the notice shown where it is collected",
                                dataset.id, table.name
                            ),
                        );
                    }
                }
                let Erasure::Keep { purpose } = &column.erase else {
                    continue;
                };
                let keep_path = child_path(&path, "keep_for");
                let Some(declared) = self.manifest.purposes.get(purpose) else {
                    self.check_purpose(keep_path, purpose);
                    continue;
                };
                let required = declared
                    .legal_basis
                    .values()
                    .any(|b| matches!(b, LegalBasis::LegalObligation | LegalBasis::Contract));
                if !required {
                    self.error(
                        codes::DATASET_KEEP_WITHOUT_OBLIGATION,
                        keep_path,
                        format!(
                            "column `{}.{name}` of dataset `{}` is kept on erasure for `{purpose}`, whose legal basis is neither `legal_obligation` nor `contract`; erasure may keep only what the law or a contract requires",
                            table.name, dataset.id
                        ),
                    );
                }
            }
        }
    }

    /// A table no identity path reaches is never searched, so a subject's rows there would be
    /// missed by access and erasure alike.
    fn dataset_reach(&mut self, d: usize, dataset: &Dataset) {
        let mut reached: BTreeSet<&str> = dataset
            .tables
            .iter()
            .filter(|t| !t.identity.is_empty())
            .map(|t| t.name.as_str())
            .collect();
        loop {
            let before = reached.len();
            for table in &dataset.tables {
                if table
                    .references
                    .iter()
                    .any(|r| reached.contains(r.parent_table.as_str()))
                {
                    reached.insert(table.name.as_str());
                }
            }
            if reached.len() == before {
                break;
            }
        }
        for (t, table) in dataset.tables.iter().enumerate() {
            if !reached.contains(table.name.as_str()) {
                self.error(
                    codes::DATASET_TABLE_UNREACHABLE,
                    table_path(d, t),
                    format!(
                        "table `{}` of dataset `{}` is reached from no identity column: give it an `identity` column, or a `references` entry to a table that is reached",
                        table.name, dataset.id
                    ),
                );
            }
        }
    }

    /// Children go before parents, so a deleted parent must leave no child row pointing at it,
    /// and a parent row that stays must keep the key its children point at.
    fn dataset_erasure_order(&mut self, d: usize, dataset: &Dataset) {
        for (t, child) in dataset.tables.iter().enumerate() {
            for reference in &child.references {
                let Some(parent) = dataset
                    .tables
                    .iter()
                    .find(|p| p.name == reference.parent_table)
                else {
                    continue;
                };
                let child_erase = child.columns.get(&reference.column).map(|c| &c.erase);
                let detaches = child.deletes_rows()
                    || matches!(child_erase, Some(Erasure::Null | Erasure::Hash));
                let path = child_path(
                    &child_path(&table_path(d, t), "references"),
                    &reference.column,
                );
                if parent.deletes_rows() && !detaches {
                    self.error(
                        codes::DATASET_DELETE_LEAVES_CHILDREN,
                        path,
                        format!(
                            "erasure deletes rows of `{}` but keeps the rows of `{}` that point at them through `{}`; delete those rows too, or set `erase = \"null\"` on `{}.{}`",
                            parent.name, child.name, reference.column, child.name, reference.column
                        ),
                    );
                    continue;
                }
                let parent_erase = parent
                    .columns
                    .get(&reference.parent_column)
                    .map(|c| &c.erase);
                if !parent.deletes_rows()
                    && matches!(parent_erase, Some(Erasure::Null | Erasure::Hash))
                    && !detaches
                {
                    self.error(
                        codes::DATASET_KEY_ERASED,
                        path,
                        format!(
                            "erasure changes `{}.{}`, which the rows of `{}` point at through `{}`; they would point at nothing; keep the key, or erase `{}.{}` too",
                            parent.name,
                            reference.parent_column,
                            child.name,
                            reference.column,
                            child.name,
                            reference.column
                        ),
                    );
                }
            }
        }
    }
}
