//! Reading tagged JSON objects by hand: `{"dim": -1}`-style arguments with defaults and no unknown
//! names. serde's derived `Deserialize` for an enum of structs is a visitor per variant and field
//! set, and an internally tagged one (`{"type": "Adam", ...}`) buffers through serde's `Content`
//! besides: together a visible share of the browser's small module. The graph's ops and the
//! optimizer and schedule specs are read through these instead; their `Serialize` stays derived.

use serde_json::{Map, Value};

/// An op's arguments: `{"dim": -1}`, with defaults for the optional ones and no unknown names.
pub(crate) struct Args<'a> {
    pub(crate) op: &'a str,
    pub(crate) map: Option<&'a Map<String, Value>>,
}

impl Args<'_> {
    pub(crate) fn value(&self, key: &str) -> Result<&Value, String> {
        self.map
            .and_then(|m| m.get(key))
            .ok_or_else(|| format!("{}: missing argument `{key}`", self.op))
    }

    pub(crate) fn bad(&self, key: &str, want: &str) -> String {
        format!("{}: argument `{key}` must be {want}", self.op)
    }

    pub(crate) fn get<T: FromJson>(&self, key: &str) -> Result<T, String> {
        T::from_json(self.value(key)?).ok_or_else(|| self.bad(key, T::WHAT))
    }

    pub(crate) fn or<T: FromJson>(&self, key: &str, default: T) -> Result<T, String> {
        match self.map.and_then(|m| m.get(key)) {
            Some(_) => self.get(key),
            None => Ok(default),
        }
    }
    /// Refuse argument names the op does not have (a typo must not be silently defaulted).
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), String> {
        if let Some(k) = self
            .map
            .and_then(|m| m.keys().find(|k| !known.contains(&k.as_str())))
        {
            return Err(format!(
                "{}: unknown argument `{k}` (it takes {known:?})",
                self.op
            ));
        }
        Ok(())
    }
}

/// The argument types ops take, read straight from JSON values (no per-type serde visitors: the
/// point of this file is the browser module's size).
pub(crate) trait FromJson: Sized {
    const WHAT: &'static str;
    fn from_json(v: &Value) -> Option<Self>;
}

impl FromJson for String {
    const WHAT: &'static str = "a string";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_str().map(str::to_string)
    }
}
impl FromJson for f32 {
    const WHAT: &'static str = "a number";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_f64().map(|f| f as f32)
    }
}
impl FromJson for bool {
    const WHAT: &'static str = "true or false";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_bool()
    }
}
impl FromJson for isize {
    const WHAT: &'static str = "an integer";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_i64().and_then(|i| isize::try_from(i).ok())
    }
}
impl FromJson for usize {
    const WHAT: &'static str = "a non-negative integer";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_u64().and_then(|i| usize::try_from(i).ok())
    }
}
impl<T: FromJson> FromJson for Vec<T> {
    const WHAT: &'static str = "a list";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_array()?.iter().map(T::from_json).collect()
    }
}
impl FromJson for [f32; 2] {
    const WHAT: &'static str = "a pair of numbers";
    fn from_json(v: &Value) -> Option<Self> {
        match v.as_array()?.as_slice() {
            [a, b] => Some([f32::from_json(a)?, f32::from_json(b)?]),
            _ => None,
        }
    }
}
impl FromJson for [usize; 2] {
    const WHAT: &'static str = "a pair of non-negative integers";
    fn from_json(v: &Value) -> Option<Self> {
        match v.as_array()?.as_slice() {
            [a, b] => Some([usize::from_json(a)?, usize::from_json(b)?]),
            _ => None,
        }
    }
}

/// An internally tagged object (`{"type": "Adam", "lr": 0.01}`): its tag and its arguments
/// (the tag itself included among the known names by [`Args::only`]'s caller).
pub(crate) fn tagged<'a>(
    v: &'a Value,
    tag: &str,
    what: &str,
) -> Result<(&'a str, Args<'a>), String> {
    let map = v
        .as_object()
        .ok_or_else(|| format!("{what}: expected an object with a {tag:?}"))?;
    let name = map
        .get(tag)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}: missing field `{tag}`"))?;
    Ok((
        name,
        Args {
            op: name,
            map: Some(map),
        },
    ))
}
