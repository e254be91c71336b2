//! The closest known word to a misspelt one, for the "did you mean" hints of `kept lint` and of
//! the server's configuration (an unknown `KEPT_*` variable).

/// The known word nearest to `word` by edit distance, with that distance; the first one listed
/// wins a tie. `None` when nothing is known.
pub fn closest<'k>(word: &str, known: impl Iterator<Item = &'k str>) -> Option<(&'k str, usize)> {
    let mut best: Option<(&'k str, usize)> = None;
    for candidate in known {
        let distance = edit_distance(word, candidate);
        if best.is_none_or(|(_, d)| distance < d) {
            best = Some((candidate, distance));
        }
    }
    best
}

/// Levenshtein distance: single-character insertions, deletions and substitutions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous
                .get(j)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(usize::from(ca != *cb));
            let delete = previous
                .get(j + 1)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let insert = current
                .get(j)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("purpse", "purpose"), 1);
        assert_eq!(edit_distance("sms", "sms"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_nearest_word_wins_and_ties_go_to_the_first() {
        let known = ["KEPT_BIND", "KEPT_DATABASE_URL", "KEPT_DATA_DIR"];
        assert_eq!(
            closest("KEPT_DATABSE_URL", known.iter().copied()),
            Some(("KEPT_DATABASE_URL", 1))
        );
        assert_eq!(closest("ab", ["ax", "ay"].iter().copied()), Some(("ax", 1)));
        assert_eq!(closest("ab", std::iter::empty()), None);
    }
}
