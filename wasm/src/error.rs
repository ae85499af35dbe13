//! The one place where kiln-core's errors become JavaScript `Error`s.

use js_sys::Error;
use kiln_core::KilnError;

/// What every exported function returns: the value, or an `Error` JavaScript can catch.
pub type JsResult<T> = Result<T, Error>;

/// A core result as a JS result: the `Error`'s message is the core error's own message, which
/// already says what was wrong (the operator, the input, expected vs got), after the package
/// name that every message of index.js starts with too.
pub fn js<T>(result: kiln_core::Result<T>) -> JsResult<T> {
    result.map_err(|e: KilnError| Error::new(&format!("kiln-wasm: {e}")))
}
