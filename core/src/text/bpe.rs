//! Byte-level BPE: ids 4..260 are the 256 byte values, each merge learnt on the corpus adds one
//! id for a pair of earlier ids. Text is first cut into chunks (a run of letters, of digits, of
//! other symbols, each with the one space before it; or a run of whitespace), as GPT-2's
//! pre-tokenizer does with a regex, and merges never cross a chunk. The character classes are
//! Rust's own Unicode tables, the same natively and in wasm.

use std::collections::{HashMap, HashSet};

use super::{MAX_VOCAB, SPECIALS, UNK};
use crate::{value_err, Result};

/// The ids of the 256 bytes start here: byte `b` is id `4 + b`.
pub const BYTE_IDS: u32 = SPECIALS.len() as u32;
const FIRST_MERGE: u32 = BYTE_IDS + 256;
/// A pair seen fewer times than this is not merged: training stops there.
const MIN_PAIR_COUNT: u64 = 2;

/// Byte-level BPE: no unknown input, by construction.
#[derive(Clone, Debug)]
pub struct BpeTokenizer {
    merges: Vec<(u32, u32)>,
    ranks: HashMap<(u32, u32), u32>,
    bytes: Vec<Vec<u8>>,
}

impl PartialEq for BpeTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.merges == other.merges
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Digit
    } else {
        Class::Other
    }
}

/// The chunks of `text` (byte ranges) that merges stay inside.
fn chunks(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        if chars[i].1 == ' '
            && chars
                .get(i + 1)
                .is_some_and(|&(_, c)| class(c) != Class::Space)
        {
            i += 1; // a single space leads the word after it
        }
        let cls = class(chars[i].1);
        while i < chars.len() && class(chars[i].1) == cls {
            i += 1;
        }
        // a run of whitespace leaves its last space to the word that follows
        if cls == Class::Space && i < chars.len() && i - start >= 2 && chars[i - 1].1 == ' ' {
            i -= 1;
        }
        out.push(&text[at(start)..at(i)]);
    }
    out
}

/// Merges `pair` into `id` everywhere in `word`, left to right.
fn merge_word(word: &mut Vec<u32>, pair: (u32, u32), id: u32) {
    let mut w = 0;
    let mut r = 0;
    while r < word.len() {
        if r + 1 < word.len() && (word[r], word[r + 1]) == pair {
            word[w] = id;
            r += 2;
        } else {
            word[w] = word[r];
            r += 1;
        }
        w += 1;
    }
    word.truncate(w);
}

impl BpeTokenizer {
    /// Learns up to `vocab_size - 260` merges on `texts`: each time the most frequent adjacent
    /// pair within a chunk (ties: the smallest pair of ids), until no pair occurs twice.
    pub fn fit<S: AsRef<str>>(texts: &[S], vocab_size: usize) -> Result<BpeTokenizer> {
        if !(FIRST_MERGE as usize..=MAX_VOCAB).contains(&vocab_size) {
            value_err!(
                "BPETokenizer.fit: vocab_size must be at least {FIRST_MERGE} (4 special tokens and \
                 256 bytes) and at most {MAX_VOCAB}, got {vocab_size}"
            );
        }
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for t in texts {
            for c in chunks(t.as_ref()) {
                *counts.entry(c).or_default() += 1;
            }
        }
        let mut words: Vec<(&str, u64)> = counts.into_iter().collect();
        words.sort_unstable(); // a fixed order: the result must not depend on a hash seed
        let counts: Vec<u64> = words.iter().map(|w| w.1).collect();
        let mut words: Vec<Vec<u32>> = words
            .iter()
            .map(|(w, _)| w.bytes().map(|b| BYTE_IDS + b as u32).collect())
            .collect();
        let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
        let mut holders: HashMap<(u32, u32), HashSet<usize>> = HashMap::new();
        for (i, w) in words.iter().enumerate() {
            for p in w.windows(2) {
                *pairs.entry((p[0], p[1])).or_default() += counts[i];
                holders.entry((p[0], p[1])).or_default().insert(i);
            }
        }
        let mut merges = Vec::new();
        while FIRST_MERGE as usize + merges.len() < vocab_size {
            let best = pairs
                .iter()
                .filter(|(_, &n)| n >= MIN_PAIR_COUNT)
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
            let Some((&pair, _)) = best else { break };
            let id = FIRST_MERGE + merges.len() as u32;
            merges.push(pair);
            let mut touched: Vec<usize> = holders
                .remove(&pair)
                .unwrap_or_default()
                .into_iter()
                .collect();
            touched.sort_unstable();
            for i in touched {
                let w = &mut words[i];
                for p in w.windows(2) {
                    let e = pairs.get_mut(&(p[0], p[1])).expect("counted");
                    *e -= counts[i];
                }
                merge_word(w, pair, id);
                for p in w.windows(2) {
                    *pairs.entry((p[0], p[1])).or_default() += counts[i];
                    holders.entry((p[0], p[1])).or_default().insert(i);
                }
            }
            pairs.retain(|_, n| *n > 0);
        }
        BpeTokenizer::from_merges(merges)
    }

    /// The tokenizer with these merges: merge `i` joins two ids below `260 + i` into id `260 + i`.
    pub fn from_merges(merges: Vec<(u32, u32)>) -> Result<BpeTokenizer> {
        if FIRST_MERGE as usize + merges.len() > MAX_VOCAB {
            value_err!(
                "BPE tokenizer: {} merges (at most {})",
                merges.len(),
                MAX_VOCAB - FIRST_MERGE as usize
            );
        }
        let mut bytes = vec![Vec::new(); BYTE_IDS as usize];
        bytes[UNK as usize] = "\u{FFFD}".as_bytes().to_vec();
        bytes.extend((0..=255u8).map(|b| vec![b]));
        let mut ranks = HashMap::with_capacity(merges.len());
        for (i, &(a, b)) in merges.iter().enumerate() {
            let id = FIRST_MERGE + i as u32;
            for x in [a, b] {
                if x < BYTE_IDS || x >= id {
                    value_err!(
                        "BPE tokenizer: merge {i} uses id {x}, which is {}",
                        if x < BYTE_IDS {
                            "a special token"
                        } else {
                            "not made yet"
                        }
                    );
                }
            }
            if ranks.insert((a, b), i as u32).is_some() {
                value_err!("BPE tokenizer: merge {i} ({a}, {b}) repeats an earlier one");
            }
            let joined = [bytes[a as usize].as_slice(), &bytes[b as usize]].concat();
            bytes.push(joined);
        }
        Ok(BpeTokenizer {
            merges,
            ranks,
            bytes,
        })
    }

    /// The merges, in the order they were learnt.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// Specials, bytes and merges.
    pub fn vocab_size(&self) -> usize {
        FIRST_MERGE as usize + self.merges.len()
    }

    /// The ids of `text`'s UTF-8 bytes after every applicable merge, lowest rank first.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len());
        let mut word = Vec::new();
        for chunk in chunks(text) {
            word.clear();
            word.extend(chunk.bytes().map(|b| BYTE_IDS + b as u32));
            loop {
                let best = word
                    .windows(2)
                    .filter_map(|p| self.ranks.get(&(p[0], p[1])).map(|&r| (r, (p[0], p[1]))))
                    .min();
                let Some((rank, pair)) = best else { break };
                merge_word(&mut word, pair, FIRST_MERGE + rank);
            }
            out.extend_from_slice(&word);
        }
        out
    }

    pub(crate) fn bytes_of(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Tokenizer;
    use super::*;

    #[test]
    fn chunks_keep_a_leading_space_with_its_word() {
        assert_eq!(
            chunks("Hi there,  you 42x"),
            ["Hi", " there", ",", " ", " you", " 42", "x"]
        );
        assert_eq!(chunks("a\n b\t\tc "), ["a", "\n", " b", "\t\t", "c", " "]);
        assert_eq!(chunks(""), Vec::<&str>::new());
        assert_eq!(chunks("  "), ["  "]);
        assert_eq!(chunks("Zoë😀😀"), ["Zoë", "😀😀"]);
    }

    #[test]
    fn merges_learn_the_frequent_pairs_and_encoding_reproduces_them() {
        let corpus = ["anna", "hannah", "anne", "ann", "nan"];
        let tok = BpeTokenizer::fit(&corpus, 263).unwrap();
        let (a, n) = (BYTE_IDS + b'a' as u32, BYTE_IDS + b'n' as u32);
        // "an" occurs 5 times and "nn" 4: "an" first, then "ann" (an + n, 4 times)
        assert_eq!(tok.merges()[0], (a, n));
        assert_eq!(tok.merges()[1], (FIRST_MERGE, n));
        assert_eq!(tok.vocab_size(), 263);
        assert_eq!(tok.encode("ann"), vec![FIRST_MERGE + 1]);
        // whatever the merges, every string decodes back to itself
        let t = Tokenizer::Bpe(tok);
        for s in ["annanna", "", "Zoë 😀 \u{0}\t", "ann  ann\nan"] {
            let ids: Vec<i64> = t.encode(s).iter().map(|&v| v as i64).collect();
            assert_eq!(t.decode(&ids).unwrap(), s);
        }
    }

    #[test]
    fn training_stops_when_no_pair_repeats() {
        let tok = BpeTokenizer::fit(&["abcabc", "xyz"], 1000).unwrap();
        // ab and bc occur twice (ab first: the smaller pair), then abc; xyz's pairs once
        assert_eq!(tok.vocab_size(), FIRST_MERGE as usize + 2);
        assert!(BpeTokenizer::fit(&["a"], 259).is_err());
        assert!(BpeTokenizer::fit::<&str>(&[], 300)
            .unwrap()
            .merges()
            .is_empty());
    }

    #[test]
    fn a_larger_corpus_trains_deterministically_and_compresses() {
        let words = [
            "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Straße", "naïve",
        ];
        let text: Vec<String> = (0..400)
            .map(|i| {
                format!(
                    "{} {} {}",
                    words[i % 10],
                    words[(i * 7) % 10],
                    words[(i * 3 + 1) % 10]
                )
            })
            .collect();
        let a = BpeTokenizer::fit(&text, 400).unwrap();
        let b = BpeTokenizer::fit(&text, 400).unwrap();
        assert_eq!(a, b);
        let ids = a.encode(&text[5]);
        assert!(
            ids.len() * 3 < text[5].len(),
            "{} ids for {:?}",
            ids.len(),
            text[5]
        );
        let t = Tokenizer::Bpe(a);
        let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
        assert_eq!(t.decode(&ids).unwrap(), text[5]);
    }

    #[test]
    fn bad_merges_are_refused() {
        assert!(BpeTokenizer::from_merges(vec![(4, 5)]).is_ok());
        assert!(BpeTokenizer::from_merges(vec![(3, 5)]).is_err());
        assert!(BpeTokenizer::from_merges(vec![(4, FIRST_MERGE)]).is_err());
        assert!(BpeTokenizer::from_merges(vec![(4, 5), (4, 5)]).is_err());
        assert!(BpeTokenizer::from_merges(vec![(4, 5), (FIRST_MERGE, 5)]).is_ok());
    }
}
