//! [`Windowed`]: a [`Step`] for models without state, rerun on the (windowed) prefix for every
//! token, with the one rule for how a prefix becomes a model input and logits come back — for
//! kiln's `Model`, kiln's ONNX engine and `InferenceSession` alike.
//!
//! - A model whose input is `[batch, T]` with `T` fixed sees the last `T` ids. A shorter prefix
//!   is padded with [`PAD`]: on the left for a model with one output row (`[1, vocab]`, the next
//!   token after the window: what [`Tokenizer::windows`](super::Tokenizer::windows) trains), on
//!   the right for one with a row per position (`[1, T, vocab]`, read at the last real id).
//! - A model whose `T` is free sees the last [`MAX_CONTEXT`] ids, unpadded.

use ndarray::{ArrayD, IxDyn};

use super::{Step, PAD};
use crate::{shape_err, value_err, KilnError, Result};

/// The longest prefix a model with a free sequence length is given.
pub const MAX_CONTEXT: usize = 1024;

/// How much of the prefix a model sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Exactly this many ids (padded when the prefix is shorter).
    Fixed(usize),
    /// The last [`MAX_CONTEXT`] ids, as many as there are.
    Free,
}

/// Where a model's logits for the next token are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[1, vocab]`: one row, the token after the window.
    Last,
    /// `[1, T, vocab]`: a row per position; the one at the last real id.
    PerPosition,
}

impl Layout {
    /// The layout of an output of rank `rank`, if it is one.
    pub fn of_rank(rank: usize) -> Option<Layout> {
        match rank {
            2 => Some(Layout::Last),
            3 => Some(Layout::PerPosition),
            _ => None,
        }
    }
}

/// The model's run: ids `[1, len]` in, its first output's values and dims out.
pub type Run<'a> = Box<dyn FnMut(ArrayD<i64>) -> Result<(Vec<f32>, Vec<usize>)> + 'a>;

/// A stateless model rerun on the prefix for every token.
pub struct Windowed<'a> {
    run: Run<'a>,
    window: Window,
    layout: Option<Layout>,
    history: Vec<u32>,
}

impl<'a> Windowed<'a> {
    /// `run` under `window`; `layout` when the output's rank is known up front (else the first
    /// run tells, and a short prefix is rerun right-padded for a `[1, T, vocab]` output).
    pub fn new(window: Window, layout: Option<Layout>, run: Run<'a>) -> Self {
        Windowed {
            run,
            window,
            layout,
            history: Vec::new(),
        }
    }

    /// For a model with one input of dims `[batch, T]` (`None` where free) and a first output of
    /// rank `output_rank` when known: what an ONNX file declares.
    pub fn for_dims(
        dims: &[Option<usize>],
        output_rank: Option<usize>,
        run: Run<'a>,
    ) -> Result<Self> {
        let window = match dims {
            [None | Some(1), Some(0)] => value_err!("generate: the model's input has no room for a token (dims [_, 0])"),
            [None | Some(1), Some(t)] => Window::Fixed(*t),
            [None | Some(1), None] => Window::Free,
            _ => shape_err!(
                "generate: the model's input has dims {dims:?}; generation feeds it one sequence of \
                 token ids, [1, time]"
            ),
        };
        if let Some(r) = output_rank {
            if Layout::of_rank(r).is_none() {
                shape_err!(
                    "generate: the model's first output has rank {r}; generation reads logits \
                     [batch, vocab] or [batch, time, vocab]"
                );
            }
        }
        Ok(Self::new(
            window,
            output_rank.and_then(Layout::of_rank),
            run,
        ))
    }

    fn ids(ctx: &[u32], len: usize, left: bool) -> ArrayD<i64> {
        let pads = std::iter::repeat_n(PAD as i64, len - ctx.len());
        let ids = ctx.iter().map(|&v| v as i64);
        let v: Vec<i64> = if left {
            pads.chain(ids).collect()
        } else {
            ids.chain(pads).collect()
        };
        ArrayD::from_shape_vec(IxDyn(&[1, len]), v).expect("sized")
    }

    fn logits(&mut self) -> Result<Vec<f32>> {
        let cap = match self.window {
            Window::Fixed(t) => t,
            Window::Free => MAX_CONTEXT,
        };
        let ctx = &self.history[self.history.len().saturating_sub(cap)..];
        let len = match self.window {
            Window::Fixed(t) => t,
            Window::Free => ctx.len(),
        };
        let short = ctx.len() < len;
        let right = short && self.layout == Some(Layout::PerPosition);
        let (mut out, mut dims) = (self.run)(Self::ids(ctx, len, !right))?;
        let layout = Layout::of_rank(dims.len()).ok_or_else(|| {
            KilnError::shape(format!(
                "generate: the model's output of shape {dims:?} is neither [1, vocab] nor [1, time, vocab]"
            ))
        })?;
        let right = if self.layout.is_none() && layout == Layout::PerPosition && short {
            (out, dims) = (self.run)(Self::ids(ctx, len, false))?;
            true
        } else {
            right
        };
        self.layout = Some(layout);
        let ok = dims.first() == Some(&1) && dims.iter().product::<usize>() == out.len();
        let per_position = dims.len() == 3 && dims[1] == len;
        if !ok || (layout == Layout::PerPosition && !per_position) {
            shape_err!("generate: the model turned ids [1, {len}] into an output of shape {dims:?}; expected [1, vocab] or [1, {len}, vocab]");
        }
        Ok(match layout {
            Layout::Last => out,
            Layout::PerPosition => {
                let v = dims[2];
                let at = if right { ctx.len() - 1 } else { len - 1 };
                out[at * v..(at + 1) * v].to_vec()
            }
        })
    }

    /// For kiln's own `Model` (its traced graph on the tape, in evaluation mode): one input of
    /// per-sample shape `[T]`, ids fed as the whole numbers it was trained on.
    pub fn for_model(model: &'a mut crate::Model) -> Result<Self> {
        let shapes = model.input_shapes();
        let t = match shapes.as_slice() {
            [Some(s)] if s.len() == 1 && s[0] > 0 => s[0],
            [None] | [] => value_err!(
                "generate: the model has not seen data yet, so its window is unknown: train it \
                 (or call it) on token ids [batch, time] first"
            ),
            [Some(s)] => shape_err!(
                "generate: the model takes samples of shape {s:?}; a language model takes token \
                 ids [batch, time]"
            ),
            _ => value_err!(
                "generate: the model takes {} inputs; generation feeds one, the token ids",
                shapes.len()
            ),
        };
        let run: Run<'a> = Box::new(move |ids: ArrayD<i64>| {
            let x = ids.mapv(|v| v as f32);
            let out = model.predict(x.view(), 1)?;
            Ok((out.iter().copied().collect(), out.shape().to_vec()))
        });
        Ok(Self::new(Window::Fixed(t), None, run))
    }

    /// For a model on kiln's ONNX engine.
    #[cfg(feature = "export")]
    pub fn for_engine<E>(session: E) -> Result<Self>
    where
        E: std::ops::Deref<Target = crate::onnx::engine::KilnSession> + 'a,
    {
        use crate::onnx::engine::Value;
        let [input] = session.inputs() else {
            value_err!(
                "generate: the model takes {} inputs; generation feeds one, the token ids",
                session.inputs().len()
            )
        };
        let (name, dims, int) = (
            input.name.clone(),
            input.dims.clone(),
            input.dtype == "int64",
        );
        let rank = session.outputs().first().map(|o| o.dims.len());
        let run: Run<'a> = Box::new(move |ids: ArrayD<i64>| {
            let v = if int {
                Value::I64(ids)
            } else {
                Value::F32(ids.mapv(|v| v as f32))
            };
            let out = session.run(vec![(name.clone(), v)])?.swap_remove(0);
            Ok((out.iter().copied().collect(), out.shape().to_vec()))
        });
        Self::for_dims(&dims, rank, run)
    }

    /// For an ONNX model on whichever engine `InferenceSession` chose.
    #[cfg(feature = "onnx")]
    pub fn for_session(session: &'a crate::onnx::session::InferenceSession) -> Result<Self> {
        Self::over_tensor_data(session.inputs(), session.outputs(), move |x| session.run(x))
    }
}

#[cfg(feature = "onnx")]
impl<'a> Windowed<'a> {
    /// For a model on tract (kiln-wasm's large module runs these).
    pub fn for_tract<E>(session: E) -> Result<Self>
    where
        E: std::ops::Deref<Target = crate::onnx::tract::TractSession> + 'a,
    {
        let (inputs, outputs) = (session.inputs().to_vec(), session.outputs().to_vec());
        Self::over_tensor_data(&inputs, &outputs, move |x| session.run(x))
    }

    /// The one rule for both sessions that run on `TensorData` (tract's, and `InferenceSession`):
    /// one input of token ids (int64, or float32 carrying whole numbers), float32 logits out.
    fn over_tensor_data(
        inputs: &[crate::onnx::tract::TensorInfo],
        outputs: &[crate::onnx::tract::TensorInfo],
        run: impl Fn(Vec<crate::onnx::tract::TensorData>) -> Result<Vec<crate::onnx::tract::TensorData>>
            + 'a,
    ) -> Result<Self> {
        use crate::onnx::tract::{DType, TensorData};
        let [input] = inputs else {
            value_err!(
                "generate: the model takes {} inputs; generation feeds one, the token ids",
                inputs.len()
            )
        };
        let ints = match &input.dtype {
            DType::I64 => true,
            DType::F32 => false,
            other => value_err!(
                "generate: the model's input is {}; token ids go in as int64 or float32",
                other.name()
            ),
        };
        let rank = outputs.first().map(|o| o.dims.len());
        let run: Run<'a> = Box::new(move |ids: ArrayD<i64>| {
            let x = if ints {
                TensorData::I64(ids)
            } else {
                TensorData::F32(ids.mapv(|v| v as f32))
            };
            match run(vec![x])?.swap_remove(0) {
                TensorData::F32(a) => Ok((a.iter().copied().collect(), a.shape().to_vec())),
                other => value_err!(
                    "generate: the model's logits are {}, not float32",
                    other.dtype().name()
                ),
            }
        });
        Self::for_dims(&input.dims, rank, run)
    }
}

impl Step for Windowed<'_> {
    fn start(&mut self, context: &[u32]) -> Result<Vec<f32>> {
        self.history = context.to_vec();
        self.logits()
    }

    fn next(&mut self, token: u32) -> Result<Vec<f32>> {
        self.history.push(token);
        self.logits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake model that records its inputs and answers with the given rank.
    fn recorder(
        rank: usize,
        v: usize,
        seen: std::rc::Rc<std::cell::RefCell<Vec<Vec<i64>>>>,
    ) -> Run<'static> {
        Box::new(move |ids: ArrayD<i64>| {
            let t = ids.shape()[1];
            seen.borrow_mut().push(ids.iter().copied().collect());
            // logits: position p's row is all p (so the caller's choice of row shows)
            let (vals, dims) = if rank == 2 {
                (vec![7.0; v], vec![1, v])
            } else {
                (
                    (0..t)
                        .flat_map(|p| std::iter::repeat_n(p as f32, v))
                        .collect(),
                    vec![1, t, v],
                )
            };
            Ok((vals, dims))
        })
    }

    #[test]
    fn a_fixed_window_pads_left_for_one_row_and_right_for_a_row_per_position() {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(vec![]));
        let mut w =
            Windowed::for_dims(&[None, Some(3)], None, recorder(2, 5, seen.clone())).unwrap();
        assert_eq!(w.start(&[2, 9]).unwrap(), vec![7.0; 5]);
        w.next(8).unwrap();
        w.next(7).unwrap();
        assert_eq!(
            *seen.borrow(),
            vec![vec![0, 2, 9], vec![2, 9, 8], vec![9, 8, 7]]
        );

        // a row per position, layout learnt from the first run: rerun right-padded, read at the last id
        seen.borrow_mut().clear();
        let mut w =
            Windowed::for_dims(&[None, Some(3)], None, recorder(3, 5, seen.clone())).unwrap();
        assert_eq!(w.start(&[2]).unwrap(), vec![0.0; 5]);
        assert_eq!(w.next(4).unwrap(), vec![1.0; 5]);
        assert_eq!(w.next(5).unwrap(), vec![2.0; 5]);
        assert_eq!(w.next(6).unwrap(), vec![2.0; 5]);
        assert_eq!(
            *seen.borrow(),
            vec![
                vec![0, 0, 2],
                vec![2, 0, 0],
                vec![2, 4, 0],
                vec![2, 4, 5],
                vec![4, 5, 6]
            ]
        );
    }

    #[test]
    fn a_free_window_sees_the_prefix_up_to_max_context() {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(vec![]));
        let mut w =
            Windowed::for_dims(&[None, None], Some(3), recorder(3, 4, seen.clone())).unwrap();
        assert_eq!(w.start(&[2, 5]).unwrap(), vec![1.0; 4]);
        let long: Vec<u32> = (0..MAX_CONTEXT as u32 + 10).collect();
        w.start(&long).unwrap();
        assert_eq!(seen.borrow()[1].len(), MAX_CONTEXT);
        assert_eq!(seen.borrow()[1][0], 10);
    }

    #[test]
    fn inputs_and_outputs_generation_cannot_use_are_refused() {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(vec![]));
        for dims in [
            vec![None],
            vec![Some(2), Some(4)],
            vec![None, Some(2), Some(2)],
            vec![None, Some(0)],
        ] {
            assert!(
                Windowed::for_dims(&dims, None, recorder(2, 3, seen.clone())).is_err(),
                "{dims:?}"
            );
        }
        assert!(
            Windowed::for_dims(&[None, Some(4)], Some(4), recorder(2, 3, seen.clone())).is_err()
        );
        let rank4: Run = Box::new(|_| Ok((vec![0.0; 12], vec![1, 1, 4, 3])));
        let mut w = Windowed::for_dims(&[None, Some(4)], None, rank4).unwrap();
        let e = w.start(&[2]).unwrap_err().to_string();
        assert!(e.contains("neither"), "{e}");
    }
}
