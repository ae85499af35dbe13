//! Inference kernels: convolution as a tiled GEMM on packed weights ([`PackedConv`]), with a
//! 4×8 microkernel in wasm simd128 intrinsics and a portable twin elsewhere (`tile.rs`), and on
//! x86-64 AVX-512F (8×32) and AVX2+FMA (6×16) kernels chosen at run time (`x86.rs`, [`Kernel`]). kiln's
//! ONNX engine packs each convolution once when a model loads and fuses what follows it (bias,
//! BatchNorm, residual add, ReLU) into the tile's store; the tape's convolution uses the same
//! kernel when no gradient is needed. A QDQ model's convolutions run on integers ([`QConv`]:
//! i16 × i16 → i32 dot products, `qtile.rs`), dequantized in the same kind of store. A matrix
//! used as the right-hand side of many small products (a recurrent layer's `W_hh`) is packed once
//! for the same tiles ([`PackedMatrix`]). On x86-64 with AVX-512 or AVX2+FMA a second family of
//! tiles puts the output channels in the vectors ([`ChannelTile`], `channels.rs`: 8 positions ×
//! 32 or 16 channels with AVX-512, × 8 with AVX2, inputs broadcast from any image, row or stride,
//! stored transposed into NCHW): it runs the convolutions whose positions fill the first family's
//! vectors poorly (maps whose rows are not whole runs, such as 4×4 and 8×8 with AVX-512's runs of
//! 16, with the batch folded into the positions; strided windows with AVX-512), pooled
//! convolutions, and float Linear layers ([`PackedLinear`]).

#[cfg(target_arch = "x86_64")]
mod channels;
mod conv;
mod matmul;
mod pool;
mod qconv;
mod qtile;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "x86_64")]
pub use channels::{ChannelTile, PackedLinear};
pub use conv::{Kernel, PackedConv};
pub use matmul::PackedMatrix;
pub use pool::max_pool_2x2;
pub use qconv::QConv;
/// `a·b + c` in f32x4 lanes: fused (`f32x4.relaxed_madd`) in the relaxed-SIMD build.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use tile::madd;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{Tape, Window};
    use ndarray::{ArrayD, IxDyn};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0f32..1.0))
    }

    /// The convolution by its definition: seven loops, in f64.
    fn reference(
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        b: Option<&ArrayD<f32>>,
        win: Window,
        groups: usize,
    ) -> ArrayD<f32> {
        let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (o, cg) = (w.shape()[0], c / groups);
        let [oh, ow] = win.output_size(h, wd).unwrap();
        let og = o / groups;
        ArrayD::from_shape_fn(IxDyn(&[n, o, oh, ow]), |ix| {
            let (img, oc, oy, ox) = (ix[0], ix[1], ix[2], ix[3]);
            let g = oc / og;
            let mut acc = b.map_or(0.0, |b| b[[oc]] as f64);
            for ci in 0..cg {
                for ki in 0..win.kernel[0] {
                    for kj in 0..win.kernel[1] {
                        let iy = (oy * win.stride[0] + ki * win.dilation[0]) as isize
                            - win.padding[0] as isize;
                        let ix = (ox * win.stride[1] + kj * win.dilation[1]) as isize
                            - win.padding[1] as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                            continue;
                        }
                        let xv = x[[img, g * cg + ci, iy as usize, ix as usize]] as f64;
                        acc += xv * w[[oc, ci, ki, kj]] as f64;
                    }
                }
            }
            acc as f32
        })
    }

    /// The same convolution packed for every kernel this CPU runs and, on x86-64 with AVX-512 or AVX2,
    /// for every channel-vector tile (each running every geometry), named for the messages.
    fn every_packing(
        weight: &[f32],
        shape: &[usize],
        bias: Option<&[f32]>,
        win: Window,
        groups: usize,
    ) -> Vec<(String, PackedConv)> {
        let mut all: Vec<(String, PackedConv)> = Kernel::available()
            .iter()
            .map(|&k| {
                let p = PackedConv::with_kernel(weight, shape, bias, win, groups, k).unwrap();
                (k.name().to_string(), p)
            })
            .collect();
        #[cfg(target_arch = "x86_64")]
        for &tile in ChannelTile::available() {
            let p = PackedConv::with_channel_tile(weight, shape, bias, win, groups, tile).unwrap();
            all.push((tile.name().to_string(), p));
        }
        all
    }

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn packed_conv_matches_the_im2col_path_on_random_geometries() {
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        // (n, c, h, w, o, kernel, stride, padding, dilation, groups)
        type Case = (
            usize,
            usize,
            usize,
            usize,
            usize,
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            usize,
        );
        let cases: &[Case] = &[
            (1, 3, 32, 32, 16, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (64, 16, 8, 8, 32, [3, 3], [2, 2], [1, 1], [1, 1], 1),
            (2, 16, 16, 16, 32, [1, 1], [2, 2], [0, 0], [1, 1], 1),
            (3, 1, 8, 8, 16, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (64, 16, 4, 4, 32, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (2, 5, 7, 9, 6, [3, 2], [2, 1], [1, 2], [1, 1], 1),
            (1, 4, 11, 10, 6, [3, 3], [1, 2], [2, 1], [2, 2], 2),
            (2, 8, 9, 9, 8, [3, 3], [1, 1], [1, 1], [1, 1], 8),
            (1, 6, 5, 13, 9, [5, 1], [1, 3], [2, 0], [1, 1], 3),
            (1, 2, 3, 3, 1, [3, 3], [1, 1], [0, 0], [1, 1], 1),
            // tiles reading the padded image in place: groups, dilation, vertical stride, partial tiles
            (2, 8, 8, 16, 8, [3, 3], [1, 1], [1, 1], [1, 1], 8),
            (1, 4, 10, 22, 6, [3, 3], [2, 1], [1, 1], [2, 2], 2),
            (64, 32, 16, 16, 32, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            // strided tiles reading the phase-split image: an odd padded width, stride 3 with dilation
            (2, 4, 9, 15, 6, [3, 3], [2, 2], [1, 1], [1, 1], 1),
            (1, 3, 9, 26, 5, [3, 3], [1, 3], [1, 1], [1, 2], 1),
            // a last run of four positions alone, and a last panel of three channels
            (2, 5, 3, 4, 7, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            // the x86 tiles (runs of 8 and 16, panels of 6 and 8 channels): rows of 24, 16, 40
            // and 48 read in place, last runs alone, last panels of 1 to 7 channels
            (1, 3, 6, 24, 13, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (2, 4, 5, 16, 9, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (1, 2, 3, 40, 17, [1, 3], [1, 1], [0, 1], [1, 1], 1),
            (1, 3, 9, 48, 10, [3, 3], [2, 1], [2, 2], [2, 2], 1),
            (3, 6, 8, 32, 12, [3, 3], [1, 1], [1, 1], [1, 1], 3),
            (2, 7, 9, 30, 23, [3, 3], [2, 2], [1, 1], [1, 1], 1),
            (1, 16, 8, 8, 64, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            // stride 1, rows not a whole number of runs: computed `wp` wide, then copied out
            (1, 4, 7, 7, 6, [3, 3], [1, 1], [2, 2], [2, 2], 2),
            (2, 3, 5, 5, 5, [1, 1], [1, 1], [0, 0], [1, 1], 1),
            (3, 16, 4, 4, 32, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (1, 2, 6, 3, 9, [2, 3], [1, 1], [0, 1], [1, 1], 1),
            // strides read the phase-split image in place: whole rows of runs and wide rows, odd
            // paddings, dilation across phases, stride 3; a 1x1 strided window packs on the x86
            // tiles and reads its one phase plane in place on the 4x8 tile (odd sizes, padding,
            // stride 3, a stride along one axis)
            (2, 16, 32, 32, 9, [3, 3], [2, 2], [1, 1], [1, 1], 1),
            (3, 16, 16, 16, 20, [3, 3], [2, 2], [1, 1], [1, 1], 1),
            (2, 16, 16, 16, 8, [1, 1], [2, 2], [0, 0], [1, 1], 1),
            (2, 8, 15, 15, 4, [1, 1], [2, 2], [0, 0], [1, 1], 1),
            (1, 4, 12, 12, 6, [1, 1], [3, 3], [1, 1], [1, 1], 1),
            (2, 6, 9, 16, 5, [1, 1], [1, 2], [0, 0], [1, 1], 1),
            (1, 3, 11, 13, 7, [3, 3], [2, 2], [2, 1], [2, 1], 1),
            (2, 4, 10, 17, 6, [5, 3], [3, 2], [2, 1], [1, 2], 2),
            (1, 2, 9, 65, 5, [3, 3], [1, 2], [1, 0], [1, 1], 1),
            // strided wide rows that would take more tiles: input panels packed per tile; a
            // stride-1 row far wider than its outputs
            (2, 32, 16, 16, 16, [3, 3], [2, 2], [1, 1], [1, 1], 1),
            (1, 2, 7, 12, 4, [3, 3], [2, 4], [1, 1], [1, 1], 1),
            (2, 3, 6, 8, 5, [3, 7], [1, 1], [1, 0], [1, 1], 1),
        ];
        for &(n, c, h, w, o, kernel, stride, padding, dilation, groups) in cases {
            let win = Window {
                kernel,
                stride,
                padding,
                dilation,
            };
            let x = random(&[n, c, h, w], &mut rng);
            let wt = random(&[o, c / groups, kernel[0], kernel[1]], &mut rng);
            let b = random(&[o], &mut rng);
            for bias in [None, Some(&b)] {
                let want = reference(&x, &wt, bias, win, groups);
                let bias = bias.map(|b| b.as_slice().unwrap());
                for (name, packed) in
                    every_packing(wt.as_slice().unwrap(), wt.shape(), bias, win, groups)
                {
                    assert_eq!(&packed.output_shape(x.shape()).unwrap()[..], want.shape());
                    let mut got = vec![f32::NAN; want.len()];
                    packed
                        .run(x.as_slice().unwrap(), x.shape(), None, false, &mut got)
                        .unwrap();
                    let d = max_rel_diff(&got, want.as_slice().unwrap());
                    assert!(
                        d < 1e-5,
                        "{name} {:?}: off by {d}",
                        (n, c, h, w, o, kernel, stride, padding, dilation, groups)
                    );
                }
            }
        }
    }

    #[test]
    fn fused_scale_shift_residual_and_relu_match_the_ops_one_by_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let win = Window {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
        };
        for (n, c, hw, o) in [
            (1, 16, 8, 16),
            (64, 8, 6, 12),
            (2, 3, 5, 5),
            (2, 8, 16, 13),
            (1, 4, 32, 8),
        ] {
            let x = random(&[n, c, hw, hw], &mut rng);
            let wt = random(&[o, c, 3, 3], &mut rng);
            let (s, t) = (random(&[o, 1, 1], &mut rng), random(&[o, 1, 1], &mut rng));
            let res = random(&[n, o, hw, hw], &mut rng);
            let conv = reference(&x, &wt, None, win, 1);
            let want = ((conv * &s + &t) + &res).mapv(|v| if v > 0.0 { v } else { 0.0 });
            for (name, mut packed) in
                every_packing(wt.as_slice().unwrap(), wt.shape(), None, win, 1)
            {
                packed.scale_channels(s.as_slice().unwrap());
                packed.shift_channels(t.as_slice().unwrap());
                let mut got = vec![0f32; want.len()];
                let r = Some(res.as_slice().unwrap());
                packed
                    .run(x.as_slice().unwrap(), x.shape(), r, true, &mut got)
                    .unwrap();
                let d = max_rel_diff(&got, want.as_slice().unwrap());
                assert!(d < 1e-5, "{name} {n}x{c}x{hw}: off by {d}");
            }
        }
    }

    #[test]
    fn every_kernel_the_cpu_has_is_offered_and_the_portable_one_last() {
        let all = Kernel::available();
        assert_eq!(all.last().unwrap().name(), Kernel::PORTABLE.name());
        assert_eq!(Kernel::best().name(), all[0].name());
        #[cfg(target_arch = "x86_64")]
        {
            let names: Vec<&str> = all.iter().map(|k| k.name()).collect();
            let has = |n: &str| names.iter().any(|k| k.starts_with(n));
            assert_eq!(
                has("avx2"),
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
            );
            assert_eq!(has("avx512f"), is_x86_feature_detected!("avx512f"));
            // the channel-vector tiles come with AVX-512 or AVX2+FMA, the fastest first
            let tiles: Vec<&str> = ChannelTile::available().iter().map(|t| t.name()).collect();
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            assert_eq!(tiles.iter().any(|t| t.starts_with("avx2")), avx2);
            assert_eq!(
                tiles.first().is_some_and(|t| t.starts_with("avx512f")),
                is_x86_feature_detected!("avx512f")
            );
        }
    }

    #[test]
    fn relu_in_the_store_turns_nan_into_zero_in_every_kernel() {
        let win = Window {
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        };
        // one channel, 64 positions: full tiles of every kernel; NaN, -0 and negatives
        let x: Vec<f32> = (0..64)
            .map(|i| match i % 4 {
                0 => f32::NAN,
                1 => -0.0,
                2 => -1.0 - i as f32,
                _ => i as f32,
            })
            .collect();
        for &k in Kernel::available() {
            let p = PackedConv::with_kernel(&[1.0; 8], &[8, 1, 1, 1], None, win, 1, k).unwrap();
            let mut got = vec![f32::NAN; 8 * 64];
            p.run(&x, &[1, 1, 8, 8], None, true, &mut got).unwrap();
            for (i, v) in got.iter().enumerate() {
                let want = if i % 4 == 3 { (i % 64) as f32 } else { 0.0 };
                assert!(v.to_bits() == want.to_bits(), "{k:?} at {i}: {v}");
            }
        }
    }

    #[test]
    fn max_pool_2x2_matches_the_tapes_pooling_with_ties_and_nan() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (n, c, h, w) in [
            (2, 3, 8, 8),
            (1, 2, 5, 11),
            (3, 1, 4, 18),
            (1, 1, 2, 2),
            (2, 2, 4, 4),
            (1, 3, 6, 13),
        ] {
            let mut x = random(&[n, c, h, w], &mut rng);
            // ties (rounded values) and a NaN in some windows
            x.mapv_inplace(|v| (v * 2.0).round());
            x.as_slice_mut().unwrap()[3] = f32::NAN;
            let mut t = Tape::new(true, 0);
            let xv = t.leaf(x.clone(), true);
            let y = t.max_pool2d(xv, [2, 2], [2, 2], [0, 0]).unwrap();
            let want = t.value(y).clone();
            let mut got = vec![0f32; want.len()];
            max_pool_2x2(x.as_slice().unwrap(), n * c, [h, w], &mut got);
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(g == w || (g.is_nan() && w.is_nan()), "{g} vs {w}");
            }
            // the inference tape takes the same path as the kernel
            let mut t = Tape::new(false, 0);
            let xv = t.constant(x.clone());
            let y = t.max_pool2d(xv, [2, 2], [2, 2], [0, 0]).unwrap();
            assert_eq!(t.shape(y), want.shape());
        }
    }

    #[test]
    fn pooled_convolution_matches_the_convolution_then_the_pool() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        // (n, c, h, w, o, kernel, stride, padding, groups): odd maps (a last row or column no
        // window covers), windows across images and tiles, last panels of 1 to 31 channels,
        // no padding (the input read in place), strides, groups
        type Case = (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
        );
        let cases: &[Case] = &[
            (64, 1, 8, 8, 16, 3, 1, 1, 1),
            (64, 16, 4, 4, 32, 3, 1, 1, 1),
            (3, 2, 7, 9, 13, 3, 1, 1, 1),
            (1, 3, 5, 5, 40, 3, 1, 1, 1),
            (5, 4, 6, 10, 5, 1, 1, 0, 1),
            (2, 3, 9, 7, 17, 3, 1, 0, 1),
            (1, 1, 3, 3, 3, 2, 1, 0, 1),
            (3, 6, 11, 12, 12, 3, 2, 1, 3),
            (2, 8, 8, 8, 8, 3, 1, 1, 8),
            (7, 5, 2, 6, 33, 1, 1, 0, 1),
        ];
        for &(n, c, h, w, o, k, s, pad, groups) in cases {
            let win = Window {
                kernel: [k, k],
                stride: [s, s],
                padding: [pad, pad],
                dilation: [1, 1],
            };
            let mut x = random(&[n, c, h, w], &mut rng);
            x.as_slice_mut().unwrap()[c * h * w / 2] = f32::NAN;
            let wt = random(&[o, c / groups, k, k], &mut rng);
            let b = random(&[o], &mut rng);
            let conv = reference(&x, &wt, Some(&b), win, groups);
            let [oh, ow] = [conv.shape()[2], conv.shape()[3]];
            let pooled = n * o * (oh / 2) * (ow / 2);
            for (name, packed) in every_packing(
                wt.as_slice().unwrap(),
                wt.shape(),
                Some(b.as_slice().unwrap()),
                win,
                groups,
            ) {
                for relu in [false, true] {
                    let mut full = vec![0f32; conv.len()];
                    packed
                        .run(x.as_slice().unwrap(), x.shape(), None, relu, &mut full)
                        .unwrap();
                    let mut want = vec![0f32; pooled];
                    max_pool_2x2(&full, n * o, [oh, ow], &mut want);
                    let mut got = vec![f32::NAN; pooled];
                    packed
                        .run_pooled(x.as_slice().unwrap(), x.shape(), relu, &mut got)
                        .unwrap();
                    // the same sums in the same order: the same values, NaN where it was
                    for (i, (g, v)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            g.to_bits() == v.to_bits(),
                            "{name} {:?} relu {relu} at {i}: {g} vs {v}",
                            (n, c, h, w, o, k, s, pad, groups)
                        );
                    }
                    // and the definition's, where no NaN reached
                    let mut def = conv.clone();
                    if relu {
                        def.mapv_inplace(|v| if v > 0.0 { v } else { 0.0 });
                    }
                    let mut def_pooled = vec![0f32; pooled];
                    max_pool_2x2(def.as_slice().unwrap(), n * o, [oh, ow], &mut def_pooled);
                    let ok = got.iter().zip(&def_pooled).all(|(g, d)| {
                        (g.is_nan() && d.is_nan()) || (g - d).abs() <= 1e-5 * (1.0 + d.abs())
                    });
                    assert!(ok, "{name} {:?}: off the definition", (n, c, h, w, o));
                }
            }
        }
        // too small a map for the window: an error, not a panic
        let win = Window {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        };
        let p = PackedConv::best(&[0.5; 9], &[1, 1, 3, 3], None, win, 1).unwrap();
        let e = p.run_pooled(&[1.0; 12], &[1, 1, 3, 4], false, &mut []);
        assert!(e.unwrap_err().to_string().contains("MaxPool2d"));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn packed_linear_matches_the_definition_on_ragged_shapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        // rows below, at and past a tile of 8; outputs of part of a vector, one, several
        for (rows, k, o) in [
            (1, 64, 128),
            (64, 128, 64),
            (64, 64, 10),
            (9, 7, 33),
            (3, 1, 16),
        ] {
            let x = random(&[rows, k], &mut rng);
            let w = random(&[o, k], &mut rng);
            let b = random(&[o], &mut rng);
            for bias in [None, Some(&b)] {
                for relu in [false, true] {
                    let lin = PackedLinear::new(
                        w.as_slice().unwrap(),
                        [o, k],
                        bias.map(|b| b.as_slice().unwrap()),
                    );
                    let Some(lin) = lin else {
                        assert!(ChannelTile::available().is_empty());
                        return;
                    };
                    assert_eq!((lin.in_features(), lin.out_features()), (k, o));
                    let mut got = vec![f32::NAN; rows * o];
                    lin.run(x.as_slice().unwrap(), rows, relu, &mut got)
                        .unwrap();
                    for i in 0..rows {
                        for j in 0..o {
                            let mut v = bias.map_or(0.0, |b| b[[j]] as f64);
                            v += (0..k)
                                .map(|r| x[[i, r]] as f64 * w[[j, r]] as f64)
                                .sum::<f64>();
                            let want = if relu { v.max(0.0) } else { v };
                            let d = (got[i * o + j] as f64 - want).abs();
                            assert!(d < 1e-4, "{rows}x{k}->{o} at {i},{j}: off by {d}");
                        }
                    }
                }
            }
        }
        let lin = PackedLinear::new(&[0.0; 6], [2, 3], None).unwrap();
        assert!(lin.run(&[0.0; 5], 2, false, &mut [0.0; 4]).is_err());
        assert!(PackedLinear::new(&[0.0; 5], [2, 3], None).is_none());
    }

    #[test]
    fn misfits_are_errors() {
        let win = Window {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        };
        assert!(PackedConv::new(&[0.0; 54], &[2, 3, 3, 3], None, win, 4).is_err());
        assert!(PackedConv::new(&[0.0; 53], &[2, 3, 3, 3], None, win, 1).is_err());
        assert!(PackedConv::new(&[0.0; 54], &[2, 3, 3, 3], Some(&[0.0]), win, 1).is_err());
        let p = PackedConv::new(&[0.0; 54], &[2, 3, 3, 3], None, win, 1).unwrap();
        assert!(p.output_shape(&[1, 4, 5, 5]).is_err());
        assert!(p.output_shape(&[1, 3, 2, 5]).is_err());
        let mut out = vec![0.0; 18];
        assert!(p
            .run(&[0.0; 74], &[1, 3, 5, 5], None, false, &mut out)
            .is_err());
    }
}
