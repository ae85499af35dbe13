//! Text: tokenizers that travel with the model, and the sampling loop that generates with it.
//!
//! Two tokenizers share one id layout and one JSON format ([`Tokenizer`]):
//! - [`CharTokenizer`]: one id per character (Unicode scalar value) seen in the training corpus;
//!   a character never seen becomes [`UNK`].
//! - [`BpeTokenizer`]: byte-level BPE. Every string is UTF-8 bytes, each byte has an id, and merges
//!   learnt on the corpus join frequent neighbours, so nothing is ever unknown.
//!
//! Ids 0..4 are the special tokens of every kiln tokenizer: [`PAD`] (fills batches and short
//! windows), [`UNK`], [`BOS`] (starts every sequence [`generate`] feeds a model) and [`EOS`] (ends
//! one: generation stops when it is sampled). Text never encodes to a special id (`"<eos>"` in a
//! string is five characters); [`decode`](Tokenizer::decode) drops pad, bos and eos and writes
//! unk as U+FFFD.
//!
//! `export_onnx(..., tokenizer=tok)` stores [`Tokenizer::to_json`] as the `kiln.tokenizer`
//! metadata; Python and kiln-wasm both read it with [`Tokenizer::from_json`] and run this code, so
//! a string gives the same ids, and a seed the same generated text, in the notebook and the page.
//!
//! ```
//! use kiln_core::text::{Tokenizer, BOS, EOS};
//! let tok = Tokenizer::fit_char(&["Ada", "Alan"])?;
//! assert_eq!(tok.vocab_size(), 4 + 5); // the specials, then A a d l n (by code point)
//! assert_eq!(tok.encode("Ana?"), [4, 8, 5, 1]); // "?" was never seen: UNK
//! assert_eq!(tok.decode(&[BOS, 4, 6, 5, EOS].map(i64::from))?, "Ada");
//! # Ok::<(), kiln_core::KilnError>(())
//! ```

mod bpe;
mod cached;
mod char;
mod generate;
mod json;
mod sample;
mod step;

pub use self::bpe::{BpeTokenizer, BYTE_IDS};
#[cfg(feature = "onnx")]
pub use self::cached::session_step;
pub(crate) use self::cached::Plan;
#[cfg(feature = "export")]
pub use self::cached::{engine_step, Engine};
pub use self::cached::{Cached, Source};
pub use self::char::CharTokenizer;
pub use self::generate::{generate, GenerateOptions, Generation, Step, Token, MAX_NEW_TOKENS};
pub use self::sample::{sample, SeededRng};
pub use self::step::{Layout, Run, Window, Windowed, MAX_CONTEXT};

use crate::{value_err, KilnError, Result};

/// The metadata key export stores the tokenizer under.
pub const METADATA_KEY: &str = "kiln.tokenizer";
/// Pads batches and the left of short windows.
pub const PAD: u32 = 0;
/// A character the tokenizer never saw (character tokenizer only).
pub const UNK: u32 = 1;
/// Begins every sequence a model is trained on or generates from.
pub const BOS: u32 = 2;
/// Ends a sequence; generation stops when the model picks it.
pub const EOS: u32 = 3;
/// How the special tokens are written in the JSON and in [`Tokenizer::token`].
pub const SPECIALS: [&str; 4] = ["<pad>", "<unk>", "<bos>", "<eos>"];
/// The largest vocabulary a tokenizer may have (ids must fit JavaScript's Int32Array).
pub const MAX_VOCAB: usize = 1 << 20;

/// A character or byte-level BPE tokenizer.
#[derive(Clone, Debug, PartialEq)]
pub enum Tokenizer {
    /// One id per character.
    Char(CharTokenizer),
    /// Byte-level BPE.
    Bpe(BpeTokenizer),
}

/// A padded batch: `ids` is `[rows, len]` row-major, `lengths` the real tokens in each row.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Token ids, each row padded on the right with [`PAD`].
    pub ids: Vec<i64>,
    /// Rows (texts).
    pub rows: usize,
    /// Columns (the longest row, or the length asked for).
    pub len: usize,
    /// Tokens before the padding in each row.
    pub lengths: Vec<i64>,
}

impl Tokenizer {
    /// A character tokenizer over every character in `texts`.
    pub fn fit_char<S: AsRef<str>>(texts: &[S]) -> Result<Tokenizer> {
        Ok(Tokenizer::Char(CharTokenizer::fit(texts)?))
    }

    /// A byte-level BPE tokenizer of at most `vocab_size` ids learnt on `texts`.
    pub fn fit_bpe<S: AsRef<str>>(texts: &[S], vocab_size: usize) -> Result<Tokenizer> {
        Ok(Tokenizer::Bpe(BpeTokenizer::fit(texts, vocab_size)?))
    }

    /// `"char"` or `"bpe"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::Char(_) => "char",
            Tokenizer::Bpe(_) => "bpe",
        }
    }

    /// The number of ids, special tokens included: a language model's logits per position.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(t) => t.vocab_size(),
            Tokenizer::Bpe(t) => t.vocab_size(),
        }
    }

    /// The ids of `text` (no bos or eos added).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            Tokenizer::Char(t) => t.encode(text),
            Tokenizer::Bpe(t) => t.encode(text),
        }
    }

    /// The UTF-8 bytes id `id` stands for (empty for pad, bos and eos; U+FFFD for unk).
    pub fn bytes_of(&self, id: u32) -> Result<&[u8]> {
        let v = self.vocab_size();
        let b = match self {
            Tokenizer::Char(t) => t.bytes_of(id),
            Tokenizer::Bpe(t) => t.bytes_of(id),
        };
        b.ok_or_else(|| {
            KilnError::value(format!(
                "decode: id {id} is not in the vocabulary (ids 0..{v})"
            ))
        })
    }

    /// The text of `ids`: special tokens dropped, unk as U+FFFD, byte sequences that are not
    /// UTF-8 (a BPE model's half character) as U+FFFD. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.bytes_of(self.check_id(id)?)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `id` as a token id, or an error naming it.
    pub fn check_id(&self, id: i64) -> Result<u32> {
        match u32::try_from(id) {
            Ok(i) if (i as usize) < self.vocab_size() => Ok(i),
            _ => value_err!(
                "decode: id {id} is not in the vocabulary (ids 0..{})",
                self.vocab_size()
            ),
        }
    }

    /// How token `id` reads: `"<eos>"` for the specials, its text otherwise (lossy for BPE
    /// tokens that are part of a character).
    pub fn token(&self, id: u32) -> Result<String> {
        if (id as usize) < SPECIALS.len() {
            return Ok(SPECIALS[id as usize].to_string());
        }
        Ok(String::from_utf8_lossy(self.bytes_of(id)?).into_owned())
    }

    /// Encodes each text into a row of a `[rows, len]` matrix, padded on the right with [`PAD`]:
    /// with [`BOS`] in front and [`EOS`] behind when asked, cut to `max_len` ids when given
    /// (else `len` is the longest row).
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        max_len: Option<usize>,
        bos: bool,
        eos: bool,
    ) -> Result<Batch> {
        if max_len == Some(0) {
            value_err!("encode_batch: max_len must be positive");
        }
        let rows: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                let mut r = Vec::new();
                if bos {
                    r.push(BOS);
                }
                r.extend(self.encode(t.as_ref()));
                if eos {
                    r.push(EOS);
                }
                if let Some(m) = max_len {
                    r.truncate(m);
                }
                r
            })
            .collect();
        let len = max_len.unwrap_or_else(|| rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut ids = vec![PAD as i64; rows.len() * len];
        for (row, r) in ids.chunks_mut(len.max(1)).zip(&rows) {
            for (slot, &id) in row.iter_mut().zip(r) {
                *slot = id as i64;
            }
        }
        Ok(Batch {
            ids,
            rows: rows.len(),
            len,
            lengths: rows.iter().map(|r| r.len() as i64).collect(),
        })
    }

    /// Training pairs for a model that predicts the next id from the `size` ids before it: each
    /// text is `bos, ids…, eos`; every id after bos is a target, its context the `size` ids before
    /// it, left-padded with [`PAD`] — the context [`generate`] gives a model with a fixed window.
    /// Returns `(contexts [n, size] row-major, targets [n])`.
    pub fn windows<S: AsRef<str>>(&self, texts: &[S], size: usize) -> Result<(Vec<i64>, Vec<i64>)> {
        if size == 0 {
            value_err!("windows: size must be positive");
        }
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for t in texts {
            let mut seq = vec![BOS];
            seq.extend(self.encode(t.as_ref()));
            seq.push(EOS);
            for i in 1..seq.len() {
                let ctx = &seq[i.saturating_sub(size)..i];
                x.extend(std::iter::repeat_n(PAD as i64, size - ctx.len()));
                x.extend(ctx.iter().map(|&v| v as i64));
                y.push(seq[i] as i64);
            }
        }
        Ok((x, y))
    }

    /// The tokenizer as the JSON document export stores.
    pub fn to_json(&self) -> String {
        json::write(self)
    }

    /// Reads what [`to_json`](Self::to_json) wrote. Anything else (a wrong type, a merge of ids
    /// not yet made, a repeated character…) is an error that says what, never a panic.
    pub fn from_json(text: &str) -> Result<Tokenizer> {
        json::read(text)
    }

    /// The tokenizer stored in an ONNX model's metadata: `Ok(None)` when it has none.
    #[cfg(feature = "export")]
    pub fn from_onnx(bytes: &[u8]) -> Result<Option<Tokenizer>> {
        use prost::Message;
        let model = crate::onnx::pb::ModelProto::decode(bytes)
            .map_err(|e| KilnError::onnx(format!("tokenizer: not an ONNX model ({e})")))?;
        let entry = model.metadata_props.iter().find(|e| e.key == METADATA_KEY);
        entry.map(|e| Tokenizer::from_json(&e.value)).transpose()
    }
}

/// The error for a model exported without a tokenizer.
pub fn missing() -> KilnError {
    KilnError::value(format!(
        "this model carries no tokenizer (no {METADATA_KEY:?} metadata): export it with \
         export_onnx(..., tokenizer=tok), or pass the tokenizer"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<&'static str> {
        vec![
            "Ada", "Alan", "Grace", "Edsger", "Barbara", "Ken", "Dennis", "Frances",
        ]
    }

    #[test]
    fn batches_pad_on_the_right_and_cut_to_max_len() {
        let tok = Tokenizer::fit_char(&names()).unwrap();
        let b = tok
            .encode_batch(&["Ada", "Ken", ""], None, true, true)
            .unwrap();
        assert_eq!((b.rows, b.len), (3, 5));
        assert_eq!(b.lengths, vec![5, 5, 2]);
        let ada: Vec<i64> = tok.encode("Ada").iter().map(|&v| v as i64).collect();
        assert_eq!(&b.ids[..5], &[vec![2], ada, vec![3]].concat()[..]);
        assert_eq!(&b.ids[10..], &[2, 3, 0, 0, 0]);
        let cut = tok
            .encode_batch(&["Barbara"], Some(3), false, true)
            .unwrap();
        assert_eq!((cut.len, cut.lengths[0]), (3, 3));
        assert_eq!(tok.decode(&cut.ids).unwrap(), "Bar");
        assert!(tok.encode_batch(&["x"], Some(0), false, false).is_err());
        let empty = tok.encode_batch::<&str>(&[], None, false, false).unwrap();
        assert_eq!((empty.rows, empty.len, empty.ids.len()), (0, 0, 0));
    }

    #[test]
    fn windows_are_the_contexts_generation_sees() {
        let tok = Tokenizer::fit_char(&["ab"]).unwrap();
        let (a, b) = (tok.encode("a")[0] as i64, tok.encode("b")[0] as i64);
        let (x, y) = tok.windows(&["ab"], 2).unwrap();
        // bos a b eos: three targets
        assert_eq!(y, vec![a, b, 3]);
        assert_eq!(x, vec![0, 2, 2, a, a, b]);
        assert!(tok.windows(&["ab"], 0).is_err());
    }

    #[test]
    fn decode_refuses_ids_outside_the_vocabulary() {
        let tok = Tokenizer::fit_char(&names()).unwrap();
        let v = tok.vocab_size() as i64;
        for bad in [v, -1, i64::MAX] {
            let e = tok.decode(&[4, bad]).unwrap_err().to_string();
            assert!(
                e.contains(&bad.to_string()) && e.contains("vocabulary"),
                "{e}"
            );
        }
        assert_eq!(tok.decode(&[0, 2, 3]).unwrap(), "");
        assert_eq!(tok.decode(&[1]).unwrap(), "\u{FFFD}");
        assert_eq!(tok.token(3).unwrap(), "<eos>");
    }
}
