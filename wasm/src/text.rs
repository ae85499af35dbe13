//! kiln_core::text for index.js: the tokenizer a model carries (`kiln.tokenizer`) and the core's
//! generation loop over a model on kiln's engine. No rule lives here: ids, specials, sampling and
//! every check are the core's, so the page gives Python's ids and Python's text.

use kiln_core::text::{GenerateOptions, Generation, Step, Tokenizer as Core};
use kiln_core::KilnError;
use wasm_bindgen::prelude::*;

use crate::error::{js, JsResult};

/// A character or byte-level BPE tokenizer.
#[wasm_bindgen]
pub struct Tokenizer {
    pub(crate) inner: Core,
}

/// `v` as a whole number, or an error naming `what` (JavaScript numbers are floats).
fn whole(what: &str, v: f64) -> kiln_core::Result<i64> {
    if v.is_finite() && v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_991.0 {
        Ok(v as i64)
    } else {
        Err(KilnError::value(format!(
            "{what} must be an integer, got {v}"
        )))
    }
}

#[wasm_bindgen]
impl Tokenizer {
    /// The tokenizer in a JSON document (the `kiln.tokenizer` metadata).
    #[wasm_bindgen(js_name = fromJson)]
    pub fn from_json(text: &str) -> JsResult<Tokenizer> {
        Ok(Tokenizer {
            inner: js(Core::from_json(text))?,
        })
    }

    /// `"char"` or `"bpe"`.
    pub fn kind(&self) -> String {
        self.inner.kind().into()
    }

    /// Ids, special tokens included.
    #[wasm_bindgen(js_name = vocabSize)]
    pub fn vocab_size(&self) -> u32 {
        self.inner.vocab_size() as u32
    }

    /// The ids of `text` as an Int32Array.
    #[wasm_bindgen(js_name = encodeI32)]
    pub fn encode_i32(&self, text: &str) -> Vec<i32> {
        self.inner
            .encode(text)
            .into_iter()
            .map(|v| v as i32)
            .collect()
    }

    /// The ids of `text` as a BigInt64Array.
    #[wasm_bindgen(js_name = encodeI64)]
    pub fn encode_i64(&self, text: &str) -> Vec<i64> {
        self.inner.encode(text).into_iter().map(i64::from).collect()
    }

    /// The text of ids given as a BigInt64Array.
    #[wasm_bindgen(js_name = decodeI64)]
    pub fn decode_i64(&self, ids: Vec<i64>) -> JsResult<String> {
        js(self.inner.decode(&ids))
    }

    /// The text of ids given as an Int32Array.
    #[wasm_bindgen(js_name = decodeI32)]
    pub fn decode_i32(&self, ids: Vec<i32>) -> JsResult<String> {
        let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
        js(self.inner.decode(&ids))
    }

    /// The text of ids given as numbers (a plain array).
    #[wasm_bindgen(js_name = decodeF64)]
    pub fn decode_f64(&self, ids: Vec<f64>) -> JsResult<String> {
        let ids = ids.into_iter().map(|v| whole("decode: a token id", v));
        js(ids
            .collect::<kiln_core::Result<Vec<i64>>>()
            .and_then(|ids| self.inner.decode(&ids)))
    }

    /// How one id reads (`"<eos>"` for the specials).
    pub fn token(&self, id: f64) -> JsResult<String> {
        js(whole("token: the id", id)
            .and_then(|id| self.inner.check_id(id))
            .and_then(|id| self.inner.token(id)))
    }
}

/// The options as JavaScript passes them, checked by the core.
pub(crate) fn options(
    max_new_tokens: f64,
    temperature: f64,
    top_k: Option<f64>,
    seed: f64,
) -> kiln_core::Result<GenerateOptions> {
    let seed = whole("generate: seed", seed)?;
    if seed < 0 {
        return Err(KilnError::value(format!(
            "generate: seed must be 0 or more, got {seed}"
        )));
    }
    let top_k = top_k.map(|k| whole("generate: topK", k)).transpose()?;
    GenerateOptions::new(
        whole("generate: maxNewTokens", max_new_tokens)?,
        temperature,
        top_k,
        seed as u64,
    )
}

/// Starts a generation of `step` with the tokenizer in `tokenizer` (its JSON document).
pub(crate) fn start(
    step: kiln_core::Result<Box<dyn Step>>,
    tokenizer: &str,
    prompt: &str,
    opts: kiln_core::Result<GenerateOptions>,
) -> JsResult<Generator> {
    let opts = js(opts)?;
    let tok = js(Core::from_json(tokenizer))?;
    Ok(Generator {
        inner: Generation::new(js(step)?, &tok, prompt, opts),
        last: 0,
    })
}

/// A generation in progress: `next()` until undefined.
#[wasm_bindgen]
pub struct Generator {
    pub(crate) inner: Generation<Box<dyn Step>>,
    pub(crate) last: u32,
}

#[wasm_bindgen]
impl Generator {
    /// The next token's text (empty while a character is incomplete), or undefined at the end.
    pub fn next(&mut self) -> JsResult<Option<String>> {
        Ok(js(self.inner.next_token())?.map(|t| {
            self.last = t.id;
            t.text
        }))
    }

    /// The id of the token `next` returned last.
    #[wasm_bindgen(js_name = lastId)]
    pub fn last_id(&self) -> u32 {
        self.last
    }

    /// The prompt and everything generated so far.
    pub fn text(&self) -> String {
        self.inner.text().to_string()
    }
}
