//! Hybrid ranking: reciprocal-rank fusion of the keyword (BM25) and dense (vector) result
//! lists, then a per-file cap so one file cannot fill the top k.
//!
//! Fusion uses ranks only, never raw scores, and applies no score threshold: a query that
//! matches anything gets results (stacked thresholds are how Tabby ends up returning nothing).

use std::collections::HashMap;

/// The usual RRF constant: how much the first ranks dominate.
pub const RRF_K: f64 = 60.0;

/// One ranked candidate from a single retriever.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    pub id: u64,
    /// The retriever's own score (BM25 or cosine), reported but not used for fusion.
    pub score: f32,
}

/// Fuses ranked lists (best first), each with a weight, into one list of `(id, score)`, best
/// first: an id scores `weight / (k + rank)` in each list it is in. Ties are broken by the
/// id's best rank in any list, then by id, so the order is stable.
pub fn reciprocal_rank_fusion(lists: &[(&[Ranked], f64)]) -> Vec<(u64, f64)> {
    let mut fused: HashMap<u64, (f64, usize)> = HashMap::new();
    for (list, weight) in lists {
        for (rank, hit) in list.iter().enumerate() {
            let entry = fused.entry(hit.id).or_insert((0.0, usize::MAX));
            entry.0 += weight / (RRF_K + rank as f64 + 1.0);
            entry.1 = entry.1.min(rank);
        }
    }
    let mut out: Vec<(u64, f64, usize)> = fused.into_iter().map(|(id, (s, r))| (id, s, r)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    out.into_iter().map(|(id, score, _)| (id, score)).collect()
}

/// Keeps at most `per_file` hits of each file and at most `k` in all, in order. `file_of`
/// names the file of a hit.
pub fn cap_per_file<T, F: Eq + std::hash::Hash>(hits: Vec<T>, k: usize, per_file: usize, file_of: impl Fn(&T) -> F) -> Vec<T> {
    let mut counts: HashMap<F, usize> = HashMap::new();
    let mut out = Vec::with_capacity(k.min(hits.len()));
    for hit in hits {
        if out.len() == k {
            break;
        }
        let count = counts.entry(file_of(&hit)).or_default();
        if *count < per_file {
            *count += 1;
            out.push(hit);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &[u64]) -> Vec<Ranked> {
        ids.iter().map(|&id| Ranked { id, score: 1.0 }).collect()
    }

    #[test]
    fn an_id_found_by_both_retrievers_wins() {
        let keyword = list(&[1, 2, 3]);
        let dense = list(&[4, 3, 5]);
        let fused = reciprocal_rank_fusion(&[(&keyword, 1.0), (&dense, 1.0)]);
        assert_eq!(fused[0].0, 3, "{fused:?}");
        assert_eq!(fused.len(), 5);
        let expected = 1.0 / (RRF_K + 3.0) + 1.0 / (RRF_K + 2.0);
        assert!((fused[0].1 - expected).abs() < 1e-12);
    }

    #[test]
    fn one_empty_list_leaves_the_other_in_order() {
        let fused = reciprocal_rank_fusion(&[(&list(&[7, 8, 9]), 1.0), (&[], 1.0)]);
        assert_eq!(fused.iter().map(|f| f.0).collect::<Vec<_>>(), [7, 8, 9]);
        assert!(reciprocal_rank_fusion(&[(&[], 1.0), (&[], 1.0)]).is_empty());
    }

    #[test]
    fn weights_decide_between_lists_that_disagree() {
        let keyword = list(&[1, 2]);
        let dense = list(&[2, 1]);
        assert_eq!(reciprocal_rank_fusion(&[(&keyword, 1.0), (&dense, 0.5)])[0].0, 1);
        assert_eq!(reciprocal_rank_fusion(&[(&keyword, 0.5), (&dense, 1.0)])[0].0, 2);
    }

    #[test]
    fn the_per_file_cap_lets_other_files_in() {
        let hits = vec![("a", 1), ("a", 2), ("a", 3), ("b", 4), ("a", 5), ("c", 6)];
        let kept = cap_per_file(hits, 4, 2, |h| h.0);
        assert_eq!(kept, vec![("a", 1), ("a", 2), ("b", 4), ("c", 6)]);
    }
}
