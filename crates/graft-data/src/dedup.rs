//! Duplicate files collapsed to one: exact copies by content hash, near copies by MinHash.
//!
//! Near duplicates are found as The Stack's preprocessing found them: each file's set of
//! shingles (runs of `shingle` word tokens), 128 MinHash values of that set, locality-sensitive
//! hashing in 16 bands of 8 rows to propose pairs, and the pair's Jaccard similarity (of the
//! real shingle sets) against the threshold. Clusters are joined transitively; the first file
//! of each (in the order given) is kept. This module groups texts; it does not read files.

use std::collections::HashMap;

use graft_index::tokenizer::word_ranges;
use sha2::{Digest, Sha256};

const PERMUTATIONS: usize = 128;
const BANDS: usize = 16;
const ROWS: usize = PERMUTATIONS / BANDS;
/// The Mersenne prime 2^61 - 1, the modulus of the permutations.
const PRIME: u64 = (1 << 61) - 1;

/// What happened to one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Kept: the first of its cluster.
    Kept,
    /// The same bytes as text `i`.
    ExactOf(usize),
    /// At least the threshold similar to text `i` (directly or through others).
    NearOf(usize),
}

/// Word tokens of code: words (the keyword index's: letters, digits, `_`) and each other
/// visible character.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut at = 0;
    for (start, end) in word_ranges(text) {
        visible_chars(&text[at..start], &mut out);
        out.push(&text[start..end]);
        at = end;
    }
    visible_chars(&text[at..], &mut out);
    out
}

/// Each character of `gap` that is not white space, as a token.
fn visible_chars<'a>(gap: &'a str, out: &mut Vec<&'a str>) {
    out.extend(
        gap.char_indices()
            .filter(|(_, c)| !c.is_whitespace())
            .map(|(i, c)| &gap[i..i + c.len_utf8()]),
    );
}

fn hash64(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// The hashes of a text's shingles (sorted, unique).
pub fn shingles(text: &str, size: usize) -> Vec<u64> {
    let tokens = tokens(text);
    let size = size.max(1);
    let mut out: Vec<u64> = if tokens.len() <= size {
        vec![hash64(tokens.join(" ").as_bytes())]
    } else {
        tokens.windows(size).map(|w| hash64(w.join(" ").as_bytes())).collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Jaccard similarity of two sorted, unique sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - both;
    if union == 0 {
        1.0
    } else {
        both as f64 / union as f64
    }
}

/// The permutations' coefficients, the same on every run.
fn coefficients() -> Vec<(u64, u64)> {
    (0..PERMUTATIONS as u64)
        .map(|i| {
            let a = hash64(&[b"a".as_slice(), &i.to_le_bytes()].concat()) % (PRIME - 1) + 1;
            let b = hash64(&[b"b".as_slice(), &i.to_le_bytes()].concat()) % PRIME;
            (a, b)
        })
        .collect()
}

fn signature(shingles: &[u64], coefficients: &[(u64, u64)]) -> Vec<u64> {
    coefficients
        .iter()
        .map(|&(a, b)| {
            shingles
                .iter()
                .map(|&x| ((a as u128 * (x % PRIME) as u128 + b as u128) % PRIME as u128) as u64)
                .min()
                .unwrap_or(u64::MAX)
        })
        .collect()
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Groups `texts`: one verdict per text. `threshold` is the Jaccard similarity from which two
/// texts are near duplicates; `shingle` the tokens per shingle.
pub fn deduplicate(texts: &[&str], threshold: f64, shingle: usize) -> Vec<Verdict> {
    let mut verdicts = vec![Verdict::Kept; texts.len()];
    let mut first_of_hash: HashMap<[u8; 32], usize> = HashMap::new();
    let mut unique = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        match first_of_hash.get(&digest) {
            Some(&first) => verdicts[i] = Verdict::ExactOf(first),
            None => {
                first_of_hash.insert(digest, i);
                unique.push(i);
            }
        }
    }
    let sets: Vec<Vec<u64>> = unique.iter().map(|&i| shingles(texts[i], shingle)).collect();
    let coefficients = coefficients();
    let mut buckets: HashMap<(usize, Vec<u64>), Vec<usize>> = HashMap::new();
    for (k, set) in sets.iter().enumerate() {
        let sig = signature(set, &coefficients);
        for band in 0..BANDS {
            buckets
                .entry((band, sig[band * ROWS..(band + 1) * ROWS].to_vec()))
                .or_default()
                .push(k);
        }
    }
    let mut parent: Vec<usize> = (0..unique.len()).collect();
    let mut checked = std::collections::HashSet::new();
    for members in buckets.values().filter(|m| m.len() > 1) {
        for (x, &a) in members.iter().enumerate() {
            for &b in &members[x + 1..] {
                if !checked.insert((a, b)) || find(&mut parent, a) == find(&mut parent, b) {
                    continue;
                }
                if jaccard(&sets[a], &sets[b]) >= threshold {
                    let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                    // The root is the earliest text, so it is the one kept.
                    let (keep, join) = if ra < rb { (ra, rb) } else { (rb, ra) };
                    parent[join] = keep;
                }
            }
        }
    }
    for k in 0..unique.len() {
        let root = find(&mut parent, k);
        if root != k {
            verdicts[unique[k]] = Verdict::NearOf(unique[root]);
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(seed: usize, lines: usize) -> String {
        (0..lines)
            .map(|i| format!("fn item_{seed}_{i}(value: u32) -> u32 {{ value * {} + {} }}\n", i + seed, i * 3))
            .collect()
    }

    #[test]
    fn exact_and_near_duplicates_collapse_to_the_first() {
        let a = file(1, 40);
        let b = file(2, 40);
        let a_copy = a.clone();
        // One line of forty changed: still nearly the same.
        let a_edited = a.replacen("value * 1 + 0", "value * 100 + 7", 1);
        let verdicts = deduplicate(&[&a, &b, &a_copy, &a_edited], 0.85, 5);
        assert_eq!(
            verdicts,
            vec![Verdict::Kept, Verdict::Kept, Verdict::ExactOf(0), Verdict::NearOf(0)]
        );
    }

    #[test]
    fn different_files_stay_and_the_threshold_decides() {
        let a = file(1, 40);
        let b = file(2, 40);
        assert!(jaccard(&shingles(&a, 5), &shingles(&b, 5)) < 0.2);
        // Eight lines of forty changed: about 0.8 similar, below the default threshold.
        let mut edited = a.clone();
        for i in [2, 7, 12, 17, 22, 27, 32, 37] {
            edited = edited.replacen(&format!("fn item_1_{i}("), &format!("fn changed_{i}("), 1);
        }
        let j = jaccard(&shingles(&a, 5), &shingles(&edited, 5));
        assert!(j > 0.7 && j < 0.85, "{j}");
        assert_eq!(deduplicate(&[&a, &b, &edited], 0.85, 5), vec![Verdict::Kept; 3]);
        assert_eq!(
            deduplicate(&[&a, &b, &edited], j - 0.01, 5),
            vec![Verdict::Kept, Verdict::Kept, Verdict::NearOf(0)]
        );
    }

    #[test]
    fn jaccard_matches_hand_computed_values() {
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[1], &[1]), 1.0);
        assert_eq!(jaccard(&[1], &[2]), 0.0);
        assert_eq!(tokens("a.b(c_d, 12)"), vec!["a", ".", "b", "(", "c_d", ",", "12", ")"]);
    }
}
