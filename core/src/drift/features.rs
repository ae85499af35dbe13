//! What the monitor watches in one input example: every value of a flat input, or, for an image
//! `[channels, height, width]`, each channel's mean and spread and the mean of a 3×3 grid of
//! regions (strokes that thicken move the means, a digit drawn off-centre moves the regions).

use crate::{shape_err, Result};

/// How an example's values become the watched features.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Features {
    /// One feature per input value (row-major).
    Flat {
        /// Number of values in one example.
        len: usize,
    },
    /// Per channel: mean, standard deviation and 9 region means.
    Image {
        /// Channels.
        channels: usize,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
}

/// Region names of the 3×3 grid, row by row.
const REGIONS: [&str; 9] = [
    "top-left",
    "top",
    "top-right",
    "left",
    "centre",
    "right",
    "bottom-left",
    "bottom",
    "bottom-right",
];
const PER_CHANNEL: usize = 2 + REGIONS.len();

impl Features {
    /// The features for examples of `shape` (without the batch axis): images when the shape is
    /// `[C, H, W]` with H, W ≥ 3, every value otherwise.
    pub fn for_shape(shape: &[usize]) -> Result<Features> {
        let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        match len {
            Some(n) if n > 0 && n <= 1 << 24 => {}
            _ => shape_err!("drift: an example of shape {shape:?} has no values or too many"),
        }
        Ok(match *shape {
            [channels, height, width] if height >= 3 && width >= 3 => Features::Image {
                channels,
                height,
                width,
            },
            _ => Features::Flat {
                len: len.unwrap_or(0),
            },
        })
    }

    /// Values in one example.
    pub fn input_len(&self) -> usize {
        match *self {
            Features::Flat { len } => len,
            Features::Image {
                channels,
                height,
                width,
            } => channels * height * width,
        }
    }

    /// Number of features.
    pub fn count(&self) -> usize {
        match *self {
            Features::Flat { len } => len,
            Features::Image { channels, .. } => channels * PER_CHANNEL,
        }
    }

    /// The name of feature `i` as a report shows it: `x[17]`, or `mean`, `std`, `top-left`, …
    /// (prefixed `c1.` when the image has several channels).
    pub fn name(&self, i: usize) -> String {
        match *self {
            Features::Flat { .. } => format!("x[{i}]"),
            Features::Image { channels, .. } => {
                let what = match i % PER_CHANNEL {
                    0 => "mean",
                    1 => "std",
                    r => REGIONS[r - 2],
                };
                if channels > 1 {
                    format!("c{}.{what}", i / PER_CHANNEL)
                } else {
                    what.to_string()
                }
            }
        }
    }

    /// The features of one example (`x.len() == self.input_len()`), appended to `out`.
    pub fn extract(&self, x: &[f32], out: &mut Vec<f64>) {
        match *self {
            Features::Flat { .. } => out.extend(x.iter().map(|&v| v as f64)),
            Features::Image {
                channels,
                height,
                width,
            } => {
                let plane = height * width;
                for c in 0..channels {
                    let p = &x[c * plane..(c + 1) * plane];
                    let mean = p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
                    let var =
                        p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / plane as f64;
                    out.push(mean);
                    out.push(var.sqrt());
                    for ry in 0..3 {
                        let (y0, y1) = (ry * height / 3, (ry + 1) * height / 3);
                        for rx in 0..3 {
                            let (x0, x1) = (rx * width / 3, (rx + 1) * width / 3);
                            let mut sum = 0.0;
                            for y in y0..y1 {
                                sum += p[y * width + x0..y * width + x1]
                                    .iter()
                                    .map(|&v| v as f64)
                                    .sum::<f64>();
                            }
                            out.push(sum / ((y1 - y0) * (x1 - x0)) as f64);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_get_channel_and_region_features() {
        let f = Features::for_shape(&[1, 6, 6]).unwrap();
        assert_eq!(f.count(), 11);
        let mut x = vec![0f32; 36];
        x[0] = 1.0; // top-left pixel
        let mut out = Vec::new();
        f.extract(&x, &mut out);
        assert!((out[0] - 1.0 / 36.0).abs() < 1e-12);
        assert!(
            (out[2] - 0.25).abs() < 1e-12,
            "top-left region mean {}",
            out[2]
        );
        assert!(out[3..].iter().all(|&v| v == 0.0));
        assert_eq!(f.name(6), "centre");
        assert_eq!(Features::for_shape(&[3, 8, 8]).unwrap().name(12), "c1.std");
    }

    #[test]
    fn other_shapes_are_flat_and_empty_shapes_are_refused() {
        assert_eq!(
            Features::for_shape(&[784]).unwrap(),
            Features::Flat { len: 784 }
        );
        assert_eq!(
            Features::for_shape(&[4, 2]).unwrap(),
            Features::Flat { len: 8 }
        );
        assert!(Features::for_shape(&[0, 3]).is_err());
        assert!(Features::for_shape(&[usize::MAX, 2]).is_err());
    }
}
