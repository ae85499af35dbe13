//! ONNX in one place: the protobuf types ([`pb`]), export of kiln's models ([`export`]), kiln's own
//! engine ([`engine`]: the graph's operators on kiln-core's ops), tract's engine for the files
//! kiln's engine declines ([`tract`], feature `onnx`), the choice between the two
//! ([`session::InferenceSession`]: kiln's engine first, as in the browser), the input checks both
//! engines make, and quantization's graph rewriting ([`quantize`]).

pub mod compat;
pub mod engine;
pub mod export;
pub(crate) mod feeds;
pub mod pb;
pub mod quantize;
#[cfg(feature = "onnx")]
pub mod session;
#[cfg(feature = "onnx")]
pub mod tract;
