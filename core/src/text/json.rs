//! The tokenizer's JSON, read by hand through `serde_json::Value` (derived deserializers would
//! grow the browser's small module for two small documents; see graph/op_json.rs).
//!
//! ```json
//! {"format": "kiln.tokenizer", "version": 1, "type": "char",
//!  "special": ["<pad>", "<unk>", "<bos>", "<eos>"], "chars": ["A", "a", "d"]}
//! {"format": "kiln.tokenizer", "version": 1, "type": "bpe",
//!  "special": ["<pad>", "<unk>", "<bos>", "<eos>"], "merges": [[101, 108], [260, 108]]}
//! ```
//! `chars[i]` has id `4 + i`; merge `i` joins two earlier ids into id `260 + i`.

use serde_json::{json, Map, Value};

use super::{BpeTokenizer, CharTokenizer, Tokenizer, SPECIALS};
use crate::{value_err, KilnError, Result};

const FORMAT: &str = "kiln.tokenizer";
const VERSION: u64 = 1;

pub(super) fn write(tok: &Tokenizer) -> String {
    let (kind, body) = match tok {
        Tokenizer::Char(t) => (
            "chars",
            Value::from(t.chars().iter().map(|c| c.to_string()).collect::<Vec<_>>()),
        ),
        Tokenizer::Bpe(t) => (
            "merges",
            Value::from(
                t.merges()
                    .iter()
                    .map(|&(a, b)| json!([a, b]))
                    .collect::<Vec<_>>(),
            ),
        ),
    };
    let mut m = Map::new();
    m.insert("format".into(), FORMAT.into());
    m.insert("version".into(), VERSION.into());
    m.insert("type".into(), tok.kind().into());
    m.insert("special".into(), Value::from(SPECIALS.to_vec()));
    m.insert(kind.into(), body);
    Value::Object(m).to_string()
}

fn bad(what: impl std::fmt::Display) -> KilnError {
    KilnError::value(format!("tokenizer JSON: {what}"))
}

pub(super) fn read(text: &str) -> Result<Tokenizer> {
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format_args!("not JSON ({e})")))?;
    let Some(m) = v.as_object() else {
        return Err(bad("not an object"));
    };
    if m.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(bad(format_args!("\"format\" is not {FORMAT:?}")));
    }
    match m.get("version").and_then(Value::as_u64) {
        Some(VERSION) => {}
        other => value_err!(
            "tokenizer JSON: version {} (this kiln reads version {VERSION})",
            other.map_or("missing".into(), |v| v.to_string())
        ),
    }
    let special: Option<Vec<&str>> = m
        .get("special")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_str).collect());
    if special.as_deref() != Some(&SPECIALS[..]) {
        return Err(bad(format_args!("\"special\" must be {SPECIALS:?}")));
    }
    let kind = m.get("type").and_then(Value::as_str);
    let body = match kind {
        Some("char") => "chars",
        Some("bpe") => "merges",
        _ => return Err(bad("\"type\" must be \"char\" or \"bpe\"")),
    };
    if let Some(k) = m
        .keys()
        .find(|k| !["format", "version", "type", "special", body].contains(&k.as_str()))
    {
        return Err(bad(format_args!("unknown field {k:?}")));
    }
    let Some(list) = m.get(body).and_then(Value::as_array) else {
        return Err(bad(format_args!("\"{body}\" must be a list")));
    };
    if body == "chars" {
        let mut chars = Vec::with_capacity(list.len());
        for (i, c) in list.iter().enumerate() {
            let mut it = c.as_str().unwrap_or_default().chars();
            match (it.next(), it.next()) {
                (Some(ch), None) => chars.push(ch),
                _ => {
                    return Err(bad(format_args!(
                        "chars[{i}] is not a one-character string"
                    )))
                }
            }
        }
        return Ok(Tokenizer::Char(CharTokenizer::from_chars(chars)?));
    }
    let mut merges = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let ids: Option<Vec<u32>> = p.as_array().filter(|a| a.len() == 2).and_then(|a| {
            a.iter()
                .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect()
        });
        match ids.as_deref() {
            Some(&[a, b]) => merges.push((a, b)),
            _ => return Err(bad(format_args!("merges[{i}] is not a pair of ids"))),
        }
    }
    Ok(Tokenizer::Bpe(BpeTokenizer::from_merges(merges)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *seed >> 33
    }

    fn corpus() -> Vec<String> {
        [
            "Zoë",
            "Åsa",
            "Maria",
            "Marianne",
            "Anna",
            "Hannah",
            "李娜",
            "O'Neil",
            "Ana María",
        ]
        .iter()
        .cycle()
        .take(60)
        .enumerate()
        .map(|(i, s)| format!("{s}{}", i % 3))
        .collect()
    }

    #[test]
    fn both_tokenizers_round_trip_through_json() {
        for tok in [
            Tokenizer::fit_char(&corpus()).unwrap(),
            Tokenizer::fit_bpe(&corpus(), 300).unwrap(),
        ] {
            let text = tok.to_json();
            let back = Tokenizer::from_json(&text).unwrap();
            assert_eq!(back, tok);
            assert_eq!(back.to_json(), text);
            assert_eq!(back.encode("Marianne Zoë?"), tok.encode("Marianne Zoë?"));
        }
    }

    #[test]
    fn bad_documents_say_what_is_wrong() {
        let cases = [
            ("[1]", "not an object"),
            ("{", "not JSON"),
            (r#"{"format":"x"}"#, "format"),
            (r#"{"format":"kiln.tokenizer","version":2}"#, "version 2"),
            (
                r#"{"format":"kiln.tokenizer","version":1,"special":[]}"#,
                "special",
            ),
            (
                r#"{"format":"kiln.tokenizer","version":1,"special":["<pad>","<unk>","<bos>","<eos>"],"type":"wordpiece"}"#,
                "type",
            ),
            (
                r#"{"format":"kiln.tokenizer","version":1,"special":["<pad>","<unk>","<bos>","<eos>"],"type":"char","chars":["ab"]}"#,
                "chars[0]",
            ),
            (
                r#"{"format":"kiln.tokenizer","version":1,"special":["<pad>","<unk>","<bos>","<eos>"],"type":"char","chars":["a","a"]}"#,
                "twice",
            ),
            (
                r#"{"format":"kiln.tokenizer","version":1,"special":["<pad>","<unk>","<bos>","<eos>"],"type":"char","chars":[],"merges":[]}"#,
                "unknown field",
            ),
            (
                r#"{"format":"kiln.tokenizer","version":1,"special":["<pad>","<unk>","<bos>","<eos>"],"type":"bpe","merges":[[4,300]]}"#,
                "not made yet",
            ),
            (
                r#"{"format":"kiln.tokenizer","version":1,"special":["<pad>","<unk>","<bos>","<eos>"],"type":"bpe","merges":[[4,-1]]}"#,
                "merges[0]",
            ),
        ];
        for (text, want) in cases {
            let e = Tokenizer::from_json(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn mutated_documents_give_errors_or_working_tokenizers_never_panics() {
        let mut seed = 5;
        let docs = [
            Tokenizer::fit_char(&corpus()).unwrap().to_json(),
            Tokenizer::fit_bpe(&corpus(), 290).unwrap().to_json(),
        ];
        let (mut ok, mut refused) = (0, 0);
        for trial in 0..4000 {
            let mut b = docs[trial % 2].clone().into_bytes();
            let i = lcg(&mut seed) as usize % b.len();
            match trial % 4 {
                0 => b[i] ^= 1 << (lcg(&mut seed) % 8),
                1 => b.truncate(i),
                2 => b[i] = b"0123456789[]{},\":-ae\\"[lcg(&mut seed) as usize % 21],
                _ => {
                    let j = lcg(&mut seed) as usize % b.len();
                    b.swap(i, j)
                }
            }
            let Ok(text) = String::from_utf8(b) else {
                continue;
            };
            match Tokenizer::from_json(&text) {
                Ok(tok) => {
                    ok += 1;
                    // whatever loads must work on any input
                    let ids: Vec<i64> = tok
                        .encode("Zoë María 😀 x")
                        .iter()
                        .map(|&v| v as i64)
                        .collect();
                    assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
                    tok.decode(&ids).unwrap();
                    let all: Vec<i64> = (0..tok.vocab_size() as i64).collect();
                    tok.decode(&all).unwrap();
                }
                Err(_) => refused += 1,
            }
        }
        assert!(
            refused > 2000,
            "only {refused} mutations refused ({ok} loaded)"
        );
    }
}
