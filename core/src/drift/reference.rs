//! The training-time summary a model carries in its ONNX metadata (`kiln.drift`): a quantile
//! sketch per watched feature, and the distribution of the model's predicted classes and top-1
//! confidence on the same data. Compact binary, base64 in the metadata string.

use super::features::Features;
use crate::{value_err, KilnError, Result};

/// The metadata key export writes the summary under.
pub const METADATA_KEY: &str = "kiln.drift";
/// Bins per feature: cut points at the deciles (fewer where values repeat).
pub const BINS: usize = 10;
/// Bins per feature for inputs of more than [`WIDE`] features: quintiles, so a 784-value input's
/// summary stays well under the size of the smallest model that reads it.
pub const WIDE_BINS: usize = 5;
/// The number of features above which [`WIDE_BINS`] are used.
pub const WIDE: usize = 256;
/// The fewest examples a reference is built from.
pub const MIN_REFERENCE: usize = 10;
const MAGIC: &[u8; 3] = b"KD1";
/// Cut points are stored as 8-bit positions between a feature's minimum and maximum.
const CUT_STEPS: f64 = 255.0;
/// Cumulative proportions are stored with 16 bits.
const CDF_STEPS: f64 = 65535.0;

/// One feature's distribution: cut points and the reference's cumulative proportion at each,
/// `cdf[j] = P(x <= cuts[j])`. Bin `j` holds `cuts[j-1] < x <= cuts[j]`; the last bin is above
/// the last cut.
#[derive(Clone, Debug, PartialEq)]
pub struct Sketch {
    lo: f32,
    hi: f32,
    codes: Vec<u8>,
    cdf_codes: Vec<u16>,
    /// Cut points, decoded from the stored codes (what both sides compare against).
    pub cuts: Vec<f64>,
    /// Reference proportion in each of the `cuts.len() + 1` bins.
    pub proportions: Vec<f64>,
}

impl Sketch {
    fn from_parts(lo: f32, hi: f32, codes: Vec<u8>, cdf_codes: Vec<u16>) -> Result<Sketch> {
        if !lo.is_finite() || !hi.is_finite() || lo > hi {
            value_err!("drift reference: a feature's range [{lo}, {hi}] is not a range");
        }
        let constant = codes.is_empty();
        if codes.len() != cdf_codes.len()
            || codes.windows(2).any(|w| w[0] >= w[1])
            || cdf_codes.windows(2).any(|w| w[0] > w[1])
        {
            value_err!("drift reference: a feature's cut points are not increasing");
        }
        let cuts: Vec<f64> = if constant {
            vec![lo as f64]
        } else {
            codes
                .iter()
                .map(|&c| lo as f64 + (hi as f64 - lo as f64) * c as f64 / CUT_STEPS)
                .collect()
        };
        let cdf: Vec<f64> = if constant {
            vec![1.0]
        } else {
            cdf_codes.iter().map(|&c| c as f64 / CDF_STEPS).collect()
        };
        let mut proportions = Vec::with_capacity(cdf.len() + 1);
        let mut below = 0.0;
        for &f in &cdf {
            proportions.push(f - below);
            below = f;
        }
        proportions.push(1.0 - below);
        Ok(Sketch {
            lo,
            hi,
            codes,
            cdf_codes,
            cuts,
            proportions,
        })
    }

    /// The sketch of `values` (finite, at least one) with at most `bins` bins.
    pub fn build(values: &mut [f64], bins: usize) -> Sketch {
        values.sort_by(|a, b| a.total_cmp(b));
        let n = values.len();
        let (lo, hi) = (values[0] as f32, values[n - 1] as f32);
        if lo == hi {
            return Sketch::from_parts(lo, hi, Vec::new(), Vec::new()).expect("a constant");
        }
        let mut codes: Vec<u8> = (1..bins)
            .map(|j| {
                let q = values[(j * n).div_ceil(bins).clamp(1, n) - 1];
                let at = (q - lo as f64) / (hi as f64 - lo as f64) * CUT_STEPS;
                at.round().clamp(0.0, CUT_STEPS) as u8
            })
            .collect();
        codes.dedup();
        // the reference's own cumulative proportions at the decoded cut points
        let probe = Sketch::from_parts(lo, hi, codes.clone(), vec![0; codes.len()])
            .expect("increasing codes");
        let cdf_codes = probe
            .cuts
            .iter()
            .map(|&c| {
                let at_or_below = values.partition_point(|&v| v <= c);
                (at_or_below as f64 / n as f64 * CDF_STEPS).round() as u16
            })
            .collect();
        Sketch::from_parts(lo, hi, codes, cdf_codes).expect("a valid sketch")
    }

    /// The bin `value` falls in.
    pub fn bin(&self, value: f64) -> usize {
        self.cuts.partition_point(|&c| c < value)
    }

    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.cuts.len() + 1
    }

    fn write(&self, w: &mut Vec<u8>) {
        w.push(self.codes.len() as u8);
        w.extend(self.lo.to_le_bytes());
        if self.codes.is_empty() {
            return; // a constant: its value is all there is
        }
        w.extend(self.hi.to_le_bytes());
        w.extend(&self.codes);
        for c in &self.cdf_codes {
            w.extend(c.to_le_bytes());
        }
    }

    fn read(r: &mut Reader, bins: usize) -> Result<Sketch> {
        let k = r.u8()? as usize;
        if k >= bins {
            value_err!(
                "drift reference: a feature has {k} cut points (at most {})",
                bins - 1
            );
        }
        let lo = r.f32()?;
        let hi = if k == 0 { lo } else { r.f32()? };
        let codes = r.bytes(k)?.to_vec();
        let cdf = (0..k).map(|_| r.u16()).collect::<Result<Vec<_>>>()?;
        Sketch::from_parts(lo, hi, codes, cdf)
    }
}

/// What the summary knows about the model's outputs on the reference data.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputSummary {
    /// The outputs were not one vector per example: nothing is watched.
    None,
    /// Class scores (two or more per example).
    Classes {
        /// Share of the reference predicted as each class.
        proportions: Vec<f64>,
        /// Top-1 confidence (softmax of the scores unless they already are probabilities).
        confidence: Sketch,
        /// Mean top-1 confidence on the reference.
        confidence_mean: f64,
    },
    /// One value per example (a regression).
    Value(Sketch),
}

/// The predicted class and top-1 confidence of one row of class scores, or `None` if a score is
/// not finite. Scores that already are probabilities (in [0, 1], summing to 1) are not softmaxed.
pub fn top1(scores: &[f32]) -> Option<(usize, f64)> {
    if scores.iter().any(|v| !v.is_finite()) || scores.is_empty() {
        return None;
    }
    let (mut best, mut max) = (0, scores[0]);
    for (i, &v) in scores.iter().enumerate() {
        if v > max {
            (best, max) = (i, v);
        }
    }
    let sum: f64 = scores.iter().map(|&v| v as f64).sum();
    let probabilities =
        scores.iter().all(|&v| (0.0..=1.0).contains(&v)) && (sum - 1.0).abs() < 1e-3;
    let confidence = if probabilities {
        max as f64
    } else {
        1.0 / scores
            .iter()
            .map(|&v| (v as f64 - max as f64).exp())
            .sum::<f64>()
    };
    Some((best, confidence))
}

/// The summary of a model's training inputs and of its outputs on them.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    /// Shape of one input example (no batch axis).
    pub input_shape: Vec<usize>,
    /// How an example becomes features.
    pub features: Features,
    /// Examples the summary was built from.
    pub count: u32,
    /// Bins per feature ([`BINS`], or [`WIDE_BINS`] for wide inputs).
    pub bins: usize,
    /// One sketch per feature.
    pub sketches: Vec<Sketch>,
    /// The model's outputs on the reference.
    pub outputs: OutputSummary,
}

impl Reference {
    /// Summarises `inputs` (`count × input_shape`, row-major) and, when given, the model's
    /// `outputs` on them (`[count, classes]`; anything but one vector per example is not watched).
    pub fn build(
        input_shape: &[usize],
        inputs: &[f32],
        outputs: Option<(&[f32], &[usize])>,
    ) -> Result<Reference> {
        let features = Features::for_shape(input_shape)?;
        let per = features.input_len();
        if !inputs.len().is_multiple_of(per) {
            return Err(KilnError::shape(format!(
                "drift reference: {} values are not a whole number of examples of shape {input_shape:?}",
                inputs.len()
            )));
        }
        let n = inputs.len() / per;
        if n < MIN_REFERENCE {
            value_err!("drift reference: {n} examples are too few to describe the training data (at least {MIN_REFERENCE})");
        }
        if n > u32::MAX as usize {
            value_err!("drift reference: {n} examples are too many (at most 2^32 - 1)");
        }
        if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
            value_err!(
                "drift reference: example {} has a non-finite value ({}) at position {}",
                i / per,
                inputs[i],
                i % per
            );
        }
        let f = features.count();
        let mut columns = vec![Vec::with_capacity(n); f];
        let mut row = Vec::with_capacity(f);
        for x in inputs.chunks_exact(per) {
            row.clear();
            features.extract(x, &mut row);
            for (col, &v) in columns.iter_mut().zip(&row) {
                col.push(v);
            }
        }
        let bins = if f > WIDE { WIDE_BINS } else { BINS };
        let sketches = columns.iter_mut().map(|c| Sketch::build(c, bins)).collect();
        let outputs = match outputs {
            None => OutputSummary::None,
            Some((data, shape)) => summarise_outputs(data, shape, n)?,
        };
        Ok(Reference {
            input_shape: input_shape.to_vec(),
            features,
            count: n as u32,
            bins,
            sketches,
            outputs,
        })
    }

    /// The summary as the base64 text export stores.
    pub fn encode(&self) -> String {
        let mut w = MAGIC.to_vec();
        w.push(self.input_shape.len() as u8);
        for &d in &self.input_shape {
            w.extend((d as u32).to_le_bytes());
        }
        w.extend(self.count.to_le_bytes());
        w.push(self.bins as u8);
        for s in &self.sketches {
            s.write(&mut w);
        }
        match &self.outputs {
            OutputSummary::None => w.push(0),
            OutputSummary::Classes {
                proportions,
                confidence,
                confidence_mean,
            } => {
                w.push(1);
                w.extend((proportions.len() as u16).to_le_bytes());
                for &p in proportions {
                    w.extend(((p * CDF_STEPS).round() as u16).to_le_bytes());
                }
                w.extend((*confidence_mean as f32).to_le_bytes());
                confidence.write(&mut w);
            }
            OutputSummary::Value(s) => {
                w.push(2);
                s.write(&mut w);
            }
        }
        super::base64::encode(&w)
    }

    /// Reads what [`encode`](Self::encode) wrote; any other text is an error, never a panic.
    pub fn decode(text: &str) -> Result<Reference> {
        let bytes = super::base64::decode(text.trim())?;
        let mut r = Reader { bytes: &bytes };
        if r.bytes(3)? != MAGIC {
            value_err!(
                "drift reference: the kiln.drift metadata is not a drift summary this kiln reads"
            );
        }
        let rank = r.u8()? as usize;
        let input_shape = (0..rank)
            .map(|_| r.u32().map(|d| d as usize))
            .collect::<Result<Vec<_>>>()?;
        let features = Features::for_shape(&input_shape)?;
        let count = r.u32()?;
        if (count as usize) < MIN_REFERENCE {
            value_err!("drift reference: built from {count} examples (at least {MIN_REFERENCE})");
        }
        let bins = r.u8()? as usize;
        if !(2..=BINS).contains(&bins) {
            value_err!("drift reference: {bins} bins per feature (2 to {BINS})");
        }
        let f = features.count();
        if f > r.bytes.len() / 5 {
            value_err!("drift reference: too short for {f} features");
        }
        let sketches = (0..f)
            .map(|_| Sketch::read(&mut r, bins))
            .collect::<Result<Vec<_>>>()?;
        let outputs = match r.u8()? {
            0 => OutputSummary::None,
            1 => {
                let c = r.u16()? as usize;
                if c < 2 {
                    value_err!("drift reference: {c} classes");
                }
                let proportions = (0..c)
                    .map(|_| r.u16().map(|p| p as f64 / CDF_STEPS))
                    .collect::<Result<Vec<_>>>()?;
                let confidence_mean = r.f32()? as f64;
                if !(0.0..=1.0).contains(&confidence_mean) {
                    value_err!(
                        "drift reference: mean confidence {confidence_mean} is not a probability"
                    );
                }
                OutputSummary::Classes {
                    proportions,
                    confidence: Sketch::read(&mut r, BINS)?,
                    confidence_mean,
                }
            }
            2 => OutputSummary::Value(Sketch::read(&mut r, BINS)?),
            k => value_err!("drift reference: unknown output summary kind {k}"),
        };
        if !r.bytes.is_empty() {
            value_err!(
                "drift reference: {} unexpected bytes after the summary",
                r.bytes.len()
            );
        }
        Ok(Reference {
            input_shape,
            features,
            count,
            bins,
            sketches,
            outputs,
        })
    }

    /// The summary stored in an ONNX model's metadata, or an error that says how to add one.
    #[cfg(feature = "export")]
    pub fn from_onnx(bytes: &[u8]) -> Result<Reference> {
        use prost::Message;
        let model = crate::onnx::pb::ModelProto::decode(bytes)
            .map_err(|e| KilnError::onnx(format!("drift: not an ONNX model ({e})")))?;
        let entry = model.metadata_props.iter().find(|e| e.key == METADATA_KEY);
        match entry {
            Some(e) => Reference::decode(&e.value),
            None => Err(missing()),
        }
    }
}

/// The error for a model exported without a reference.
pub fn missing() -> KilnError {
    KilnError::value(format!(
        "drift: this model carries no training statistics (no {METADATA_KEY:?} metadata); \
         export it with export_onnx(..., reference=X_train) to monitor it"
    ))
}

fn summarise_outputs(data: &[f32], shape: &[usize], n: usize) -> Result<OutputSummary> {
    if shape.first() != Some(&n) || shape.iter().product::<usize>() != data.len() {
        return Err(KilnError::shape(format!(
            "drift reference: outputs of shape {shape:?} ({} values) do not go with {n} examples",
            data.len()
        )));
    }
    if shape.len() != 2 || shape[1] == 0 || shape[1] > u16::MAX as usize {
        return Ok(OutputSummary::None);
    }
    let c = shape[1];
    if c == 1 {
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            value_err!("drift reference: the model's output for example {i} is not finite");
        }
        let mut values: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        return Ok(OutputSummary::Value(Sketch::build(&mut values, BINS)));
    }
    let mut counts = vec![0u64; c];
    let mut conf = Vec::with_capacity(n);
    for (i, row) in data.chunks_exact(c).enumerate() {
        let Some((class, p)) = top1(row) else {
            value_err!("drift reference: the model's output for example {i} is not finite");
        };
        counts[class] += 1;
        conf.push(p);
    }
    // kept as stored (16-bit proportions, f32 mean), so a built and a decoded summary agree
    let confidence_mean = (conf.iter().sum::<f64>() / n as f64) as f32 as f64;
    Ok(OutputSummary::Classes {
        proportions: counts
            .iter()
            .map(|&k| (k as f64 / n as f64 * CDF_STEPS).round() / CDF_STEPS)
            .collect(),
        confidence: Sketch::build(&mut conf, BINS),
        confidence_mean,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            value_err!("drift reference: the kiln.drift metadata is cut short");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.u32()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn a_sketch_keeps_atoms_and_deciles() {
        // half zeros, half spread over (0, 1]: the zeros stay one bin with half the mass
        let mut v: Vec<f64> = (0..1000)
            .map(|i| if i % 2 == 0 { 0.0 } else { i as f64 / 1000.0 })
            .collect();
        let s = Sketch::build(&mut v, BINS);
        assert_eq!(s.cuts[0], 0.0);
        assert!((s.proportions[0] - 0.5).abs() < 1e-4, "{:?}", s.proportions);
        assert!((s.proportions.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(s.cuts.len() < BINS && s.cuts.len() >= 5);
        assert_eq!(s.bin(-1.0), 0);
        assert_eq!(s.bin(2.0), s.bins() - 1);
    }

    #[test]
    fn the_summary_round_trips_through_its_text() {
        let mut seed = 7;
        let x: Vec<f32> = (0..50 * 64).map(|_| lcg(&mut seed) as f32).collect();
        let out: Vec<f32> = (0..50 * 10).map(|_| lcg(&mut seed) as f32 * 4.0).collect();
        let r = Reference::build(&[1, 8, 8], &x, Some((&out, &[50, 10]))).unwrap();
        assert_eq!(r.sketches.len(), 11);
        let back = Reference::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        let flat = Reference::build(&[64], &x, None).unwrap();
        assert_eq!(Reference::decode(&flat.encode()).unwrap(), flat);
    }

    #[test]
    fn bad_references_are_refused_with_reasons() {
        let x = vec![0.5f32; 5 * 4];
        let few = Reference::build(&[4], &x, None).unwrap_err().to_string();
        assert!(few.contains("too few"), "{few}");
        let mut y = vec![0.5f32; 20 * 4];
        y[9] = f32::NAN;
        let nan = Reference::build(&[4], &y, None).unwrap_err().to_string();
        assert!(
            nan.contains("example 2") && nan.contains("position 1"),
            "{nan}"
        );
        let odd = Reference::build(&[4], &y[..7], None)
            .unwrap_err()
            .to_string();
        assert!(odd.contains("whole number"), "{odd}");
        assert!(Reference::decode("not base64!").is_err());
        assert!(Reference::decode("").is_err());
    }

    #[test]
    fn mutated_summaries_give_errors_or_valid_references_never_panics() {
        let mut seed = 11;
        let x: Vec<f32> = (0..30 * 64).map(|_| lcg(&mut seed) as f32).collect();
        let out: Vec<f32> = (0..30 * 3).map(|_| lcg(&mut seed) as f32).collect();
        let text = Reference::build(&[1, 8, 8], &x, Some((&out, &[30, 3])))
            .unwrap()
            .encode();
        let bytes = super::super::base64::decode(&text).unwrap();
        let (mut ok, mut err) = (0, 0);
        for trial in 0..3000 {
            let mut b = bytes.clone();
            match trial % 3 {
                0 => {
                    let i = (lcg(&mut seed) * b.len() as f64) as usize;
                    b[i] ^= 1 << (trial % 8);
                }
                1 => b.truncate((lcg(&mut seed) * b.len() as f64) as usize),
                _ => {
                    let i = (lcg(&mut seed) * b.len() as f64) as usize;
                    b[i] = (lcg(&mut seed) * 256.0) as u8;
                }
            }
            match Reference::decode(&super::super::base64::encode(&b)) {
                Ok(r) => {
                    ok += 1;
                    // whatever decodes must be usable
                    let mut m = super::super::DriftMonitor::new(r, 8).unwrap();
                    let _ = m.observe_batch(&x[..64 * 2], &[2, 1, 8, 8], None);
                    let _ = m.report();
                }
                Err(_) => err += 1,
            }
        }
        assert!(
            err > 1000,
            "only {err} of 3000 mutations refused ({ok} accepted)"
        );
    }
}

#[cfg(all(test, feature = "export"))]
mod onnx_tests {
    use super::*;
    use crate::onnx::pb::{ModelProto, StringStringEntryProto};
    use prost::Message;

    #[test]
    fn the_summary_is_read_from_onnx_metadata_and_its_absence_is_explained() {
        let x: Vec<f32> = (0..40 * 3).map(|i| (i % 7) as f32).collect();
        let r = Reference::build(&[3], &x, None).unwrap();
        let mut model = ModelProto::default();
        let e = Reference::from_onnx(&model.encode_to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("reference=X_train"), "{e}");
        model.metadata_props.push(StringStringEntryProto {
            key: METADATA_KEY.into(),
            value: r.encode(),
        });
        assert_eq!(Reference::from_onnx(&model.encode_to_vec()).unwrap(), r);
        assert!(Reference::from_onnx(b"\xff\xff not onnx").is_err());
    }
}
