//! Which kiln wrote a model, and what to say when a model from a newer kiln fails here: the one rule
//! both `kiln.InferenceSession` and kiln-wasm's `loadModel` use, so an old runtime asks to be updated
//! instead of failing with only an operator's name.

use prost::Message;

use super::pb::ModelProto;
use crate::model::VERSION;
use crate::KilnError;

/// The `kiln.version` an export recorded in the model's metadata, if the bytes are a model that has one.
pub fn exported_by(bytes: &[u8]) -> Option<String> {
    let model = ModelProto::decode(bytes).ok()?;
    model
        .metadata_props
        .into_iter()
        .find(|p| p.key == "kiln.version")
        .map(|p| p.value)
}

fn numbers(version: &str) -> Option<Vec<u64>> {
    let core = version.split(['-', '+']).next()?;
    core.split('.').map(|n| n.parse().ok()).collect()
}

/// Whether `version` is newer than this kiln (numeric `major.minor.patch`; unreadable versions are not).
pub fn is_newer(version: &str) -> bool {
    match (numbers(version), numbers(VERSION)) {
        (Some(theirs), Some(ours)) => theirs > ours,
        _ => false,
    }
}

/// For a model that failed to load: "exported by kiln X, newer than this kiln (Y): update …", when the
/// model's metadata says a newer kiln wrote it; `None` otherwise. `{version}` in `update` (how to
/// update this runtime) becomes the model's kiln version.
pub fn newer_hint(bytes: &[u8], runtime: &str, update: &str) -> Option<String> {
    let theirs = exported_by(bytes)?;
    is_newer(&theirs).then(|| {
        format!(
            "the model was exported by kiln {theirs}, newer than this {runtime} ({VERSION}), which may lack what \
             it uses: update it ({})",
            update.replace("{version}", &theirs)
        )
    })
}

/// `e` with [`newer_hint`] appended when a newer kiln wrote the model (an ONNX error only: a missing
/// file stays a missing file).
pub fn with_newer_hint(e: KilnError, bytes: &[u8], runtime: &str, update: &str) -> KilnError {
    match (e, newer_hint(bytes, runtime, update)) {
        (KilnError::Onnx(m), Some(hint)) => KilnError::Onnx(format!("{m}; {hint}")),
        (e, _) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::pb::StringStringEntryProto;

    fn model_from(version: &str) -> Vec<u8> {
        ModelProto {
            metadata_props: vec![StringStringEntryProto {
                key: "kiln.version".into(),
                value: version.into(),
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn only_a_newer_kiln_gets_the_update_hint() {
        assert!(
            is_newer("99.0.0") && is_newer("0.1.10") == (numbers(VERSION) < Some(vec![0, 1, 10]))
        );
        assert!(!is_newer(VERSION) && !is_newer("0.0.1") && !is_newer("not a version"));
        let hint = newer_hint(
            &model_from("99.1.0"),
            "kiln-wasm",
            "npm install kiln-wasm@{version}",
        )
        .unwrap();
        assert!(
            hint.contains("kiln 99.1.0")
                && hint.contains(VERSION)
                && hint.contains("npm install kiln-wasm@99.1.0"),
            "{hint}"
        );
        assert_eq!(newer_hint(&model_from(VERSION), "kiln", "pip"), None);
        assert_eq!(newer_hint(b"not onnx", "kiln", "pip"), None);
        assert_eq!(exported_by(&model_from("1.2.3")).as_deref(), Some("1.2.3"));
    }
}
