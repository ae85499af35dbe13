//! The character tokenizer: ids 4.. are the corpus's characters in code-point order.

use std::collections::{BTreeSet, HashMap};

use super::{MAX_VOCAB, SPECIALS, UNK};
use crate::{value_err, Result};

/// One id per character (Unicode scalar value) of the training corpus, after the four specials.
/// No normalisation: a composed "é" and "e" + a combining accent are different characters.
#[derive(Clone, Debug)]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
    /// Each id's UTF-8 bytes (specials: empty, unk: U+FFFD).
    bytes: Vec<Vec<u8>>,
}

impl PartialEq for CharTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.chars == other.chars
    }
}

impl CharTokenizer {
    /// Every character in `texts`, in code-point order.
    pub fn fit<S: AsRef<str>>(texts: &[S]) -> Result<CharTokenizer> {
        let set: BTreeSet<char> = texts.iter().flat_map(|t| t.as_ref().chars()).collect();
        if set.is_empty() {
            value_err!("CharTokenizer.fit: the texts have no characters to learn");
        }
        CharTokenizer::from_chars(set.into_iter().collect())
    }

    /// The tokenizer whose id `4 + i` is `chars[i]`; the characters must be distinct.
    pub fn from_chars(chars: Vec<char>) -> Result<CharTokenizer> {
        if chars.len() + SPECIALS.len() > MAX_VOCAB {
            value_err!(
                "character tokenizer: {} characters (at most {})",
                chars.len(),
                MAX_VOCAB - SPECIALS.len()
            );
        }
        let mut ids = HashMap::with_capacity(chars.len());
        for (i, &c) in chars.iter().enumerate() {
            if ids.insert(c, (SPECIALS.len() + i) as u32).is_some() {
                value_err!("character tokenizer: {c:?} appears twice in the vocabulary");
            }
        }
        let mut bytes = vec![Vec::new(); SPECIALS.len()];
        bytes[UNK as usize] = "\u{FFFD}".as_bytes().to_vec();
        bytes.extend(chars.iter().map(|c| c.to_string().into_bytes()));
        Ok(CharTokenizer { chars, ids, bytes })
    }

    /// The characters, in id order (the first has id 4).
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Specials plus characters.
    pub fn vocab_size(&self) -> usize {
        SPECIALS.len() + self.chars.len()
    }

    /// One id per character; [`UNK`] for a character not in the vocabulary.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.chars()
            .map(|c| self.ids.get(&c).copied().unwrap_or(UNK))
            .collect()
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
    fn unseen_characters_are_unk_and_the_rest_round_trip() {
        let tok = Tokenizer::fit_char(&["Zoë", "Åsa", "李娜", "Ana 😀"]).unwrap();
        for s in ["Zoë", "李娜", "Ana 😀", "", "Åsa Zoë"] {
            let ids: Vec<i64> = tok.encode(s).iter().map(|&v| v as i64).collect();
            assert_eq!(ids.len(), s.chars().count());
            assert!(ids.iter().all(|&i| i >= 4), "{s}: {ids:?}");
            assert_eq!(tok.decode(&ids).unwrap(), s);
        }
        let ids = tok.encode("Zoé\u{0}🦀");
        assert_eq!(&ids[2..], &[UNK, UNK, UNK]);
        let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
        assert_eq!(tok.decode(&ids).unwrap(), "Zo\u{FFFD}\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn ids_follow_code_points_whatever_the_corpus_order() {
        let a = Tokenizer::fit_char(&["cab", "a"]).unwrap();
        let b = Tokenizer::fit_char(&["b", "ac"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.encode("abc"), vec![4, 5, 6]);
        assert!(Tokenizer::fit_char(&["", ""]).is_err());
        assert!(Tokenizer::fit_char::<&str>(&[]).is_err());
        assert!(CharTokenizer::from_chars(vec!['a', 'b', 'a']).is_err());
    }
}
