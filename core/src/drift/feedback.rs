//! The feedback file (`.kiln-data`): examples a user labelled where the model runs (the page's
//! "teach it"), with the version of the model they were collected against, for retraining in
//! Python. A safetensors file: `inputs` (f32, `[n, ...]`), `labels` (i64, `[n]`), and
//! `format = "kiln-feedback"`, `kiln.model_version`, `kiln.version` in its metadata.

use std::collections::HashMap;

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::model::VERSION;
use crate::{shape_err, value_err, KilnError, Result};

const FORMAT: &str = "kiln-feedback";

/// Labelled examples collected against one model.
#[derive(Clone, Debug, PartialEq)]
pub struct Feedback {
    /// Input values, `shape` row-major.
    pub inputs: Vec<f32>,
    /// `[n, ...one example's shape]`.
    pub shape: Vec<usize>,
    /// One class index per example.
    pub labels: Vec<i64>,
    /// [`model_version`] of the model the examples were collected against.
    pub model_version: String,
}

/// A short fingerprint of a model's bytes (64-bit FNV-1a, hex): what feedback records so a
/// notebook can tell which model the page was running.
pub fn model_version(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Feedback {
    /// Checks the parts: shapes that agree, finite inputs, labels 0 or more.
    pub fn new(
        inputs: Vec<f32>,
        shape: Vec<usize>,
        labels: Vec<i64>,
        model_version: String,
    ) -> Result<Feedback> {
        let n = shape.first().copied().unwrap_or(0);
        if shape.len() < 2
            || shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(inputs.len())
        {
            shape_err!(
                "feedback: inputs of shape {shape:?} (examples first) need as many values as the shape says; got {}",
                inputs.len()
            );
        }
        if labels.len() != n {
            shape_err!("feedback: {n} examples but {} labels", labels.len());
        }
        if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
            value_err!(
                "feedback: example {} has a non-finite value",
                i / (inputs.len() / n)
            );
        }
        if let Some(i) = labels.iter().position(|&l| l < 0) {
            value_err!(
                "feedback: label {i} is {}; labels are class indices, 0 or more",
                labels[i]
            );
        }
        if model_version.len() > 256 {
            value_err!(
                "feedback: a model version of {} bytes is too long",
                model_version.len()
            );
        }
        Ok(Feedback {
            inputs,
            shape,
            labels,
            model_version,
        })
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let x: Vec<u8> = self.inputs.iter().flat_map(|v| v.to_le_bytes()).collect();
        let y: Vec<u8> = self.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let err = |e: safetensors::SafeTensorError| KilnError::value(format!("feedback: {e}"));
        let views = vec![
            (
                "inputs".to_string(),
                TensorView::new(Dtype::F32, self.shape.clone(), &x).map_err(err)?,
            ),
            (
                "labels".to_string(),
                TensorView::new(Dtype::I64, vec![self.labels.len()], &y).map_err(err)?,
            ),
        ];
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("kiln.version".to_string(), VERSION.to_string()),
            ("kiln.model_version".to_string(), self.model_version.clone()),
        ]);
        safetensors::serialize(views, Some(meta)).map_err(err)
    }

    /// Reads a feedback file; anything else (another safetensors file, damaged bytes) is an
    /// error that says so, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Feedback> {
        let bad =
            |why: String| KilnError::value(format!("feedback: not a kiln feedback file ({why})"));
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let info = meta.metadata().clone().unwrap_or_default();
        if info.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad("its metadata has no format = \"kiln-feedback\"".into()));
        }
        let tensor = |name: &str, dtype: Dtype| {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("no {name:?} tensor")))?;
            if t.dtype() != dtype {
                return Err(bad(format!(
                    "{name:?} is {:?}, expected {dtype:?}",
                    t.dtype()
                )));
            }
            Ok(t)
        };
        let x = tensor("inputs", Dtype::F32)?;
        let y = tensor("labels", Dtype::I64)?;
        if y.shape().len() != 1 {
            return Err(bad(format!("labels of shape {:?}", y.shape())));
        }
        let inputs = x
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let labels = y
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let version = info.get("kiln.model_version").cloned().unwrap_or_default();
        Feedback::new(inputs, x.shape().to_vec(), labels, version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Feedback {
        let x: Vec<f32> = (0..3 * 4).map(|i| i as f32 / 7.0).collect();
        Feedback::new(x, vec![3, 1, 2, 2], vec![4, 0, 9], model_version(b"model")).unwrap()
    }

    #[test]
    fn round_trips_with_its_model_version() {
        let f = sample();
        let back = Feedback::from_bytes(&f.to_bytes().unwrap()).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.model_version.len(), 16);
        assert_ne!(model_version(b"model"), model_version(b"modem"));
    }

    #[test]
    fn inconsistent_parts_are_refused() {
        let e = Feedback::new(vec![0.0; 4], vec![2, 2], vec![1], String::new()).unwrap_err();
        assert!(e.to_string().contains("2 examples but 1 labels"), "{e}");
        let e =
            Feedback::new(vec![f32::NAN; 4], vec![2, 2], vec![1, 1], String::new()).unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
        let e = Feedback::new(vec![0.0; 4], vec![2, 2], vec![1, -1], String::new()).unwrap_err();
        assert!(e.to_string().contains("label 1 is -1"), "{e}");
        let e = Feedback::from_bytes(b"not safetensors").unwrap_err();
        assert!(e.to_string().contains("not a kiln feedback file"), "{e}");
    }

    #[test]
    fn mutated_files_give_errors_never_panics() {
        let bytes = sample().to_bytes().unwrap();
        let mut seed = 3u64;
        let mut refused = 0;
        for trial in 0..4000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let at = (seed >> 33) as usize % bytes.len();
            let mut b = bytes.clone();
            if trial % 2 == 0 {
                b[at] = (seed >> 20) as u8;
            } else {
                b.truncate(at);
            }
            if Feedback::from_bytes(&b).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 2000, "{refused}");
    }
}
