//! The sampling loop: prompt → ids → one token at a time until eos or `max_new_tokens`.
//!
//! The loop knows a model only as a [`Step`]: "here is the context, give me the next logits",
//! then "here is one more token". A stateless model behind [`Windowed`](super::Windowed) reruns on
//! the whole (windowed) prefix each time; a recurrent model can keep its hidden state and an
//! attention model a key/value cache behind the same two calls, so a token costs the same at
//! position 5 as at 200.

use super::sample::{sample, SeededRng};
use super::{Tokenizer, BOS, EOS, PAD, UNK};
use crate::{value_err, KilnError, Result};

/// The most tokens one call generates.
pub const MAX_NEW_TOKENS: usize = 1 << 16;

/// A model seen one token at a time.
pub trait Step {
    /// Logits over the vocabulary for the token after `context` (bos and the prompt's ids).
    /// Called once, first.
    fn start(&mut self, context: &[u32]) -> Result<Vec<f32>>;
    /// Logits for the token after `token`, which follows everything fed so far.
    fn next(&mut self, token: u32) -> Result<Vec<f32>>;
}

impl<S: Step + ?Sized> Step for &mut S {
    fn start(&mut self, context: &[u32]) -> Result<Vec<f32>> {
        (**self).start(context)
    }
    fn next(&mut self, token: u32) -> Result<Vec<f32>> {
        (**self).next(token)
    }
}

impl<S: Step + ?Sized> Step for Box<S> {
    fn start(&mut self, context: &[u32]) -> Result<Vec<f32>> {
        (**self).start(context)
    }
    fn next(&mut self, token: u32) -> Result<Vec<f32>> {
        (**self).next(token)
    }
}

/// How to sample: checked once, by [`GenerateOptions::new`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Tokens to generate at most (eos may end the text sooner); 0 gives the prompt back.
    pub max_new_tokens: usize,
    /// 0: always the most likely token (greedy, the seed unused). Above 1 flatter, below sharper.
    pub temperature: f32,
    /// Sample among the `k` most likely tokens only; `None`: all.
    pub top_k: Option<usize>,
    /// The seed of the draws: the same seed, model and prompt give the same text everywhere.
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            temperature: 1.0,
            top_k: None,
            seed: 0,
        }
    }
}

impl GenerateOptions {
    /// Options from what a caller passed (signed, as Python and JavaScript numbers are), checked.
    pub fn new(
        max_new_tokens: i64,
        temperature: f64,
        top_k: Option<i64>,
        seed: u64,
    ) -> Result<Self> {
        if !(0..=MAX_NEW_TOKENS as i64).contains(&max_new_tokens) {
            value_err!(
                "generate: max_new_tokens must be 0 to {MAX_NEW_TOKENS}, got {max_new_tokens}"
            );
        }
        if !temperature.is_finite() || temperature < 0.0 {
            value_err!(
                "generate: temperature must be 0 (always the most likely token) or positive, got {temperature}"
            );
        }
        if let Some(k) = top_k {
            if k < 1 {
                value_err!("generate: top_k must be at least 1 (or none, to sample from every token), got {k}");
            }
        }
        Ok(GenerateOptions {
            max_new_tokens: max_new_tokens as usize,
            temperature: temperature as f32,
            top_k: top_k.map(|k| k as usize),
            seed,
        })
    }
}

/// One generated token and the text it adds (empty while a BPE character is incomplete). The
/// texts of a generation's tokens, in order, are [`Generation::text`] after the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// The sampled id ([`EOS`] only for the last piece of an incomplete character).
    pub id: u32,
    /// The text it adds.
    pub text: String,
}

/// A generation in progress: [`next_token`](Self::next_token) until `None`.
pub struct Generation<S> {
    step: S,
    tok: Tokenizer,
    opts: GenerateOptions,
    rng: SeededRng,
    context: Vec<u32>,
    new_ids: Vec<u32>,
    text: String,
    pending: Vec<u8>,
    done: bool,
}

impl<S: Step> Generation<S> {
    /// Starts from `[bos] + tok.encode(prompt)`; nothing runs until the first `next_token`.
    pub fn new(step: S, tok: &Tokenizer, prompt: &str, opts: GenerateOptions) -> Self {
        let mut context = vec![BOS];
        context.extend(tok.encode(prompt));
        Generation {
            step,
            tok: tok.clone(),
            opts,
            rng: SeededRng::new(opts.seed),
            context,
            new_ids: Vec::new(),
            text: prompt.to_string(),
            pending: Vec::new(),
            done: false,
        }
    }

    /// The next token, or `None` once eos was sampled or `max_new_tokens` were made. The sampler
    /// never picks pad, unk or bos.
    pub fn next_token(&mut self) -> Result<Option<Token>> {
        if self.done || self.new_ids.len() >= self.opts.max_new_tokens {
            self.done = true;
            return Ok(None);
        }
        let logits = match self.new_ids.last() {
            None => self.step.start(&self.context)?,
            Some(&last) => self.step.next(last)?,
        };
        let v = self.tok.vocab_size();
        if logits.len() != v {
            self.done = true;
            return Err(KilnError::shape(format!(
                "generate: the model gives {} logits per token but the tokenizer has {v} ids: \
                 is this the tokenizer the model was trained with?",
                logits.len()
            )));
        }
        let o = &self.opts;
        let id = sample(
            &logits,
            &[PAD, UNK, BOS],
            o.temperature,
            o.top_k,
            &mut self.rng,
        )?;
        let mut piece = String::new();
        if id == EOS {
            self.done = true;
            drain_utf8(&mut self.pending, &mut piece, true);
            self.text.push_str(&piece);
            return Ok((!piece.is_empty()).then_some(Token { id, text: piece }));
        }
        self.new_ids.push(id);
        self.pending.extend_from_slice(self.tok.bytes_of(id)?);
        let last = self.new_ids.len() == self.opts.max_new_tokens;
        drain_utf8(&mut self.pending, &mut piece, last);
        self.done = last;
        self.text.push_str(&piece);
        Ok(Some(Token { id, text: piece }))
    }

    /// The prompt and everything generated so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The ids generated so far (eos not included).
    pub fn ids(&self) -> &[u32] {
        &self.new_ids
    }

    /// Whether the generation has ended.
    pub fn done(&self) -> bool {
        self.done
    }
}

/// Moves the complete characters of `pending` to `out` (each invalid sequence as one U+FFFD,
/// exactly as `String::from_utf8_lossy` would on the whole text), keeping an unfinished character
/// back unless `at_end`.
fn drain_utf8(pending: &mut Vec<u8>, out: &mut String, at_end: bool) {
    loop {
        match std::str::from_utf8(pending) {
            Ok(s) => {
                out.push_str(s);
                pending.clear();
                return;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&pending[..valid]).expect("checked valid"));
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        pending.drain(..valid + n);
                    }
                    None => {
                        pending.drain(..valid);
                        if at_end {
                            out.push('\u{FFFD}');
                            pending.clear();
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// Generates from `prompt` and returns the prompt followed by the new text; `on_token` sees each
/// token as it comes (an error from it ends the generation with that error).
pub fn generate<S: Step>(
    step: S,
    tok: &Tokenizer,
    prompt: &str,
    opts: GenerateOptions,
    mut on_token: impl FnMut(&Token) -> Result<()>,
) -> Result<String> {
    let mut g = Generation::new(step, tok, prompt, opts);
    while let Some(t) = g.next_token()? {
        on_token(&t)?;
    }
    Ok(g.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "model" whose logits favour the id after the last one seen, cycling through the vocabulary.
    struct Cycle {
        v: usize,
        last: u32,
        calls: Vec<String>,
    }

    impl Cycle {
        fn logits(&self) -> Vec<f32> {
            let mut l = vec![0.0; self.v];
            l[(self.last as usize + 1) % self.v] = 5.0;
            l
        }
    }

    impl Step for Cycle {
        fn start(&mut self, context: &[u32]) -> Result<Vec<f32>> {
            self.calls.push(format!("start {context:?}"));
            self.last = *context.last().unwrap();
            Ok(self.logits())
        }
        fn next(&mut self, token: u32) -> Result<Vec<f32>> {
            self.calls.push(format!("next {token}"));
            self.last = token;
            Ok(self.logits())
        }
    }

    fn tok() -> Tokenizer {
        Tokenizer::fit_char(&["abc"]).unwrap() // a=4 b=5 c=6, vocabulary 7
    }

    fn opts(max: i64, temperature: f64) -> GenerateOptions {
        GenerateOptions::new(max, temperature, None, 0).unwrap()
    }

    #[test]
    fn greedy_runs_until_eos_with_one_start_and_then_single_tokens() {
        let mut step = Cycle {
            v: 7,
            last: 0,
            calls: vec![],
        };
        let mut seen = vec![];
        let text = generate(&mut step, &tok(), "ab", opts(10, 0.0), |t| {
            seen.push(t.clone());
            Ok(())
        })
        .unwrap();
        // after b comes c, then 7 % 7 = pad (banned, so the next best: id 1 unk banned, 2 bos banned → eos 3)
        assert_eq!(text, "abc");
        assert_eq!(
            seen,
            vec![Token {
                id: 6,
                text: "c".into()
            }]
        );
        assert_eq!(step.calls, vec!["start [2, 4, 5]", "next 6"]);
    }

    #[test]
    fn max_new_tokens_bounds_the_text_and_zero_returns_the_prompt() {
        let mut step = Cycle {
            v: 7,
            last: 0,
            calls: vec![],
        };
        assert_eq!(
            generate(&mut step, &tok(), "a", opts(2, 0.0), |_| Ok(())).unwrap(),
            "abc"
        );
        assert_eq!(
            generate(&mut step, &tok(), "zz", opts(0, 0.0), |_| Ok(())).unwrap(),
            "zz"
        );
        assert!(GenerateOptions::new(-1, 1.0, None, 0).is_err());
        assert!(GenerateOptions::new(MAX_NEW_TOKENS as i64 + 1, 1.0, None, 0).is_err());
        for t in [-0.5, f64::NAN, f64::INFINITY] {
            let e = GenerateOptions::new(5, t, None, 0).unwrap_err().to_string();
            assert!(e.contains("temperature"), "{e}");
        }
        assert!(GenerateOptions::new(5, 1.0, Some(0), 0).is_err());
    }

    #[test]
    fn a_tokenizer_that_does_not_fit_the_model_is_an_error() {
        let mut step = Cycle {
            v: 9,
            last: 0,
            calls: vec![],
        };
        let e = generate(&mut step, &tok(), "a", opts(3, 1.0), |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("9 logits") && e.contains("7 ids"), "{e}");
    }

    #[test]
    fn sampled_text_is_fixed_by_the_seed() {
        struct Flat(usize);
        impl Step for Flat {
            fn start(&mut self, _: &[u32]) -> Result<Vec<f32>> {
                Ok(vec![0.0; self.0])
            }
            fn next(&mut self, _: u32) -> Result<Vec<f32>> {
                Ok(vec![0.0; self.0])
            }
        }
        let tok = Tokenizer::fit_char(&["abcdefghijklmnopqrstuvwxyz"]).unwrap();
        let run = |seed| {
            let o = GenerateOptions::new(40, 1.0, Some(20), seed).unwrap();
            generate(Flat(30), &tok, "", o, |_| Ok(())).unwrap()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn bpe_pieces_wait_for_whole_characters_and_add_up_to_the_decoded_text() {
        // a model that spells out "é😀" byte by byte, then a lone continuation byte, then stops
        let tok = Tokenizer::fit_bpe(&["x"], 260).unwrap();
        let bytes: Vec<u32> = "é😀"
            .bytes()
            .chain([0x80, 0xF0])
            .map(|b| 4 + b as u32)
            .collect();
        struct Script(Vec<u32>, usize);
        impl Step for Script {
            fn start(&mut self, _: &[u32]) -> Result<Vec<f32>> {
                self.next(0)
            }
            fn next(&mut self, _: u32) -> Result<Vec<f32>> {
                let mut l = vec![0.0; 260];
                l[self.0.get(self.1).copied().unwrap_or(EOS) as usize] = 50.0;
                self.1 += 1;
                Ok(l)
            }
        }
        let mut pieces = vec![];
        let text = generate(Script(bytes.clone(), 0), &tok, "", opts(20, 0.0), |t| {
            pieces.push(t.text.clone());
            Ok(())
        })
        .unwrap();
        let ids: Vec<i64> = bytes.iter().map(|&v| v as i64).collect();
        assert_eq!(text, tok.decode(&ids).unwrap());
        assert_eq!(text, "é😀\u{FFFD}\u{FFFD}");
        assert_eq!(
            pieces,
            ["", "é", "", "", "", "😀", "\u{FFFD}", "", "\u{FFFD}"]
        );
    }

    #[test]
    fn an_error_from_on_token_stops_the_loop() {
        let mut step = Cycle {
            v: 7,
            last: 3,
            calls: vec![],
        };
        let e = generate(&mut step, &tok(), "a", opts(5, 0.0), |_| {
            Err(KilnError::value("stop"))
        });
        assert_eq!(e.unwrap_err().to_string(), "stop");
        assert_eq!(step.calls.len(), 1);
    }
}
