//! The last line of defence. Every expected failure is a `Result` that becomes a JS `Error`; a
//! panic means a bug (here or in tract). On wasm32 a panic aborts the instance with an
//! "unreachable executed" trap, so the hook keeps the message for `index.js`, which turns the
//! trap into an `Error` naming the panic and starts a fresh instance.

use std::sync::{Mutex, Once};

use wasm_bindgen::prelude::*;

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs the hook once per instance; called by the start function.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if let Ok(mut last) = LAST_PANIC.lock() {
                *last = Some(info.to_string());
            }
            // The full message and a JS stack trace, in the console, for bug reports.
            console_error_panic_hook::hook(info);
        }));
    });
}

/// The message of the panic that aborted the last call, if one did (read once, then cleared).
#[wasm_bindgen(js_name = takeLastPanic)]
pub fn take_last_panic() -> Option<String> {
    LAST_PANIC.lock().ok().and_then(|mut last| last.take())
}

/// Panics on purpose. Not part of the package's API (index.js does not expose it): the tests call
/// it to check that a panic becomes a readable `Error` and that a fresh instance takes over, which
/// no well-formed input may trigger any more.
#[wasm_bindgen(js_name = __kilnPanicForTests)]
pub fn panic_for_tests() {
    panic!("kiln-wasm: deliberate panic for the tests");
}
