//! Text similarity: normalized Levenshtein similarity over characters,
//! ROUGE-L (F1 of the longest common subsequence of words) and BLEU-4
//! (geometric mean of clipped 1- to 4-gram precisions, add-one smoothed
//! above unigrams, with the brevity penalty). Words are lower-cased and
//! split on whitespace and punctuation.

use std::collections::BTreeMap;

/// 1 minus the edit distance over the longer length, 1 for two empty texts.
pub fn levenshtein_similarity(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    1.0 - edit_distance(&a, &b) as f64 / longest as f64
}

/// Levenshtein distance. A common prefix and suffix cost no edits, so
/// they are left out of the table (texts compared for similarity share
/// much); one row, walked without indexing.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a, b) = (&a[..a.len() - suffix], &b[..b.len() - suffix]);
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = i;
        let mut left = i + 1;
        for (cell, cb) in row[1..].iter_mut().zip(b) {
            let up = *cell;
            let value = (diagonal + usize::from(ca != cb)).min(up + 1).min(left + 1);
            diagonal = up;
            *cell = value;
            left = value;
        }
        row[0] = i + 1;
    }
    row[b.len()]
}

/// The words of a text, lower-cased.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// ROUGE-L F1 between a candidate and a reference.
pub fn rouge_l(candidate: &str, reference: &str) -> f64 {
    let (c, r) = (words(candidate), words(reference));
    if c.is_empty() || r.is_empty() {
        return f64::from(u8::from(c.is_empty() && r.is_empty()));
    }
    let mut table = vec![vec![0usize; r.len() + 1]; c.len() + 1];
    for i in 0..c.len() {
        for j in 0..r.len() {
            table[i + 1][j + 1] = if c[i] == r[j] {
                table[i][j] + 1
            } else {
                table[i][j + 1].max(table[i + 1][j])
            };
        }
    }
    let lcs = table[c.len()][r.len()] as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (lcs / c.len() as f64, lcs / r.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// BLEU-4 of a candidate against one reference.
pub fn bleu(candidate: &str, reference: &str) -> f64 {
    let (c, r) = ids(&words(candidate), &words(reference));
    if c.is_empty() {
        return 0.0;
    }
    let mut log_sum = 0.0;
    for n in 1..=4 {
        let (candidate_grams, reference_grams) = (ngrams(&c, n), ngrams(&r, n));
        let total: usize = candidate_grams.values().sum();
        let clipped: usize = candidate_grams
            .iter()
            .map(|(gram, &count)| count.min(reference_grams.get(gram).copied().unwrap_or(0)))
            .sum();
        let precision = if n == 1 {
            if clipped == 0 {
                return 0.0;
            }
            clipped as f64 / total as f64
        } else {
            (clipped as f64 + 1.0) / (total as f64 + 1.0)
        };
        log_sum += precision.ln() / 4.0;
    }
    let brevity = if c.len() >= r.len() {
        1.0
    } else {
        (1.0 - r.len() as f64 / c.len() as f64).exp()
    };
    brevity * log_sum.exp()
}

/// Both texts' words as numbers (equal words, equal numbers), so n-grams
/// compare as short integer slices.
fn ids(a: &[String], b: &[String]) -> (Vec<usize>, Vec<usize>) {
    let mut vocabulary: Vec<&String> = a.iter().chain(b).collect();
    vocabulary.sort_unstable();
    vocabulary.dedup();
    let id = |w: &String| vocabulary.binary_search(&w).unwrap_or_default();
    (a.iter().map(id).collect(), b.iter().map(id).collect())
}

/// How often each `n`-gram occurs.
fn ngrams(words: &[usize], n: usize) -> BTreeMap<&[usize], usize> {
    let mut grams: BTreeMap<&[usize], usize> = BTreeMap::new();
    for gram in words.windows(n) {
        *grams.entry(gram).or_default() += 1;
    }
    grams
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_counts_edits_over_the_longer_text() {
        assert_eq!(levenshtein_similarity("kitten", "sitting"), 1.0 - 3.0 / 7.0);
        assert_eq!(levenshtein_similarity("", ""), 1.0);
        assert_eq!(levenshtein_similarity("abc", "abc"), 1.0);
        // Shared ends are no edits; what differs in between still counts.
        assert_eq!(edit_distance_of("the kitten sat", "the sitting sat"), 3);
        assert_eq!(edit_distance_of("abc", "abxbc"), 2);
        assert_eq!(edit_distance_of("", "abc"), 3);
        assert_eq!(edit_distance_of("aaa", "aa"), 1);
    }

    fn edit_distance_of(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        edit_distance(&a, &b)
    }

    #[test]
    fn rouge_l_is_the_f1_of_the_longest_common_subsequence() {
        // "the cat on the mat": 5 of the 6 words on each side.
        let score = rouge_l("the cat sat on the mat", "the cat lay on the mat");
        assert!((score - 5.0 / 6.0).abs() < 1e-9, "{score}");
        assert_eq!(rouge_l("a b", "c d"), 0.0);
    }

    #[test]
    fn bleu_is_one_for_an_identical_text_and_lower_otherwise() {
        let text = "the quick brown fox jumps over the lazy dog";
        assert!((bleu(text, text) - 1.0).abs() < 1e-9);
        let partial = bleu("the quick brown fox", text);
        assert!(partial > 0.0 && partial < 0.5, "{partial}");
        assert_eq!(bleu("nothing shared here", text), 0.0);
    }
}
