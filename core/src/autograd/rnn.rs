//! Recurrent layers over a whole sequence: GRU and LSTM, with PyTorch's semantics (gate order,
//! parameter layout, `batch_first`, bidirectional, dropout between layers, initial states).
//!
//! One tape node per layer runs both directions: the input projection of every time step is one
//! GEMM, each step one product of the hidden state with `W_hhᵀ` plus a fused element-wise loop,
//! into buffers allocated once per layer. Backward (through time) walks the steps in reverse with
//! one product per step with `W_hh` for the hidden state's gradient, and forms the weight gradients
//! with one GEMM each over all steps at the end. The per-step products run on the convolutions'
//! register-blocked tiles with `W_hh` packed once per direction ([`PackedMatrix`]): a general GEMM
//! repacks it at every step, which at 16 rows costs more than the product. The batch's rows are independent through time, so the batch is
//! split into (at most) two chunks that each run the whole sequence, forward and backward, as one
//! task on its own thread (see `Chunks`); the gate loops call no libm function, run on blocks of
//! eight units held in arrays (so they vectorise: see [`LANES`]) and are compiled for AVX2 when the
//! CPU has it.
//!
//! GRU (gates r, z, n): `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(… z …)`,
//! `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, `h' = (1 − z) ⊙ n + z ⊙ h`.
//! LSTM (gates i, f, g, o): `c' = f ⊙ c + i ⊙ g`, `h' = o ⊙ tanh(c')`.

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis, Ix2, IxDyn};

use super::linalg::gemm;
use super::tape::{Tape, Tensor, Var};
use super::vmath::{in_blocks, load, sigmoid, simd_dispatch, store, tanh, LANES};
use crate::kernels::PackedMatrix;
use crate::{shape_err, value_err, Result};

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RnnCell {
    /// Gated recurrent unit: gates r, z, n.
    Gru,
    /// Long short-term memory: gates i, f, g, o, and a cell state.
    Lstm,
}

impl RnnCell {
    /// Gates per hidden unit (3 for GRU, 4 for LSTM): the weights have `gates · hidden_size` rows.
    pub fn gates(self) -> usize {
        match self {
            RnnCell::Gru => 3,
            RnnCell::Lstm => 4,
        }
    }

    /// Where ONNX's gate blocks come from: ONNX's block `k` is PyTorch's block `order[k]`
    /// (ONNX GRU is z, r, h against PyTorch's r, z, n; ONNX LSTM is i, o, f, c against i, f, g, o).
    /// The exporter reorders with it, an importer inverts it.
    pub fn onnx_gate_order(self) -> &'static [usize] {
        match self {
            RnnCell::Gru => &[1, 0, 2],
            RnnCell::Lstm => &[0, 3, 1, 2],
        }
    }

    /// A PyTorch `[G·H, …]` weight or `[G·H]` bias with its gate blocks in ONNX's order.
    pub fn to_onnx_gates(self, w: &Tensor) -> Tensor {
        self.regroup(w, self.onnx_gate_order())
    }

    /// An ONNX gate-blocked weight or bias (one direction's `W`, `R`, or half of `B`) in PyTorch's
    /// order: what an importer hands to [`Tape::rnn`].
    pub fn from_onnx_gates(self, w: &Tensor) -> Tensor {
        let order = self.onnx_gate_order();
        let mut inverse = vec![0; order.len()];
        for (k, &o) in order.iter().enumerate() {
            inverse[o] = k;
        }
        self.regroup(w, &inverse)
    }

    /// Block `k` of the result is block `order[k]` of `w` (blocks of `rows / gates` along axis 0).
    fn regroup(self, w: &Tensor, order: &[usize]) -> Tensor {
        let h = w.shape()[0] / self.gates();
        let rows: Vec<usize> = order.iter().flat_map(|&k| k * h..(k + 1) * h).collect();
        crate::arrays::take(w, 0, &rows)
    }

    /// `"GRU"` or `"LSTM"`, PyTorch's class names (used in error messages).
    pub fn name(self) -> &'static str {
        match self {
            RnnCell::Gru => "GRU",
            RnnCell::Lstm => "LSTM",
        }
    }
}

/// A recurrent layer's hyper-parameters, PyTorch's constructor arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnConfig {
    /// GRU or LSTM.
    pub cell: RnnCell,
    /// Features of the input `x`.
    pub input_size: usize,
    /// Features of the hidden state.
    pub hidden_size: usize,
    /// Stacked layers; each reads the previous one's output sequence.
    pub num_layers: usize,
    /// Whether the layers have `bias_ih` / `bias_hh`.
    pub bias: bool,
    /// `x` and the output are `[batch, seq, features]` rather than `[seq, batch, features]`.
    pub batch_first: bool,
    /// Dropout on the outputs of every layer but the last, in training only.
    pub dropout: f32,
    /// A second direction per layer reads the sequence backwards; outputs are concatenated.
    pub bidirectional: bool,
}

/// What [`Tape::rnn`] returns.
#[derive(Clone, Copy, Debug)]
pub struct RnnOutput {
    /// The last layer's hidden state at every step: `[batch, seq, D·hidden]` (`batch_first`) or
    /// `[seq, batch, D·hidden]`, forward direction first in the last axis.
    pub output: Var,
    /// Every layer's and direction's final hidden state: `[num_layers · D, batch, hidden]`.
    pub h_n: Var,
    /// LSTM only: the final cell states, shaped like `h_n`.
    pub c_n: Option<Var>,
}

impl RnnConfig {
    /// 1 or 2.
    pub fn directions(&self) -> usize {
        1 + self.bidirectional as usize
    }

    /// Check the arguments (the layer's constructor calls this before drawing weights).
    pub fn check(&self) -> Result<()> {
        let name = self.cell.name();
        if self.input_size == 0 || self.hidden_size == 0 || self.num_layers == 0 {
            value_err!("{name}: input_size, hidden_size and num_layers must be positive");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            value_err!("{name}: dropout must be in [0, 1), got {}", self.dropout);
        }
        Ok(())
    }

    /// The parameters' names and shapes in PyTorch's order (its `_flat_weights`): per layer, per
    /// direction, `weight_ih_l{k}`, `weight_hh_l{k}`, then `bias_ih_l{k}`, `bias_hh_l{k}`;
    /// the reverse direction's names end in `_reverse`.
    pub fn weights(&self) -> Vec<(String, Vec<usize>)> {
        let gh = self.cell.gates() * self.hidden_size;
        let mut out = Vec::new();
        for l in 0..self.num_layers {
            let input = if l == 0 {
                self.input_size
            } else {
                self.directions() * self.hidden_size
            };
            for d in 0..self.directions() {
                let sfx = if d == 1 { "_reverse" } else { "" };
                out.push((format!("weight_ih_l{l}{sfx}"), vec![gh, input]));
                out.push((format!("weight_hh_l{l}{sfx}"), vec![gh, self.hidden_size]));
                if self.bias {
                    out.push((format!("bias_ih_l{l}{sfx}"), vec![gh]));
                    out.push((format!("bias_hh_l{l}{sfx}"), vec![gh]));
                }
            }
        }
        out
    }
}

fn view2(t: &Tensor) -> ArrayView2<'_, f32> {
    t.view().into_dimensionality::<Ix2>().expect("2-D")
}

/// One direction's weights as the kernels read them.
struct DirWeights<'a> {
    w_ih: ArrayView2<'a, f32>,
    w_hh: ArrayView2<'a, f32>,
    b_ih: Option<&'a [f32]>,
    b_hh: Option<&'a [f32]>,
}

/// Sizes of one layer's run.
#[derive(Clone, Copy)]
struct Dims {
    cell: RnnCell,
    steps: usize,
    batch: usize,
    hidden: usize,
    /// Columns of the output (D · hidden); direction `d` writes columns `d·hidden..`.
    width: usize,
    /// Whether the chunks may run on rayon's threads ([`Tape::parallel_ops`]).
    parallel: bool,
}

/// What one direction's forward keeps for backward, in chunk-major row order (see [`Chunks`]): the
/// activated gates per step (GRU r, z, n; LSTM i, f, g, o), per step GRU's `W_hn h + b_hn` or
/// LSTM's cell state, and the hidden states it produced (`[T·B, H]`, backward's `h_{t-1}`).
struct DirCache {
    gates: Vec<f32>,
    extra: Vec<f32>,
    states: Vec<f32>,
}

/// Batch rows that make a chunk worth its own task.
const MIN_CHUNK_ROWS: usize = 4;
/// Chunks per batch: the batch's rows are independent through time, so each chunk runs its whole
/// sequence (forward, then backward) as one task, on its own core, with no synchronisation per
/// step. The split depends on the batch size only, never on the thread count, so one thread and two
/// give bit-identical results.
const MAX_CHUNKS: usize = 2;

/// How one layer's batch is split into chunks. Buffers shared by the chunks hold their rows in
/// chunk-major order: chunk `c` (batch rows `b0..b1`) owns rows `T·b0..T·b1`, time-major within
/// (`T·b0 + t·(b1 − b0) + (bi − b0)`), so every chunk reads and writes one contiguous block. With one
/// chunk that order is the time-major `t·B + bi` itself.
#[derive(Clone, Debug)]
struct Chunks {
    steps: usize,
    batch: usize,
    bounds: Vec<(usize, usize)>,
}

impl Chunks {
    fn new(steps: usize, batch: usize) -> Chunks {
        let count = (batch / MIN_CHUNK_ROWS).clamp(1, MAX_CHUNKS);
        let bounds = (0..count)
            .map(|c| (c * batch / count, (c + 1) * batch / count))
            .collect();
        Chunks {
            steps,
            batch,
            bounds,
        }
    }

    fn single(&self) -> bool {
        self.bounds.len() == 1
    }

    /// For every chunk-major row, its time-major row `t·B + bi`.
    fn time_major_rows(&self) -> Vec<usize> {
        let mut rows = Vec::with_capacity(self.steps * self.batch);
        for &(b0, b1) in &self.bounds {
            for t in 0..self.steps {
                rows.extend((b0..b1).map(|bi| t * self.batch + bi));
            }
        }
        rows
    }

    /// `m` (`[T·B, w]`, time-major rows) in chunk-major row order; borrowed when that is the same.
    fn gather<'a>(&self, m: &'a ArrayView2<'a, f32>) -> ndarray::CowArray<'a, f32, Ix2> {
        if self.single() {
            return m.view().into();
        }
        m.select(Axis(0), &self.time_major_rows()).into()
    }

    /// `buf` (`[T·B, width]` values, chunk-major rows) cut into one mutable block per chunk.
    fn split<'a>(&self, mut buf: &'a mut [f32], width: usize) -> Vec<&'a mut [f32]> {
        let mut parts = Vec::with_capacity(self.bounds.len());
        for &(b0, b1) in &self.bounds {
            let (head, tail) = buf.split_at_mut(self.steps * (b1 - b0) * width);
            parts.push(head);
            buf = tail;
        }
        parts
    }

    /// The read-only counterpart of [`Chunks::split`].
    fn blocks<'a>(&self, buf: &'a [f32], width: usize) -> Vec<&'a [f32]> {
        self.bounds
            .iter()
            .map(|&(b0, b1)| &buf[self.steps * b0 * width..self.steps * b1 * width])
            .collect()
    }
}

/// Batch rows `b0..b1` of a `[B, H]` state.
fn batch_rows(s: Option<&[f32]>, (b0, b1): (usize, usize), h: usize) -> Option<&[f32]> {
    s.map(|s| &s[b0 * h..b1 * h])
}

/// `f` on every task, in parallel on rayon's threads natively when `parallel` (in order in wasm);
/// results in order.
fn run_tasks<T: Send, R: Send>(
    parallel: bool,
    tasks: Vec<T>,
    f: impl Fn(T) -> R + Sync + Send,
) -> Vec<R> {
    #[cfg(not(target_arch = "wasm32"))]
    if parallel && tasks.len() > 1 {
        use rayon::prelude::*;
        return tasks.into_par_iter().map(f).collect();
    }
    #[cfg(target_arch = "wasm32")]
    let _ = parallel;
    tasks.into_iter().map(f).collect()
}

/// The gate biases of one direction, folded where they add: GRU's `b_hn` stays apart (`r` scales it).
struct Bias {
    x: Vec<f32>,
    hn: Vec<f32>,
}

impl Bias {
    fn new(cell: RnnCell, h: usize, w: &DirWeights) -> Bias {
        let gh_w = cell.gates() * h;
        let mut x = vec![0.0f32; gh_w];
        let mut hn = vec![0.0f32; h];
        if let Some(bi) = w.b_ih {
            x.copy_from_slice(bi);
        }
        if let Some(bh) = w.b_hh {
            let folded = if cell == RnnCell::Gru { 2 * h } else { gh_w };
            for (a, v) in x[..folded].iter_mut().zip(bh) {
                *a += v;
            }
            if cell == RnnCell::Gru {
                hn.copy_from_slice(&bh[2 * h..]);
            }
        }
        Bias { x, hn }
    }
}

/// One GRU step's element-wise part for `rows` rows: `g` holds `x·W_ihᵀ` (`[rows, 3H]`), `rh`
/// `h·W_hhᵀ`; writes the activated gates back into `g`, `W_hn h + b_hn` into `ex`, `h'` into
/// `hp` and `o`. Each row runs in blocks of [`LANES`] units, then one by one.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_step_body(
    h: usize,
    g: &mut [f32],
    rh: &[f32],
    bias: &[f32],
    bias_hn: &[f32],
    hp: &mut [f32],
    ex: &mut [f32],
    o: &mut [f32],
) {
    for ((((g, rh), hp), ex), o) in g
        .chunks_exact_mut(3 * h)
        .zip(rh.chunks_exact(3 * h))
        .zip(hp.chunks_exact_mut(h))
        .zip(ex.chunks_exact_mut(h))
        .zip(o.chunks_exact_mut(h))
    {
        in_blocks!(h, [LANES], |j, N| gru_units::<N>(
            j, h, g, rh, bias, bias_hn, hp, ex, o
        ));
    }
}

/// Units `j..j + N` of one row of [`gru_step_body`], on arrays (see [`LANES`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_units<const N: usize>(
    j: usize,
    h: usize,
    g: &mut [f32],
    rh: &[f32],
    bias: &[f32],
    bias_hn: &[f32],
    hp: &mut [f32],
    ex: &mut [f32],
    o: &mut [f32],
) {
    let (xr, xz, xn) = (
        load::<N>(g, j),
        load::<N>(g, h + j),
        load::<N>(g, 2 * h + j),
    );
    let (hr, hz, hn) = (
        load::<N>(rh, j),
        load::<N>(rh, h + j),
        load::<N>(rh, 2 * h + j),
    );
    let (br, bz, bn) = (
        load::<N>(bias, j),
        load::<N>(bias, h + j),
        load::<N>(bias, 2 * h + j),
    );
    let (bhn, prev) = (load::<N>(bias_hn, j), load::<N>(hp, j));
    let (mut r, mut z, mut nn, mut ghn, mut out) =
        ([0.0f32; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N]);
    for l in 0..N {
        r[l] = sigmoid(xr[l] + br[l] + hr[l]);
        z[l] = sigmoid(xz[l] + bz[l] + hz[l]);
        ghn[l] = hn[l] + bhn[l];
        nn[l] = tanh(xn[l] + bn[l] + r[l] * ghn[l]);
        out[l] = (1.0 - z[l]) * nn[l] + z[l] * prev[l];
    }
    store(g, j, r);
    store(g, h + j, z);
    store(g, 2 * h + j, nn);
    store(ex, j, ghn);
    store(hp, j, out);
    store(o, j, out);
}
simd_dispatch!(gru_step, gru_step_avx2, gru_step_body, (h: usize, g: &mut [f32], rh: &[f32], bias: &[f32], bias_hn: &[f32], hp: &mut [f32], ex: &mut [f32], o: &mut [f32]));

/// One LSTM step's element-wise part: as [`gru_step_body`], with the cell state `cp` updated and
/// stored in `ex`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_step_body(
    h: usize,
    g: &mut [f32],
    rh: &[f32],
    bias: &[f32],
    hp: &mut [f32],
    cp: &mut [f32],
    ex: &mut [f32],
    o: &mut [f32],
) {
    for (((((g, rh), hp), cp), ex), o) in g
        .chunks_exact_mut(4 * h)
        .zip(rh.chunks_exact(4 * h))
        .zip(hp.chunks_exact_mut(h))
        .zip(cp.chunks_exact_mut(h))
        .zip(ex.chunks_exact_mut(h))
        .zip(o.chunks_exact_mut(h))
    {
        in_blocks!(h, [LANES], |j, N| lstm_units::<N>(
            j, h, g, rh, bias, hp, cp, ex, o
        ));
    }
}

/// Units `j..j + N` of one row of [`lstm_step_body`], on arrays (see [`LANES`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_units<const N: usize>(
    j: usize,
    h: usize,
    g: &mut [f32],
    rh: &[f32],
    bias: &[f32],
    hp: &mut [f32],
    cp: &mut [f32],
    ex: &mut [f32],
    o: &mut [f32],
) {
    // gate k's pre-activation: x·W_ihᵀ + bias + h·W_hhᵀ
    let pre = |k: usize| -> [f32; N] {
        let (x, b, r) = (
            load::<N>(g, k * h + j),
            load::<N>(bias, k * h + j),
            load::<N>(rh, k * h + j),
        );
        let mut v = [0.0f32; N];
        for l in 0..N {
            v[l] = x[l] + b[l] + r[l];
        }
        v
    };
    let (pi, pf, pg, po) = (pre(0), pre(1), pre(2), pre(3));
    let cprev = load::<N>(cp, j);
    let (mut i, mut f, mut gg, mut og, mut c, mut out) = (
        [0.0f32; N],
        [0.0; N],
        [0.0; N],
        [0.0; N],
        [0.0; N],
        [0.0; N],
    );
    for l in 0..N {
        i[l] = sigmoid(pi[l]);
        f[l] = sigmoid(pf[l]);
        gg[l] = tanh(pg[l]);
        og[l] = sigmoid(po[l]);
        c[l] = f[l] * cprev[l] + i[l] * gg[l];
        out[l] = og[l] * tanh(c[l]);
    }
    store(g, j, i);
    store(g, h + j, f);
    store(g, 2 * h + j, gg);
    store(g, 3 * h + j, og);
    store(ex, j, c);
    store(cp, j, c);
    store(hp, j, out);
    store(o, j, out);
}
simd_dispatch!(lstm_step, lstm_step_avx2, lstm_step_body, (h: usize, g: &mut [f32], rh: &[f32], bias: &[f32], hp: &mut [f32], cp: &mut [f32], ex: &mut [f32], o: &mut [f32]));

/// One chunk's share of a direction's forward: its blocks of the chunk-major buffers.
struct ForwardChunk<'a> {
    /// `x·W_ihᵀ` for its rows on entry, the activated gates on return (`[T·bc, G·H]`).
    gates: &'a mut [f32],
    extra: &'a mut [f32],
    states: &'a mut [f32],
    h0: Option<&'a [f32]>,
    c0: Option<&'a [f32]>,
}

/// Forward of one chunk through the whole sequence: one GEMM with `W_hh` and one fused
/// element-wise pass per step; returns the chunk's (h_n, c_n).
fn forward_chunk(
    n: Dims,
    w_hh_t: &StepProduct,
    bias: &Bias,
    reverse: bool,
    ch: ForwardChunk,
) -> (Vec<f32>, Vec<f32>) {
    let h = n.hidden;
    let gh_w = n.cell.gates() * h;
    let bc = ch.states.len() / (n.steps * h);
    let mut hp = ch.h0.map_or_else(|| vec![0.0; bc * h], <[f32]>::to_vec);
    let mut cp = ch.c0.map_or_else(|| vec![0.0; bc * h], <[f32]>::to_vec);
    let mut rh = vec![0.0f32; bc * gh_w];
    let mut scratch = Vec::new();
    for s in 0..n.steps {
        let t = step_time(s, n.steps, reverse);
        w_hh_t.apply(&hp, bc, &mut rh, &mut scratch);
        let rh = &rh[..];
        let g = &mut ch.gates[t * bc * gh_w..(t + 1) * bc * gh_w];
        let ex = &mut ch.extra[t * bc * h..(t + 1) * bc * h];
        let o = &mut ch.states[t * bc * h..(t + 1) * bc * h];
        match n.cell {
            RnnCell::Gru => gru_step(h, g, rh, &bias.x, &bias.hn, &mut hp, ex, o),
            RnnCell::Lstm => lstm_step(h, g, rh, &bias.x, &mut hp, &mut cp, ex, o),
        }
    }
    (hp, cp)
}

/// The per-step product `h·W_hhᵀ`. Over several steps `W_hhᵀ` is packed once for every step of
/// every chunk; a single step (generation's one token at a time) multiplies in place, as packing
/// the whole matrix for one product doubled a GRU token's time in wasm.
enum StepProduct<'a> {
    Packed(PackedMatrix),
    Once(ArrayView2<'a, f32>),
}

impl<'a> StepProduct<'a> {
    fn new(w_hh: ArrayView2<'a, f32>, steps: usize) -> StepProduct<'a> {
        if steps > 1 {
            let (gh_w, h) = w_hh.dim();
            StepProduct::Packed(PackedMatrix::new(h, gh_w, |r, c| w_hh[[c, r]]))
        } else {
            StepProduct::Once(w_hh)
        }
    }

    /// `out = hp·W_hhᵀ` for `rows` rows of `hp`.
    fn apply(&self, hp: &[f32], rows: usize, out: &mut [f32], scratch: &mut Vec<f32>) {
        match self {
            StepProduct::Packed(p) => p.matmul(hp, rows, None, out, scratch),
            StepProduct::Once(w) => {
                let (gh_w, h) = w.dim();
                let hv = ArrayView2::from_shape((rows, h), hp).expect("rows×H");
                let mut o =
                    ndarray::ArrayViewMut2::from_shape((rows, gh_w), out).expect("rows×G·H");
                gemm(1.0, &hv, &w.t(), 0.0, &mut o);
            }
        }
    }
}

/// Forward of one direction over the whole sequence. `xw`: `x·W_ihᵀ` for every step
/// (`[T·B, G·H]`, chunk-major rows), consumed as the gates' buffer; writes `h_t` into `out`
/// (`[T·B, width]`, time-major) at columns `col..col+H`; returns (h_n, c_n, cache).
#[allow(clippy::too_many_arguments)]
fn forward_direction(
    n: Dims,
    chunks: &Chunks,
    xw: Vec<f32>,
    w: &DirWeights,
    h0: Option<&[f32]>,
    c0: Option<&[f32]>,
    reverse: bool,
    out: &mut [f32],
    col: usize,
) -> (Vec<f32>, Vec<f32>, DirCache) {
    let (t_len, b, h) = (n.steps, n.batch, n.hidden);
    let gh_w = n.cell.gates() * h;
    let bias = Bias::new(n.cell, h, w);
    let w_hh_t = StepProduct::new(w.w_hh, t_len);
    let mut gates = xw;
    let mut extra = vec![0.0f32; t_len * b * h];
    let mut states = vec![0.0f32; t_len * b * h];
    let tasks: Vec<ForwardChunk> = chunks
        .split(&mut gates, gh_w)
        .into_iter()
        .zip(chunks.split(&mut extra, h))
        .zip(chunks.split(&mut states, h))
        .zip(&chunks.bounds)
        .map(|(((gates, extra), states), &bounds)| ForwardChunk {
            gates,
            extra,
            states,
            h0: batch_rows(h0, bounds, h),
            c0: batch_rows(c0, bounds, h),
        })
        .collect();
    let finals = run_tasks(n.parallel, tasks, |ch| {
        forward_chunk(n, &w_hh_t, &bias, reverse, ch)
    });
    let (mut h_n, mut c_n) = (Vec::with_capacity(b * h), Vec::with_capacity(b * h));
    for (hc, cc) in finals {
        h_n.extend(hc);
        c_n.extend(cc);
    }
    for (state, row) in states.chunks_exact(h).zip(chunks.time_major_rows()) {
        out[row * n.width + col..row * n.width + col + h].copy_from_slice(state);
    }
    (
        h_n,
        c_n,
        DirCache {
            gates,
            extra,
            states,
        },
    )
}

/// One GRU step's backward for `rows` rows: from the step's gates `g`, `W_hn h + b_hn` (`ex`), the
/// previous state `hp` and the incoming `∂h` (`dh`, plus the output's `go`), the gradients of the
/// pre-activations on the input side (`dgi`) and the hidden side (`dgh`: GRU's `n` differs), and
/// the direct part of `∂h_{t-1}` (`dp`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_back_body(
    h: usize,
    g: &[f32],
    ex: &[f32],
    hp: &[f32],
    dh: &[f32],
    go: &[f32],
    dgi: &mut [f32],
    dgh: &mut [f32],
    dp: &mut [f32],
) {
    for (((((((g, ex), hp), dh), go), dgi), dgh), dp) in g
        .chunks_exact(3 * h)
        .zip(ex.chunks_exact(h))
        .zip(hp.chunks_exact(h))
        .zip(dh.chunks_exact(h))
        .zip(go.chunks_exact(h))
        .zip(dgi.chunks_exact_mut(3 * h))
        .zip(dgh.chunks_exact_mut(3 * h))
        .zip(dp.chunks_exact_mut(h))
    {
        in_blocks!(h, [LANES], |j, N| gru_back_units::<N>(
            j, h, g, ex, hp, dh, go, dgi, dgh, dp
        ));
    }
}

/// Units `j..j + N` of one row of [`gru_back_body`], on arrays (see [`LANES`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_back_units<const N: usize>(
    j: usize,
    h: usize,
    g: &[f32],
    ex: &[f32],
    hp: &[f32],
    dh: &[f32],
    go: &[f32],
    dgi: &mut [f32],
    dgh: &mut [f32],
    dp: &mut [f32],
) {
    let (r, z, nn) = (
        load::<N>(g, j),
        load::<N>(g, h + j),
        load::<N>(g, 2 * h + j),
    );
    let (ghn, prev, dhj, goj) = (
        load::<N>(ex, j),
        load::<N>(hp, j),
        load::<N>(dh, j),
        load::<N>(go, j),
    );
    let (mut dr, mut dz, mut dn, mut dhn, mut direct) =
        ([0.0f32; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N]);
    for l in 0..N {
        let d = dhj[l] + goj[l];
        dn[l] = d * (1.0 - z[l]) * (1.0 - nn[l] * nn[l]);
        dz[l] = d * (prev[l] - nn[l]) * z[l] * (1.0 - z[l]);
        dr[l] = dn[l] * ghn[l] * r[l] * (1.0 - r[l]);
        dhn[l] = dn[l] * r[l];
        direct[l] = d * z[l];
    }
    store(dgi, j, dr);
    store(dgi, h + j, dz);
    store(dgi, 2 * h + j, dn);
    store(dgh, j, dr);
    store(dgh, h + j, dz);
    store(dgh, 2 * h + j, dhn);
    store(dp, j, direct);
}
simd_dispatch!(gru_back, gru_back_avx2, gru_back_body, (h: usize, g: &[f32], ex: &[f32], hp: &[f32], dh: &[f32], go: &[f32], dgi: &mut [f32], dgh: &mut [f32], dp: &mut [f32]));

/// One LSTM step's backward: `ex` the step's cell states, `cprev` the previous ones, `dc` the cell
/// state's gradient (updated to `∂c_{t-1}`); `dp` (the direct part of `∂h_{t-1}`) is zero.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_back_body(
    h: usize,
    g: &[f32],
    ex: &[f32],
    cprev: &[f32],
    dh: &[f32],
    go: &[f32],
    dgi: &mut [f32],
    dc: &mut [f32],
    dp: &mut [f32],
) {
    for (((((((g, ex), cprev), dh), go), dgi), dc), dp) in g
        .chunks_exact(4 * h)
        .zip(ex.chunks_exact(h))
        .zip(cprev.chunks_exact(h))
        .zip(dh.chunks_exact(h))
        .zip(go.chunks_exact(h))
        .zip(dgi.chunks_exact_mut(4 * h))
        .zip(dc.chunks_exact_mut(h))
        .zip(dp.chunks_exact_mut(h))
    {
        in_blocks!(h, [LANES], |j, N| lstm_back_units::<N>(
            j, h, g, ex, cprev, dh, go, dgi, dc, dp
        ));
    }
}

/// Units `j..j + N` of one row of [`lstm_back_body`], on arrays (see [`LANES`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_back_units<const N: usize>(
    j: usize,
    h: usize,
    g: &[f32],
    ex: &[f32],
    cprev: &[f32],
    dh: &[f32],
    go: &[f32],
    dgi: &mut [f32],
    dc: &mut [f32],
    dp: &mut [f32],
) {
    let (i, f, gg, o) = (
        load::<N>(g, j),
        load::<N>(g, h + j),
        load::<N>(g, 2 * h + j),
        load::<N>(g, 3 * h + j),
    );
    let (c, cp, dhj, goj, dcj) = (
        load::<N>(ex, j),
        load::<N>(cprev, j),
        load::<N>(dh, j),
        load::<N>(go, j),
        load::<N>(dc, j),
    );
    let (mut di, mut df, mut dg, mut dout, mut dcp) =
        ([0.0f32; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N]);
    for l in 0..N {
        let d = dhj[l] + goj[l];
        let tc = tanh(c[l]);
        let dcl = dcj[l] + d * o[l] * (1.0 - tc * tc);
        di[l] = dcl * gg[l] * i[l] * (1.0 - i[l]);
        df[l] = dcl * cp[l] * f[l] * (1.0 - f[l]);
        dg[l] = dcl * i[l] * (1.0 - gg[l] * gg[l]);
        dout[l] = d * tc * o[l] * (1.0 - o[l]);
        dcp[l] = dcl * f[l];
    }
    store(dgi, j, di);
    store(dgi, h + j, df);
    store(dgi, 2 * h + j, dg);
    store(dgi, 3 * h + j, dout);
    store(dc, j, dcp);
    store(dp, j, [0.0; N]);
}
simd_dispatch!(lstm_back, lstm_back_avx2, lstm_back_body, (h: usize, g: &[f32], ex: &[f32], cprev: &[f32], dh: &[f32], go: &[f32], dgi: &mut [f32], dc: &mut [f32], dp: &mut [f32]));

/// One chunk's share of a direction's backward: what its forward kept, and its blocks of the
/// chunk-major gradient buffers.
struct BackwardChunk<'a> {
    bounds: (usize, usize),
    gates: &'a [f32],
    extra: &'a [f32],
    states: &'a [f32],
    h0: Option<&'a [f32]>,
    c0: Option<&'a [f32]>,
    dh_n: &'a [f32],
    dc_n: &'a [f32],
    dgi: &'a mut [f32],
    /// GRU only (empty for LSTM, whose hidden-side gradients are `dgi`).
    dgh: &'a mut [f32],
    hprev: &'a mut [f32],
}

/// Backward through time of one chunk: per step one fused element-wise pass and one GEMM with
/// `W_hh` for `∂h_{t-1}`; fills the chunk's `dgi`, `dgh`, `hprev`; returns its (∂h0, ∂c0).
fn backward_chunk(
    n: Dims,
    w_hh: &PackedMatrix,
    reverse: bool,
    dout: &[f32],
    col: usize,
    ch: BackwardChunk,
) -> (Vec<f32>, Vec<f32>) {
    let (t_len, h) = (n.steps, n.hidden);
    let gh_w = n.cell.gates() * h;
    let gru = n.cell == RnnCell::Gru;
    let (b0, b1) = ch.bounds;
    let bc = b1 - b0;
    let mut dh = ch.dh_n.to_vec();
    let mut dc = ch.dc_n.to_vec();
    let mut dh_prev = vec![0.0f32; bc * h];
    let mut direct = vec![0.0f32; bc * h];
    let mut scratch = Vec::new();
    let mut go = vec![0.0f32; bc * h];
    let zeros = vec![0.0f32; bc * h];
    let step = |t: usize| t * bc * h..(t + 1) * bc * h;
    for s in (0..t_len).rev() {
        let t = step_time(s, t_len, reverse);
        let prev = (s > 0).then(|| step_time(s - 1, t_len, reverse));
        // the previous state (and LSTM's previous cell state)
        let hp: &[f32] = match prev {
            Some(p) => &ch.states[step(p)],
            None => ch.h0.unwrap_or(&zeros),
        };
        ch.hprev[step(t)].copy_from_slice(hp);
        for (i, bi) in (b0..b1).enumerate() {
            let at = (t * n.batch + bi) * n.width + col;
            go[i * h..(i + 1) * h].copy_from_slice(&dout[at..at + h]);
        }
        let g = &ch.gates[t * bc * gh_w..(t + 1) * bc * gh_w];
        let ex = &ch.extra[step(t)];
        let dgi = &mut ch.dgi[t * bc * gh_w..(t + 1) * bc * gh_w];
        if gru {
            let dgh = &mut ch.dgh[t * bc * gh_w..(t + 1) * bc * gh_w];
            gru_back(h, g, ex, hp, &dh, &go, dgi, dgh, &mut direct);
        } else {
            let cprev: &[f32] = match prev {
                Some(p) => &ch.extra[step(p)],
                None => ch.c0.unwrap_or(&zeros),
            };
            lstm_back(h, g, ex, cprev, &dh, &go, dgi, &mut dc, &mut direct);
        }
        // ∂h_{t-1} = ∂(hidden-side pre-activations) · W_hh + the direct part
        let src: &[f32] = if gru {
            &ch.dgh[t * bc * gh_w..(t + 1) * bc * gh_w]
        } else {
            &ch.dgi[t * bc * gh_w..(t + 1) * bc * gh_w]
        };
        w_hh.matmul(src, bc, Some(&direct), &mut dh_prev, &mut scratch);
        std::mem::swap(&mut dh, &mut dh_prev);
    }
    (dh, dc)
}

/// The step order of a direction.
fn step_time(s: usize, steps: usize, reverse: bool) -> usize {
    if reverse {
        steps - 1 - s
    } else {
        s
    }
}

/// One direction's gradients.
struct DirGrads {
    w_ih: Array2<f32>,
    w_hh: Array2<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
}

/// Backward through time of one direction. `xp`: the input in chunk-major rows; `dout`: the
/// output's gradient `[T·B, width]` (time-major); `dh_n`, `dc_n`: the final states' gradients
/// `[B·H]`. Adds this direction's `∂x` (chunk-major rows) into `dxp`.
#[allow(clippy::too_many_arguments)]
fn backward_direction(
    n: Dims,
    chunks: &Chunks,
    xp: &ArrayView2<f32>,
    w: &DirWeights,
    h0: Option<&[f32]>,
    c0: Option<&[f32]>,
    reverse: bool,
    col: usize,
    cache: &DirCache,
    dout: &[f32],
    dh_n: &[f32],
    dc_n: &[f32],
    dxp: Option<&mut Array2<f32>>,
) -> DirGrads {
    let (t_len, b, h) = (n.steps, n.batch, n.hidden);
    let gh_w = n.cell.gates() * h;
    let gru = n.cell == RnnCell::Gru;
    // gradients of the gates' pre-activations: from the input side, and (GRU's n differs) the hidden side
    let mut dgi = vec![0.0f32; t_len * b * gh_w];
    let mut dgh = if gru {
        vec![0.0f32; t_len * b * gh_w]
    } else {
        Vec::new()
    };
    // every step's previous hidden state, for ∂W_hh = Σ_t dghᵀ · h_{t-1}
    let mut hprev = vec![0.0f32; t_len * b * h];
    let mut dgh_parts = if gru {
        chunks.split(&mut dgh, gh_w)
    } else {
        chunks.bounds.iter().map(|_| Default::default()).collect()
    };
    let tasks: Vec<BackwardChunk> = chunks
        .split(&mut dgi, gh_w)
        .into_iter()
        .zip(dgh_parts.drain(..))
        .zip(chunks.split(&mut hprev, h))
        .zip(chunks.blocks(&cache.gates, gh_w))
        .zip(chunks.blocks(&cache.extra, h))
        .zip(chunks.blocks(&cache.states, h))
        .zip(&chunks.bounds)
        .map(
            |((((((dgi, dgh), hprev), gates), extra), states), &bounds)| BackwardChunk {
                bounds,
                gates,
                extra,
                states,
                h0: batch_rows(h0, bounds, h),
                c0: batch_rows(c0, bounds, h),
                dh_n: &dh_n[bounds.0 * h..bounds.1 * h],
                dc_n: &dc_n[bounds.0 * h..bounds.1 * h],
                dgi,
                dgh,
                hprev,
            },
        )
        .collect();
    // W_hh packed once for every step of every chunk
    let w_hh = PackedMatrix::new(gh_w, h, |r, c| w.w_hh[[r, c]]);
    let firsts = run_tasks(n.parallel, tasks, |ch| {
        backward_chunk(n, &w_hh, reverse, dout, col, ch)
    });
    let (mut dh0, mut dc0) = (Vec::with_capacity(b * h), Vec::with_capacity(b * h));
    for (dh, dc) in firsts {
        dh0.extend(dh);
        dc0.extend(dc);
    }
    let dgi_v = ArrayView2::from_shape((t_len * b, gh_w), &dgi).expect("TB×G");
    let dgh_v = if gru {
        ArrayView2::from_shape((t_len * b, gh_w), &dgh).expect("TB×G")
    } else {
        dgi_v
    };
    let hprev_v = ArrayView2::from_shape((t_len * b, h), &hprev).expect("TB×H");
    let mut w_ih = Array2::zeros(w.w_ih.raw_dim());
    gemm(1.0, &dgi_v.t(), xp, 0.0, &mut w_ih.view_mut());
    let mut w_hh = Array2::zeros(w.w_hh.raw_dim());
    gemm(1.0, &dgh_v.t(), &hprev_v, 0.0, &mut w_hh.view_mut());
    if let Some(dxp) = dxp {
        gemm(1.0, &dgi_v, &w.w_ih, 1.0, &mut dxp.view_mut());
    }
    DirGrads {
        w_ih,
        w_hh,
        b_ih: dgi_v.sum_axis(Axis(0)).to_vec(),
        b_hh: dgh_v.sum_axis(Axis(0)).to_vec(),
        h0: dh0,
        c0: dc0,
    }
}

/// The index of each input of a layer node on the tape: `[x, h0?, c0?, weights…]`.
#[derive(Clone, Copy)]
struct Slots {
    h0: Option<usize>,
    c0: Option<usize>,
    weights: usize,
    per_dir: usize,
}

impl Slots {
    fn dir<'a>(&self, get: &impl Fn(usize) -> &'a Tensor, d: usize) -> DirWeights<'a> {
        let base = self.weights + d * self.per_dir;
        DirWeights {
            w_ih: view2(get(base)),
            w_hh: view2(get(base + 1)),
            b_ih: (self.per_dir == 4).then(|| get(base + 2).as_slice().expect("contiguous bias")),
            b_hh: (self.per_dir == 4).then(|| get(base + 3).as_slice().expect("contiguous bias")),
        }
    }
}

/// Direction `d`'s rows (`len` values) of an initial state `[D, B, H]`.
fn dir_part(s: &Option<Tensor>, d: usize, len: usize) -> Option<&[f32]> {
    s.as_ref()
        .map(|s| &s.as_slice().expect("standard")[d * len..(d + 1) * len])
}

/// `t` in row-major order, borrowed when it already is (no copy on the common path).
fn standard(t: &Tensor) -> ndarray::CowArray<'_, f32, IxDyn> {
    t.as_standard_layout()
}

impl Tape {
    /// A GRU or LSTM over a whole sequence, as PyTorch's `nn.GRU` / `nn.LSTM` compute it.
    ///
    /// `weights` are the parameters in [`RnnConfig::weights`] order (PyTorch's state-dict order:
    /// `weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_ih_l0_reverse, …`); `h0` (and for
    /// LSTM `c0`) the initial states, zeros when `None`. Dropout between layers acts only on a
    /// training tape. Every input may be a constant (inference) or want a gradient (training).
    ///
    /// # Shapes
    /// `x: [batch, seq, input_size]` (`batch_first`) or `[seq, batch, input_size]`;
    /// `h0, c0: [num_layers · D, batch, hidden]` → [`RnnOutput`].
    ///
    /// ```
    /// use kiln_core::autograd::{RnnCell, RnnConfig};
    /// use kiln_core::{Tape, Tensor};
    ///
    /// let cfg = RnnConfig {
    ///     cell: RnnCell::Gru, input_size: 3, hidden_size: 4, num_layers: 1, bias: true,
    ///     batch_first: true, dropout: 0.0, bidirectional: true,
    /// };
    /// let mut t = Tape::inference();
    /// let weights: Vec<_> = cfg.weights().into_iter()          // weight_ih_l0 [12, 3], …, bias_hh_l0_reverse [12]
    ///     .map(|(_, shape)| t.constant(Tensor::from_elem(shape, 0.1)))
    ///     .collect();
    /// let x = t.constant(Tensor::zeros(vec![2, 5, 3]));        // [batch, seq, input_size]
    /// let out = t.rnn(&cfg, x, &weights, None, None).unwrap();
    /// assert_eq!(t.shape(out.output), [2, 5, 8]);              // both directions' states, per step
    /// assert_eq!(t.shape(out.h_n), [2, 2, 4]);                 // [num_layers · 2, batch, hidden]
    /// ```
    pub fn rnn(
        &mut self,
        cfg: &RnnConfig,
        x: Var,
        weights: &[Var],
        h0: Option<Var>,
        c0: Option<Var>,
    ) -> Result<RnnOutput> {
        cfg.check()?;
        let name = cfg.cell.name();
        let sx = self.shape(x).to_vec();
        let layout = if cfg.batch_first {
            "[batch, seq, input_size] (batch_first=True)"
        } else {
            "[seq, batch, input_size] (batch_first=False)"
        };
        if sx.len() != 3 || sx[2] != cfg.input_size {
            shape_err!(
                "{name}: expects input {layout} with input_size {}, got shape {sx:?}",
                cfg.input_size
            );
        }
        let batch = if cfg.batch_first { sx[0] } else { sx[1] };
        if sx[0] == 0 || sx[1] == 0 {
            shape_err!("{name}: the input {sx:?} has no steps or no samples");
        }
        let expected = cfg.weights();
        if weights.len() != expected.len() {
            value_err!(
                "{name}: takes {} weight tensors ({}), got {}",
                expected.len(),
                expected
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                weights.len()
            );
        }
        for ((wname, shape), &w) in expected.iter().zip(weights) {
            if self.shape(w) != shape.as_slice() {
                shape_err!(
                    "{name}: {wname} has shape {:?}, expected {shape:?}",
                    self.shape(w)
                );
            }
        }
        let dirs = cfg.directions();
        let state_shape = [cfg.num_layers * dirs, batch, cfg.hidden_size];
        for (what, s) in [("h0", h0), ("c0", c0)] {
            if let Some(s) = s {
                if self.shape(s) != state_shape {
                    shape_err!(
                        "{name}: the initial state {what} has shape {:?}, expected {state_shape:?} (num_layers · directions, batch, hidden_size)",
                        self.shape(s)
                    );
                }
            }
        }
        if c0.is_some() && cfg.cell == RnnCell::Gru {
            value_err!("GRU: takes one initial state h0 (an LSTM takes (h0, c0))");
        }
        let mut seq = if cfg.batch_first {
            self.permute(x, &[1, 0, 2])?
        } else {
            x
        };
        let per_layer = weights.len() / cfg.num_layers;
        let (mut hs, mut cs) = (Vec::new(), Vec::new());
        for l in 0..cfg.num_layers {
            if l > 0 {
                seq = self.dropout(seq, cfg.dropout)?;
            }
            let take = |t: &mut Tape, s: Option<Var>| -> Result<Option<Var>> {
                match s {
                    Some(s) if cfg.num_layers > 1 => {
                        Ok(Some(t.slice(s, 0, l * dirs, (l + 1) * dirs)?))
                    }
                    other => Ok(other),
                }
            };
            let (h0l, c0l) = (take(self, h0)?, take(self, c0)?);
            let ws = &weights[l * per_layer..(l + 1) * per_layer];
            let (o, h, c) = self.rnn_layer(cfg.cell, cfg.hidden_size, dirs, seq, ws, h0l, c0l);
            seq = o;
            hs.push(h);
            cs.extend(c);
        }
        let join = |t: &mut Tape, v: Vec<Var>| -> Result<Var> {
            if v.len() == 1 {
                Ok(v[0])
            } else {
                t.concat(&v, 0)
            }
        };
        let output = if cfg.batch_first {
            self.permute(seq, &[1, 0, 2])?
        } else {
            seq
        };
        let h_n = join(self, hs)?;
        let c_n = if cs.is_empty() {
            None
        } else {
            Some(join(self, cs)?)
        };
        Ok(RnnOutput { output, h_n, c_n })
    }

    /// One layer, every direction, time-major: `x: [T, B, I]` → (`[T, B, D·H]`, h_n `[D, B, H]`,
    /// c_n). Shapes are checked by [`Tape::rnn`].
    #[allow(clippy::too_many_arguments)]
    fn rnn_layer(
        &mut self,
        cell: RnnCell,
        hidden: usize,
        dirs: usize,
        x: Var,
        ws: &[Var],
        h0: Option<Var>,
        c0: Option<Var>,
    ) -> (Var, Var, Option<Var>) {
        let mut inputs = vec![x];
        let slot = |v: Option<Var>, inputs: &mut Vec<Var>| {
            v.map(|v| {
                inputs.push(v);
                inputs.len() - 1
            })
        };
        let (h0, c0) = (slot(h0, &mut inputs), slot(c0, &mut inputs));
        let slots = Slots {
            h0,
            c0,
            weights: inputs.len(),
            per_dir: ws.len() / dirs,
        };
        inputs.extend(ws);
        let xs = standard(self.value(x));
        let (t_len, b, i_size) = (xs.shape()[0], xs.shape()[1], xs.shape()[2]);
        let n = Dims {
            cell,
            steps: t_len,
            batch: b,
            hidden,
            width: dirs * hidden,
            parallel: self.parallel_ops,
        };
        let x2 = ArrayView2::from_shape((t_len * b, i_size), xs.as_slice().expect("standard"))
            .expect("T·B×I");
        let states: Vec<Option<Tensor>> = [slots.h0, slots.c0]
            .iter()
            .map(|s| s.map(|k| standard(self.value(inputs[k])).into_owned()))
            .collect();
        let chunks = Chunks::new(t_len, b);
        let xp = chunks.gather(&x2);
        let mut out = vec![0.0f32; t_len * b * n.width];
        let mut h_n = Vec::with_capacity(dirs * b * hidden);
        let mut c_n = Vec::with_capacity(dirs * b * hidden);
        let mut caches = Vec::with_capacity(dirs);
        {
            let get = |k: usize| self.value(inputs[k]);
            for d in 0..dirs {
                let w = slots.dir(&get, d);
                let part = |s| dir_part(s, d, b * hidden);
                // the input projection of every step at once: the gates' buffer
                let mut xw = Array2::<f32>::zeros((t_len * b, cell.gates() * hidden));
                gemm(1.0, &xp.view(), &w.w_ih.t(), 0.0, &mut xw.view_mut());
                let (h, c, cache) = forward_direction(
                    n,
                    &chunks,
                    xw.into_raw_vec_and_offset().0,
                    &w,
                    part(&states[0]),
                    part(&states[1]),
                    d == 1,
                    &mut out,
                    d * hidden,
                );
                h_n.extend(h);
                c_n.extend(c);
                caches.push(cache);
            }
        }
        let state =
            |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[dirs, b, hidden]), v).expect("D×B×H");
        let mut values = vec![
            ArrayD::from_shape_vec(IxDyn(&[t_len, b, n.width]), out).expect("T×B×DH"),
            state(h_n),
        ];
        if cell == RnnCell::Lstm {
            values.push(state(c_n));
        }
        let vars = self.push_multi(values, &inputs, move |c, _, grads| {
            rnn_layer_backward(c, n, dirs, slots, &caches, grads)
        });
        (vars[0], vars[1], vars.get(2).copied())
    }
}

/// Backward of one layer node: every direction through time, gradients in the node's input order.
fn rnn_layer_backward<'a>(
    c: &super::tape::BackwardCtx,
    n: Dims,
    dirs: usize,
    slots: Slots,
    caches: &[DirCache],
    grads: &[ArrayViewD<'a, f32>],
) -> Vec<Option<Tensor>> {
    let (t_len, b, h) = (n.steps, n.batch, n.hidden);
    let xs = standard(c.input(0));
    let i_size = xs.shape()[2];
    let x2 = ArrayView2::from_shape((t_len * b, i_size), xs.as_slice().expect("standard"))
        .expect("T·B×I");
    let states: Vec<Option<Tensor>> = [slots.h0, slots.c0]
        .iter()
        .map(|s| s.map(|k| standard(c.input(k)).into_owned()))
        .collect();
    let chunks = Chunks::new(t_len, b);
    let xp = chunks.gather(&x2);
    let part = |v: &ArrayViewD<'a, f32>| v.to_slice().expect("packed parts are contiguous");
    let dout = part(&grads[0]);
    let dh_n = part(&grads[1]);
    let no_dc = vec![0.0; if grads.len() > 2 { 0 } else { dirs * b * h }];
    let dc_n = if grads.len() > 2 {
        part(&grads[2])
    } else {
        &no_dc
    };
    // ∂x in chunk-major rows, every direction's share summed
    let mut dxp = c
        .needs(0)
        .then(|| Array2::<f32>::zeros((t_len * b, i_size)));
    let mut result: Vec<Option<Tensor>> = vec![None; c.inputs_len()];
    let (mut dh0, mut dc0) = (Vec::new(), Vec::new());
    let get = |k: usize| c.input(k);
    for (d, cache) in caches.iter().enumerate().take(dirs) {
        let w = slots.dir(&get, d);
        let part = |s| dir_part(s, d, b * h);
        let g = backward_direction(
            n,
            &chunks,
            &xp.view(),
            &w,
            part(&states[0]),
            part(&states[1]),
            d == 1,
            d * h,
            cache,
            dout,
            &dh_n[d * b * h..(d + 1) * b * h],
            &dc_n[d * b * h..(d + 1) * b * h],
            dxp.as_mut(),
        );
        let base = slots.weights + d * slots.per_dir;
        result[base] = Some(g.w_ih.into_dyn());
        result[base + 1] = Some(g.w_hh.into_dyn());
        if slots.per_dir == 4 {
            let gh_w = n.cell.gates() * h;
            result[base + 2] = Some(ArrayD::from_shape_vec(IxDyn(&[gh_w]), g.b_ih).expect("G"));
            result[base + 3] = Some(ArrayD::from_shape_vec(IxDyn(&[gh_w]), g.b_hh).expect("G"));
        }
        dh0.extend(g.h0);
        dc0.extend(g.c0);
    }
    result[0] = dxp.map(|dxp| {
        let dx = if chunks.single() {
            dxp
        } else {
            let mut dx = Array2::<f32>::zeros((t_len * b, i_size));
            for (row, &to) in dxp.rows().into_iter().zip(&chunks.time_major_rows()) {
                dx.row_mut(to).assign(&row);
            }
            dx
        };
        dx.into_shape_with_order(IxDyn(&[t_len, b, i_size]))
            .expect("T×B×I")
    });
    let state = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[dirs, b, h]), v).expect("D×B×H");
    if let Some(k) = slots.h0 {
        result[k] = Some(state(dh0));
    }
    if let Some(k) = slots.c0 {
        result[k] = Some(state(dc0));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check;
    use super::*;

    fn cfg(cell: RnnCell, layers: usize, bidirectional: bool, batch_first: bool) -> RnnConfig {
        RnnConfig {
            cell,
            input_size: 3,
            hidden_size: 2,
            num_layers: layers,
            bias: true,
            batch_first,
            dropout: 0.0,
            bidirectional,
        }
    }

    /// Every output (sequence, h_n, c_n) in one tensor, so the check covers the gradients of each.
    fn all_outputs(t: &mut Tape, cfg: &RnnConfig, v: &[Var], states: usize) -> Var {
        let nw = cfg.weights().len();
        let (h0, c0) = match states {
            0 => (None, None),
            1 => (Some(v[1 + nw]), None),
            _ => (Some(v[1 + nw]), Some(v[2 + nw])),
        };
        let o = t.rnn(cfg, v[0], &v[1..1 + nw], h0, c0).unwrap();
        let mut parts = vec![t
            .reshape(o.output, &[t.shape(o.output).iter().product()])
            .unwrap()];
        for s in [Some(o.h_n), o.c_n].into_iter().flatten() {
            let n = t.shape(s).iter().product();
            parts.push(t.reshape(s, &[n]).unwrap());
        }
        t.concat(&parts, 0).unwrap()
    }

    fn shapes(cfg: &RnnConfig, x: &[usize], states: usize) -> Vec<Vec<usize>> {
        let mut s = vec![x.to_vec()];
        s.extend(cfg.weights().into_iter().map(|(_, s)| s));
        let batch = if cfg.batch_first { x[0] } else { x[1] };
        for _ in 0..states {
            s.push(vec![
                cfg.num_layers * cfg.directions(),
                batch,
                cfg.hidden_size,
            ]);
        }
        s
    }

    fn gradcheck(cfg: RnnConfig, x: &[usize], states: usize) {
        let s = shapes(&cfg, x, states);
        let refs: Vec<&[usize]> = s.iter().map(Vec::as_slice).collect();
        check(&refs, |t, v| all_outputs(t, &cfg, v, states));
    }

    #[test]
    fn gru_gradients_one_layer_and_stacked_bidirectional() {
        gradcheck(cfg(RnnCell::Gru, 1, false, false), &[4, 2, 3], 0);
        gradcheck(cfg(RnnCell::Gru, 2, true, true), &[2, 3, 3], 1);
    }

    #[test]
    fn lstm_gradients_one_layer_and_stacked_bidirectional() {
        gradcheck(cfg(RnnCell::Lstm, 1, false, true), &[2, 4, 3], 0);
        gradcheck(cfg(RnnCell::Lstm, 2, true, false), &[3, 2, 3], 2);
    }

    #[test]
    fn gradients_of_a_single_step_which_multiplies_without_packing() {
        // one time step: `StepProduct::Once`, the product generation takes per token
        gradcheck(cfg(RnnCell::Gru, 2, true, true), &[2, 1, 3], 1);
        gradcheck(cfg(RnnCell::Lstm, 1, false, false), &[1, 3, 3], 2);
    }

    #[test]
    fn gradients_through_the_gate_loops_blocks_and_tail() {
        // 10 hidden units: one block of LANES (8) and two units one by one, in every gate loop
        for cell in [RnnCell::Gru, RnnCell::Lstm] {
            let mut c = cfg(cell, 1, true, true);
            c.hidden_size = 10;
            gradcheck(c, &[2, 3, 3], if cell == RnnCell::Gru { 1 } else { 2 });
        }
    }

    #[test]
    fn gradients_through_a_batch_split_into_chunks() {
        // 9 rows: chunks of 4 and 5 (see `Chunks`), every gradient across both
        assert_eq!(Chunks::new(3, 9).bounds, [(0, 4), (4, 9)]);
        gradcheck(cfg(RnnCell::Gru, 2, true, true), &[9, 3, 3], 1);
        gradcheck(cfg(RnnCell::Lstm, 1, true, false), &[3, 9, 3], 2);
    }

    #[test]
    fn a_chunked_batch_matches_its_rows_run_one_by_one() {
        for cell in [RnnCell::Gru, RnnCell::Lstm] {
            let mut c = cfg(cell, 1, true, true);
            c.hidden_size = 5;
            let s = shapes(&c, &[10, 4, 3], 0);
            let refs: Vec<&[usize]> = s.iter().map(Vec::as_slice).collect();
            let values = super::super::gradcheck::random_inputs(&refs, 7);
            let run = |x: Tensor| {
                let mut t = Tape::inference();
                let x = t.constant(x);
                let ws: Vec<Var> = values[1..].iter().map(|w| t.constant(w.clone())).collect();
                let o = t.rnn(&c, x, &ws, None, None).unwrap();
                (t.value(o.output).clone(), t.value(o.h_n).clone())
            };
            let (all, all_h) = run(values[0].clone());
            for i in 0..10 {
                let (one, one_h) = run(values[0].slice_axis(Axis(0), (i..i + 1).into()).to_owned());
                let row = all.slice_axis(Axis(0), (i..i + 1).into());
                let h = all_h.slice_axis(Axis(1), (i..i + 1).into());
                assert!(
                    (&row - &one).iter().all(|d| d.abs() < 1e-6),
                    "{cell:?} row {i}"
                );
                assert!(
                    (&h - &one_h).iter().all(|d| d.abs() < 1e-6),
                    "{cell:?} h_n {i}"
                );
            }
        }
    }

    #[test]
    fn gru_without_bias_and_its_last_step_matches_a_hand_computed_cell() {
        let mut c = cfg(RnnCell::Gru, 1, false, true);
        c.bias = false;
        c.input_size = 1;
        c.hidden_size = 1;
        let mut t = Tape::inference();
        let x = t.constant(Tensor::from_elem(IxDyn(&[1, 1, 1]), 1.0));
        let w_ih =
            t.constant(ArrayD::from_shape_vec(IxDyn(&[3, 1]), vec![0.5, -0.5, 1.0]).unwrap());
        let w_hh = t.constant(Tensor::zeros(IxDyn(&[3, 1])));
        let o = t.rnn(&c, x, &[w_ih, w_hh], None, None).unwrap();
        // h0 = 0: n = tanh(1), z = σ(-0.5), h = (1 - z) n
        let z = 1.0 / (1.0 + 0.5f32.exp());
        let want = (1.0 - z) * 1.0f32.tanh();
        assert!((t.value(o.h_n)[[0, 0, 0]] - want).abs() < 1e-6);
        assert_eq!(t.value(o.output)[[0, 0, 0]], t.value(o.h_n)[[0, 0, 0]]);
    }

    #[test]
    fn dropout_between_layers_acts_in_training_only() {
        let mut c = cfg(RnnCell::Lstm, 2, false, true);
        c.dropout = 0.5;
        let run = |training: bool, dropout: f32| {
            let mut c = c.clone();
            c.dropout = dropout;
            let mut t = Tape::new(training, 1);
            let s = shapes(&c, &[2, 4, 3], 0);
            let vars: Vec<Var> = super::super::gradcheck::random_inputs(
                &s.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                3,
            )
            .into_iter()
            .map(|v| t.constant(v))
            .collect();
            let o = t.rnn(&c, vars[0], &vars[1..], None, None).unwrap();
            t.value(o.output).clone()
        };
        assert_eq!(run(false, 0.5), run(false, 0.0));
        assert_eq!(run(true, 0.0), run(false, 0.0));
        assert_ne!(run(true, 0.5), run(false, 0.5));
    }

    #[test]
    fn onnx_gate_blocks_round_trip() {
        for cell in [RnnCell::Gru, RnnCell::Lstm] {
            let g = cell.gates();
            let w = Tensor::from_shape_fn(IxDyn(&[g * 2, 3]), |ix| (ix[0] * 10 + ix[1]) as f32);
            let onnx = cell.to_onnx_gates(&w);
            // GRU: ONNX block 0 is z, PyTorch's block 1; LSTM: ONNX block 1 is o, PyTorch's block 3
            let first = if cell == RnnCell::Gru { 1 } else { 0 };
            assert_eq!(onnx[[0, 0]], w[[first * 2, 0]]);
            if cell == RnnCell::Lstm {
                assert_eq!(onnx[[2, 1]], w[[6, 1]]);
            }
            assert_eq!(cell.from_onnx_gates(&onnx), w);
        }
    }

    #[test]
    fn bad_shapes_are_named() {
        let c = cfg(RnnCell::Gru, 1, false, true);
        let mut t = Tape::inference();
        let ws: Vec<Var> = c
            .weights()
            .into_iter()
            .map(|(_, s)| t.constant(Tensor::zeros(IxDyn(&s))))
            .collect();
        let x = t.constant(Tensor::zeros(IxDyn(&[2, 5, 4])));
        let e = t.rnn(&c, x, &ws, None, None).unwrap_err().to_string();
        assert!(e.contains("input_size 3") && e.contains("[2, 5, 4]"), "{e}");
        let x = t.constant(Tensor::zeros(IxDyn(&[2, 5, 3])));
        let h0 = t.constant(Tensor::zeros(IxDyn(&[1, 3, 2])));
        let e = t.rnn(&c, x, &ws, Some(h0), None).unwrap_err().to_string();
        assert!(e.contains("h0") && e.contains("[1, 2, 2]"), "{e}");
        let e = t.rnn(&c, x, &ws[..2], None, None).unwrap_err().to_string();
        assert!(e.contains("bias_ih_l0"), "{e}");
    }
}
