//! Quantization as the float graph sees it: ONNX's `QuantizeLinear → DequantizeLinear` pair (the
//! QDQ form onnxruntime's `quantize_static` and kiln's own `quantize` write) on one tensor.

use ndarray::Zip;

use super::{Tape, Var};

/// The integer grid of a QDQ pair: `q = clamp(round_half_even(x / scale) + zero_point, qmin,
/// qmax)`, dequantized `(q - zero_point) · scale`. uint8 is `[0, 255]`, int8 `[-128, 127]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantGrid {
    /// The step between neighbouring values.
    pub scale: f32,
    /// The integer that stands for 0.0.
    pub zero_point: f32,
    /// The smallest integer.
    pub qmin: f32,
    /// The largest integer.
    pub qmax: f32,
}

impl QuantGrid {
    /// The integer `x` quantizes to, as ONNX's `QuantizeLinear` computes it (division, then
    /// rounding half to even, then saturation).
    pub fn quantize(&self, x: f32) -> f32 {
        ((x / self.scale).round_ties_even() + self.zero_point).clamp(self.qmin, self.qmax)
    }

    /// `x` through QuantizeLinear then DequantizeLinear.
    pub fn apply(&self, x: f32) -> f32 {
        (self.quantize(x) - self.zero_point) * self.scale
    }
}

impl Tape {
    /// `x` rounded onto `grid` (QuantizeLinear then DequantizeLinear). The gradient is the
    /// straight-through estimator of quantization-aware training: passed unchanged where `x` is
    /// inside the grid's range, zero where it saturates.
    pub fn fake_quant(&mut self, x: Var, grid: QuantGrid) -> Var {
        let y = self.value(x).mapv(|v| grid.apply(v));
        self.push(y, &[x], move |c, g| {
            let inside = |x: f32| {
                let q = (x / grid.scale).round_ties_even() + grid.zero_point;
                q >= grid.qmin && q <= grid.qmax
            };
            vec![Some(Zip::from(g).and(c.input(0)).map_collect(|&g, &x| {
                if inside(x) {
                    g
                } else {
                    0.0
                }
            }))]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, ArrayD};

    const U8: QuantGrid = QuantGrid {
        scale: 0.5,
        zero_point: 10.0,
        qmin: 0.0,
        qmax: 255.0,
    };

    #[test]
    fn rounds_half_to_even_and_saturates_as_onnx_says() {
        // onnx.reference's QuantizeLinear on these inputs: 1.25/0.5 = 2.5 → 2, 1.75/0.5 = 3.5 → 4
        let q: Vec<f32> = [1.25, 1.75, -5.0, -6.0, 200.0, 0.0]
            .iter()
            .map(|&x| U8.quantize(x))
            .collect();
        assert_eq!(q, [12.0, 14.0, 0.0, 0.0, 255.0, 10.0]);
        assert_eq!(U8.apply(1.25), 1.0);
        assert_eq!(U8.apply(-6.0), -5.0); // saturated at qmin: (0 - 10) · 0.5
        let i8 = QuantGrid {
            scale: 0.1,
            zero_point: 0.0,
            qmin: -128.0,
            qmax: 127.0,
        };
        assert_eq!(i8.quantize(-20.0), -128.0);
        assert!((i8.apply(0.26) - 0.3).abs() < 1e-6);
    }

    #[test]
    fn gradient_passes_inside_the_range_and_stops_outside() {
        let mut t = Tape::new(true, 0);
        let x = t.leaf(arr1(&[1.0f32, -6.0, 100.0, 130.0]).into_dyn(), true);
        let y = t.fake_quant(x, U8);
        let s = t.sum(y, &[0], false).unwrap();
        t.backward(s).unwrap();
        // -6/0.5 + 10 = -2 < 0 and 130/0.5 + 10 = 270 > 255 saturate
        let want: ArrayD<f32> = arr1(&[1.0f32, 0.0, 1.0, 0.0]).into_dyn();
        assert_eq!(t.grad(x).unwrap(), &want);
    }
}
