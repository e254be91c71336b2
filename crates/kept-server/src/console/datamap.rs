//! The data map, read from the manifest: the record of processing activities GDPR Art. 30(1)
//! asks a controller to keep (per purpose: who answers for it, the categories of data, the
//! legal basis per regime, how long the data is kept, to which systems it goes), as rows for
//! the page and as CSV; and the map itself as an SVG graph, collection points → notices →
//! purposes → systems, each box with its owning team.

use kept_core::manifest::{Manifest, RegimeKey};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// One purpose's row of the record of processing activities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RopaRow {
    pub purpose: String,
    pub name: String,
    pub description: String,
    /// The owning team's name, and the people who answer for it.
    pub owner: String,
    pub owner_contacts: Vec<String>,
    /// The data categories collected under a notice for the purpose, or used for it by a
    /// system.
    pub categories: Vec<String>,
    /// `(regime, basis)`, `default` first.
    pub legal_basis: Vec<(String, &'static str)>,
    pub retention_days: u32,
    /// The systems (by name) the data goes to for the purpose.
    pub recipients: Vec<String>,
}

/// The record of processing activities: one row per purpose, in the manifest's order.
pub fn record_of_processing(manifest: &Manifest) -> Vec<RopaRow> {
    manifest
        .purposes
        .iter()
        .map(|(key, purpose)| {
            let mut categories: BTreeSet<&str> = manifest
                .notices
                .values()
                .filter(|n| n.purposes.iter().any(|p| p == key))
                .flat_map(|n| n.categories.iter().map(String::as_str))
                .collect();
            let mut recipients = Vec::new();
            for system in manifest.systems.values() {
                let uses: Vec<_> = system.uses.iter().filter(|u| &u.purpose == key).collect();
                if uses.is_empty() {
                    continue;
                }
                categories.extend(
                    uses.iter()
                        .flat_map(|u| u.categories.iter().map(String::as_str)),
                );
                recipients.push(system.name.clone());
            }
            let mut legal_basis: Vec<(String, &'static str)> = purpose
                .legal_basis
                .iter()
                .map(|(regime, basis)| {
                    let regime = match regime {
                        RegimeKey::Default => "default".to_owned(),
                        RegimeKey::Regime(r) => r.as_str().to_owned(),
                    };
                    (regime, basis.as_str())
                })
                .collect();
            legal_basis.sort_by_key(|(r, _)| (r != "default", r.clone()));
            let team = manifest.teams.get(&purpose.owner);
            RopaRow {
                purpose: key.clone(),
                name: purpose.name.clone(),
                description: purpose.description.clone(),
                owner: team.map_or_else(|| purpose.owner.clone(), |t| t.name.clone()),
                owner_contacts: team.map(|t| t.owners.clone()).unwrap_or_default(),
                categories: categories.into_iter().map(str::to_owned).collect(),
                legal_basis,
                retention_days: purpose.retention_days,
                recipients,
            }
        })
        .collect()
}

/// The record as CSV (a header, then one line per purpose; lists joined with `; `), every cell
/// through the one CSV cell writer.
pub fn record_csv(rows: &[RopaRow]) -> String {
    let mut out = String::from(
        "purpose,name,description,owner,owner_contacts,categories,legal_basis,retention_days,recipients\r\n",
    );
    for r in rows {
        let basis = r
            .legal_basis
            .iter()
            .map(|(regime, basis)| format!("{regime}: {basis}"))
            .collect::<Vec<_>>()
            .join("; ");
        let cells = [
            r.purpose.clone(),
            r.name.clone(),
            r.description.clone(),
            r.owner.clone(),
            r.owner_contacts.join("; "),
            r.categories.join("; "),
            basis,
            r.retention_days.to_string(),
            r.recipients.join("; "),
        ];
        let line: Vec<String> = cells
            .iter()
            .map(|c| kept_core::csv::field(c).into_owned())
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Text for SVG: `&`, `<`, `>` and quotes escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A box of the graph.
struct Node {
    id: String,
    label: String,
    owner: Option<String>,
}

const COLUMN_WIDTH: usize = 250;
const BOX_WIDTH: usize = 200;
const ROW_HEIGHT: usize = 56;
const BOX_HEIGHT: usize = 42;

/// The data map as an SVG graph in four columns (collection points, notices, purposes,
/// systems), with an edge for each link the manifest declares: a collection point's notice, a
/// notice's purposes, a system's uses. `titles` names the columns. The page shows the same in
/// tables beside it.
pub fn graph_svg(manifest: &Manifest, titles: [&str; 4]) -> String {
    let team = |key: &str| {
        manifest
            .teams
            .get(key)
            .map_or_else(|| key.to_owned(), |t| t.name.clone())
    };
    let columns: [Vec<Node>; 4] = [
        manifest
            .collection_points
            .iter()
            .map(|(k, c)| Node {
                id: format!("cp:{k}"),
                label: c.name.clone(),
                owner: None,
            })
            .collect(),
        manifest
            .notices
            .iter()
            .map(|(k, n)| Node {
                id: format!("notice:{k}"),
                label: format!("{k} v{}", n.version),
                owner: None,
            })
            .collect(),
        manifest
            .purposes
            .iter()
            .map(|(k, p)| Node {
                id: format!("purpose:{k}"),
                label: p.name.clone(),
                owner: Some(team(&p.owner)),
            })
            .collect(),
        manifest
            .systems
            .iter()
            .map(|(k, s)| Node {
                id: format!("system:{k}"),
                label: s.name.clone(),
                owner: Some(team(&s.owner)),
            })
            .collect(),
    ];
    let mut edges: Vec<(String, String)> = Vec::new();
    for (k, c) in &manifest.collection_points {
        edges.push((format!("cp:{k}"), format!("notice:{}", c.notice)));
    }
    for (k, n) in &manifest.notices {
        for p in &n.purposes {
            edges.push((format!("notice:{k}"), format!("purpose:{p}")));
        }
    }
    for (k, s) in &manifest.systems {
        let purposes: BTreeSet<&str> = s.uses.iter().map(|u| u.purpose.as_str()).collect();
        for p in purposes {
            edges.push((format!("purpose:{p}"), format!("system:{k}")));
        }
    }
    let position = |id: &str| {
        columns.iter().enumerate().find_map(|(c, nodes)| {
            nodes
                .iter()
                .position(|n| n.id == id)
                .map(|r| (c * COLUMN_WIDTH + 10, 40 + r * ROW_HEIGHT))
        })
    };
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0);
    let width = 4 * COLUMN_WIDTH;
    let height = 50 + rows * ROW_HEIGHT;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\" aria-labelledby=\"map-title\"><title id=\"map-title\">{}</title>",
        escape(&titles.join(" → "))
    );
    for (c, title) in titles.iter().enumerate() {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"22\" font-weight=\"700\" font-size=\"14\" fill=\"#1f2328\">{}</text>",
            c * COLUMN_WIDTH + 10,
            escape(title)
        );
    }
    for (from, to) in &edges {
        if let (Some((x1, y1)), Some((x2, y2))) = (position(from), position(to)) {
            let _ = write!(
                svg,
                "<path d=\"M{} {} C{} {} {} {} {} {}\" fill=\"none\" stroke=\"#8c959f\" stroke-width=\"1.2\"/>",
                x1 + BOX_WIDTH,
                y1 + BOX_HEIGHT / 2,
                x1 + BOX_WIDTH + 25,
                y1 + BOX_HEIGHT / 2,
                x2 - 25,
                y2 + BOX_HEIGHT / 2,
                x2,
                y2 + BOX_HEIGHT / 2
            );
        }
    }
    for nodes in &columns {
        for node in nodes {
            let Some((x, y)) = position(&node.id) else {
                continue;
            };
            let _ = write!(
                svg,
                "<g><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_WIDTH}\" height=\"{BOX_HEIGHT}\" rx=\"6\" fill=\"#ffffff\" stroke=\"#57606a\"/><text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#1f2328\">{}</text>",
                x + 8,
                y + 17,
                escape(&shorten(&node.label, 30))
            );
            if let Some(owner) = &node.owner {
                let _ = write!(
                    svg,
                    "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#57606a\">{}</text>",
                    x + 8,
                    y + 33,
                    escape(&shorten(owner, 32))
                );
            }
            svg.push_str("</g>");
        }
    }
    svg.push_str("</svg>");
    svg
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Manifest {
        kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
            .unwrap()
            .manifest
    }

    #[test]
    fn the_record_names_each_purposes_data_basis_retention_and_recipients() {
        let manifest = demo();
        let rows = record_of_processing(&manifest);
        assert_eq!(rows.len(), manifest.purposes.len());
        let marketing = rows
            .iter()
            .find(|r| r.purpose == "marketing.communications")
            .unwrap();
        assert!(
            marketing
                .categories
                .iter()
                .any(|c| c == "user.contact.email")
        );
        assert!(marketing.recipients.iter().any(|s| s == "Email platform"));
        assert_eq!(marketing.legal_basis[0].0, "default");
        let csv = record_csv(&rows);
        assert_eq!(csv.lines().count(), rows.len() + 1);
        assert!(csv.starts_with("purpose,name,"));
    }

    #[test]
    fn the_graph_escapes_what_the_manifest_says() {
        let mut manifest = demo();
        if let Some(p) = manifest.purposes.values_mut().next() {
            p.name = "<script>alert(1)</script>".to_owned();
        }
        let svg = graph_svg(&manifest, ["a", "b", "c", "d"]);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.matches("<path").count() >= manifest.collection_points.len());
    }
}
