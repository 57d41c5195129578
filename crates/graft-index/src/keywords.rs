//! Keyword search as sparse vectors, for a Qdrant server that holds the keyword side of an
//! index too: a chunk's BM25 term weights over the catalog's fields (text, path ×2, symbol ×3,
//! terms from the code [`tokenizer`](crate::tokenizer)) become one sparse vector, a query's
//! terms another, and Qdrant's IDF modifier supplies each term's inverse document frequency at
//! search time, so their dot product is the catalog's BM25 score (up to tantivy's quantised
//! field lengths, and lengths averaged when the chunk was written).
//!
//! This module only computes vectors; it stores and searches nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{PATH_BOOST, SYMBOL_BOOST};
use crate::tokenizer::{query_terms, terms};

/// BM25's term-frequency saturation and length normalisation (tantivy's values).
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// A sparse vector: dimensions (ascending, distinct) and their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// A chunk's fields, as the catalog indexes them.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub text: &'a str,
    pub path: &'a str,
    pub symbol: &'a str,
}

/// Which field a term was found in; each field's terms have their own dimensions (and so
/// their own document frequencies, as in tantivy).
#[derive(Debug, Clone, Copy)]
enum Field {
    Text,
    Path,
    Symbol,
}

impl Field {
    const ALL: [Field; 3] = [Field::Text, Field::Path, Field::Symbol];

    fn boost(self) -> f32 {
        match self {
            Field::Text => 1.0,
            Field::Path => PATH_BOOST,
            Field::Symbol => SYMBOL_BOOST,
        }
    }

    fn of<'a>(self, fields: &Fields<'a>) -> &'a str {
        match self {
            Field::Text => fields.text,
            Field::Path => fields.path,
            Field::Symbol => fields.symbol,
        }
    }
}

/// Average terms per field over a corpus: BM25's length normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AverageLengths {
    pub text: f32,
    pub path: f32,
    pub symbol: f32,
}

impl AverageLengths {
    /// The averages over `chunks` (1 for a field no chunk has terms in).
    pub fn of<'a>(chunks: impl IntoIterator<Item = Fields<'a>>) -> AverageLengths {
        let (mut sums, mut n) = ([0usize; 3], 0usize);
        for chunk in chunks {
            for (i, field) in Field::ALL.iter().enumerate() {
                sums[i] += terms(field.of(&chunk)).len();
            }
            n += 1;
        }
        let average = |sum: usize| if sum == 0 { 1.0 } else { sum as f32 / n as f32 };
        AverageLengths {
            text: average(sums[0]),
            path: average(sums[1]),
            symbol: average(sums[2]),
        }
    }

    fn of_field(&self, field: Field) -> f32 {
        match field {
            Field::Text => self.text,
            Field::Path => self.path,
            Field::Symbol => self.symbol,
        }
    }
}

/// A chunk's vector: for each term of each field, the field's boost times BM25's
/// term-frequency part, `tf (k1 + 1) / (tf + k1 (1 - b + b len / avg))`.
pub fn document(fields: Fields, lengths: &AverageLengths) -> SparseVector {
    let mut weights = BTreeMap::new();
    for field in Field::ALL {
        let words = terms(field.of(&fields));
        let length = words.len() as f32;
        let mut counts: BTreeMap<String, f32> = BTreeMap::new();
        for word in words {
            *counts.entry(word).or_default() += 1.0;
        }
        let norm = K1 * (1.0 - B + B * length / lengths.of_field(field));
        for (word, tf) in counts {
            *weights.entry(dimension(field, &word)).or_insert(0.0) += field.boost() * tf * (K1 + 1.0) / (tf + norm);
        }
    }
    collect(weights)
}

/// A query's vector: 1 for each distinct term, in every field.
pub fn query(text: &str) -> SparseVector {
    let mut weights = BTreeMap::new();
    for word in query_terms(text) {
        for field in Field::ALL {
            *weights.entry(dimension(field, &word)).or_insert(0.0) += 1.0;
        }
    }
    collect(weights)
}

fn collect(weights: BTreeMap<u32, f32>) -> SparseVector {
    let (indices, values) = weights.into_iter().unzip();
    SparseVector { indices, values }
}

/// A term's dimension in a field: FNV-1a over the field's tag and the term. Two terms share
/// a dimension about once in a corpus of 90,000 distinct terms (the birthday bound on 2^32).
fn dimension(field: Field, term: &str) -> u32 {
    let tag = match field {
        Field::Text => b't',
        Field::Path => b'p',
        Field::Symbol => b's',
    };
    let mut hash: u32 = 0x811c_9dc5;
    for byte in std::iter::once(tag).chain(term.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(text: &'a str, path: &'a str, symbol: &'a str) -> Fields<'a> {
        Fields { text, path, symbol }
    }

    fn dot(a: &SparseVector, b: &SparseVector) -> f32 {
        a.indices
            .iter()
            .zip(&a.values)
            .filter_map(|(i, v)| b.indices.iter().position(|j| j == i).map(|k| v * b.values[k]))
            .sum()
    }

    #[test]
    fn dimensions_ascend_and_are_distinct() {
        let v = document(
            fields("fn parse_http() { parse(); parse(); }", "src/http.rs", "parse_http"),
            &AverageLengths::of([]),
        );
        assert!(v.indices.windows(2).all(|w| w[0] < w[1]), "{v:?}");
        assert_eq!(v.indices.len(), v.values.len());
        let q = query("parse parse HTTP");
        assert_eq!(q.values, vec![1.0; q.indices.len()], "distinct terms, once each");
        assert_eq!(q.indices.len(), 6, "two terms in three fields: {q:?}");
    }

    #[test]
    fn scores_follow_bm25() {
        let lengths = AverageLengths {
            text: 4.0,
            path: 2.0,
            symbol: 1.0,
        };
        // "load" once in a 4-term text (the average length): tf part (1 × 2.2) / (1 + 1.2) = 1.
        let doc = document(fields("load the config file", "a/b", ""), &lengths);
        assert!((dot(&doc, &query("load")) - 1.0).abs() < 1e-6);
        // In the symbol as well: + 3 × (2.2 / (1 + 1.2)).
        let doc = document(fields("load the config file", "a/b", "load"), &lengths);
        assert!((dot(&doc, &query("load")) - 4.0).abs() < 1e-6);
        // More occurrences count less and less; a longer text dilutes them.
        let twice = dot(&document(fields("load load config file", "a/b", ""), &lengths), &query("load"));
        assert!(twice > 1.0 && twice < 2.0, "{twice}");
        let long = dot(
            &document(fields("load the config file and then some", "a/b", ""), &lengths),
            &query("load"),
        );
        assert!(long < 1.0, "{long}");
        // Identifiers split as the catalog splits them.
        let doc = document(fields("parseHttpRequest(x)", "a/b", ""), &lengths);
        assert!(dot(&doc, &query("request")) > 0.0);
        assert_eq!(dot(&doc, &query("unrelated")), 0.0);
    }

    #[test]
    fn average_lengths_count_terms_per_field() {
        let lengths = AverageLengths::of([fields("a b", "x/y", "s"), fields("c d e f", "z", "")]);
        assert_eq!(lengths.text, 3.0);
        assert_eq!(lengths.path, 1.5);
        assert_eq!(lengths.symbol, 0.5);
    }
}
