//! Images into a model's input tensor: the preprocessing an export declares (`kiln.preprocess` in the
//! ONNX metadata) and the one implementation of it, which Python (`kiln.Preprocess.apply`) and the
//! browser (`model.run(image)` in kiln-wasm) both call, so the same pixels give the same tensor.
//!
//! From RGBA bytes (what `ImageData` holds), in this order: bilinear resize to the model's height and
//! width (half-pixel centres, no antialiasing: torchvision's `antialias=False`), then the channels
//! (`"rgb"`, `"bgr"`, or `"gray"` = 0.299 R + 0.587 G + 0.114 B, ITU-R BT.601), then per value
//! `(v * scale + offset - mean[c]) / std[c]`, laid out `[1, C, H, W]`. Alpha is ignored.

use serde::{Deserialize, Serialize};

use crate::{value_err, KilnError, Result};

/// The metadata key an export writes the preprocessing under.
pub const METADATA_KEY: &str = "kiln.preprocess";

/// How an image becomes the model's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Multiplies each 0–255 value (default 1/255).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Added after scaling (default 0).
    #[serde(default)]
    pub offset: f32,
    /// Per channel, subtracted after scale and offset (empty: none).
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per channel, divides after the mean (empty: none).
    #[serde(default)]
    pub std: Vec<f32>,
    /// `"rgb"`, `"bgr"` or `"gray"`.
    #[serde(default = "default_channels")]
    pub channels: String,
}

fn default_scale() -> f32 {
    1.0 / 255.0
}

fn default_channels() -> String {
    "rgb".into()
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            scale: default_scale(),
            offset: 0.0,
            mean: Vec::new(),
            std: Vec::new(),
            channels: default_channels(),
        }
    }
}

impl Preprocess {
    /// Parse and check a spec (the metadata's JSON).
    pub fn from_json(json: &str) -> Result<Self> {
        let p: Preprocess =
            serde_json::from_str(json).map_err(|e| KilnError::value(format!("preprocess: {e}")))?;
        p.check()?;
        Ok(p)
    }

    /// A spec from its fields, checked (what kiln-wasm calls: no JSON parser is linked for it).
    pub fn new(
        scale: f32,
        offset: f32,
        mean: Vec<f32>,
        std: Vec<f32>,
        channels: &str,
    ) -> Result<Self> {
        let p = Preprocess {
            scale,
            offset,
            mean,
            std,
            channels: channels.to_string(),
        };
        p.check()?;
        Ok(p)
    }

    /// The spec as JSON, as the metadata stores it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a preprocess spec serialises")
    }

    /// How many channels it produces: 1 for `"gray"`, 3 otherwise.
    pub fn channel_count(&self) -> usize {
        if self.channels == "gray" {
            1
        } else {
            3
        }
    }

    fn check(&self) -> Result<()> {
        if !["rgb", "bgr", "gray"].contains(&self.channels.as_str()) {
            value_err!(
                "preprocess: channels must be \"rgb\", \"bgr\" or \"gray\", not {:?}",
                self.channels
            );
        }
        if !self.scale.is_finite() || !self.offset.is_finite() {
            value_err!("preprocess: scale and offset must be finite numbers");
        }
        let c = self.channel_count();
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if !v.is_empty() && v.len() != c {
                value_err!(
                    "preprocess: {name} has {} values; {:?} gives {c} channel(s)",
                    v.len(),
                    self.channels
                );
            }
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            value_err!("preprocess: std values must be finite and non-zero");
        }
        Ok(())
    }

    /// The `[1, C, height, width]` input for an RGBA image of `src_width` × `src_height`.
    pub fn apply(
        &self,
        rgba: &[u8],
        src_width: usize,
        src_height: usize,
        height: usize,
        width: usize,
    ) -> Result<Vec<f32>> {
        if src_width == 0 || src_height == 0 || width == 0 || height == 0 {
            value_err!(
                "preprocess: an image of {src_width}x{src_height} cannot become {width}x{height}"
            );
        }
        if rgba.len() != src_width * src_height * 4 {
            value_err!(
                "preprocess: {} bytes is not a {src_width}x{src_height} RGBA image ({} bytes)",
                rgba.len(),
                src_width * src_height * 4
            );
        }
        let c = self.channel_count();
        let mut out = vec![0f32; c * height * width];
        let plane = height * width;
        let (sy, sx) = (
            src_height as f32 / height as f32,
            src_width as f32 / width as f32,
        );
        // Source coordinate and the two neighbours' weights, half-pixel centres, edges clamped.
        let taps = |i: usize, ratio: f32, n: usize| -> (usize, usize, f32) {
            let pos = ((i as f32 + 0.5) * ratio - 0.5).max(0.0);
            let lo = (pos.floor() as usize).min(n - 1);
            let hi = (lo + 1).min(n - 1);
            (lo, hi, pos - lo as f32)
        };
        let px = |x: usize, y: usize, k: usize| rgba[(y * src_width + x) * 4 + k] as f32;
        for y in 0..height {
            let (y0, y1, fy) = taps(y, sy, src_height);
            for x in 0..width {
                let (x0, x1, fx) = taps(x, sx, src_width);
                let mut rgb = [0f32; 3];
                for (k, v) in rgb.iter_mut().enumerate() {
                    let top = px(x0, y0, k) * (1.0 - fx) + px(x1, y0, k) * fx;
                    let bottom = px(x0, y1, k) * (1.0 - fx) + px(x1, y1, k) * fx;
                    *v = top * (1.0 - fy) + bottom * fy;
                }
                let values: [f32; 3] = match self.channels.as_str() {
                    "bgr" => [rgb[2], rgb[1], rgb[0]],
                    "gray" => [0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2], 0.0, 0.0],
                    _ => rgb,
                };
                for (ch, v) in values.iter().take(c).enumerate() {
                    let mut v = v * self.scale + self.offset;
                    if let Some(m) = self.mean.get(ch) {
                        v -= m;
                    }
                    if let Some(s) = self.std.get(ch) {
                        v /= s;
                    }
                    out[ch * plane + y * width + x] = v;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| {
                [
                    (i * 7 % 256) as u8,
                    (i * 13 % 256) as u8,
                    (i * 29 % 256) as u8,
                    255,
                ]
            })
            .collect()
    }

    #[test]
    fn same_size_keeps_the_pixels_and_applies_scale_mean_std_per_channel() {
        let p = Preprocess {
            mean: vec![0.5, 0.25, 0.0],
            std: vec![0.5, 0.25, 2.0],
            ..Default::default()
        };
        let img = image(3, 2);
        let out = p.apply(&img, 3, 2, 2, 3).unwrap();
        assert_eq!(out.len(), 3 * 6);
        for i in 0..6 {
            for (c, (m, s)) in [(0.5, 0.5), (0.25, 0.25), (0.0, 2.0)].iter().enumerate() {
                let want = (img[i * 4 + c] as f32 / 255.0 - m) / s;
                assert!(
                    (out[c * 6 + i] - want).abs() < 1e-6,
                    "pixel {i} channel {c}"
                );
            }
        }
        let bgr = Preprocess {
            channels: "bgr".into(),
            ..Default::default()
        };
        let out = bgr.apply(&img, 3, 2, 2, 3).unwrap();
        assert_eq!(out[0], img[2] as f32 / 255.0);
    }

    #[test]
    fn resizing_is_bilinear_with_half_pixel_centres() {
        // 2x1 image, values 0 and 255 in red: upsampled to 4x1 → 0, 63.75, 191.25, 255
        let img = [0, 0, 0, 255, 255, 0, 0, 255];
        let p = Preprocess {
            scale: 1.0,
            ..Default::default()
        };
        let out = p.apply(&img, 2, 1, 1, 4).unwrap();
        assert_eq!(&out[..4], &[0.0, 63.75, 191.25, 255.0]);
        // down to 1x1: the mean of the two
        assert_eq!(p.apply(&img, 2, 1, 1, 1).unwrap()[0], 127.5);
        let gray = Preprocess {
            channels: "gray".into(),
            scale: 1.0,
            ..Default::default()
        };
        let out = gray.apply(&[100, 50, 200, 255], 1, 1, 2, 2).unwrap();
        assert_eq!(out.len(), 4);
        assert!((out[3] - (0.299 * 100.0 + 0.587 * 50.0 + 0.114 * 200.0)).abs() < 1e-4);
    }

    #[test]
    fn bad_specs_and_images_are_refused_with_what_was_wrong() {
        let e = Preprocess::from_json(r#"{"channels":"rgba"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"rgb\", \"bgr\" or \"gray\""), "{e}");
        let e = Preprocess::from_json(r#"{"channels":"gray","mean":[0.5,0.5,0.5]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mean has 3 values") && e.contains("1 channel"),
            "{e}"
        );
        assert!(Preprocess::from_json(r#"{"std":[1,0,1]}"#).is_err());
        assert!(Preprocess::from_json(r#"{"size":[8,8]}"#).is_err());
        assert!(Preprocess::new(1.0, 0.0, vec![], vec![2.0], "gray").is_ok());
        assert!(Preprocess::new(f32::NAN, 0.0, vec![], vec![], "rgb").is_err());
        let p = Preprocess::from_json("{}").unwrap();
        assert_eq!(p, Preprocess::default());
        assert_eq!(Preprocess::from_json(&p.to_json()).unwrap(), p);
        let e = p.apply(&[0; 15], 2, 2, 8, 8).unwrap_err().to_string();
        assert!(e.contains("15 bytes") && e.contains("2x2 RGBA"), "{e}");
    }
}
