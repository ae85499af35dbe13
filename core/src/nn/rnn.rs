//! `nn.GRU` and `nn.LSTM`: the recurrent layers, with PyTorch's parameter names and initialisation.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{LayerSpec, Module, Param};
use crate::autograd::{RnnCell, RnnConfig, Tape, Tensor, Var};
use crate::{value_err, Result};

/// A GRU or LSTM over whole sequences. Called with `(x)` or `(x, h0)` (LSTM: `(x, h0, c0)`) it
/// returns `(output, h_n)` (LSTM: `(output, h_n, c_n)`), as PyTorch's layers do.
///
/// # Shapes
/// `x: [batch, seq, input_size]` (`batch_first`) or `[seq, batch, input_size]` →
/// `output: [batch, seq, D·hidden_size]` (or `[seq, batch, …]`), `h_n, c_n: [num_layers·D, batch, hidden_size]`
/// with D = 2 when bidirectional. Parameters: `weight_ih_l{k}` `[G·hidden, in]`, `weight_hh_l{k}`
/// `[G·hidden, hidden]`, `bias_ih_l{k}`, `bias_hh_l{k}` `[G·hidden]` (G = 3 for GRU, gates r, z, n;
/// 4 for LSTM, gates i, f, g, o), and the same with `_reverse` for the second direction.
pub struct Recurrent {
    cfg: RnnConfig,
    weights: Vec<(String, Param)>,
}

impl Recurrent {
    /// Every weight and bias drawn from U(-1/√hidden_size, 1/√hidden_size), as PyTorch.
    pub fn new(cfg: RnnConfig, rng: &mut ChaCha8Rng) -> Result<Self> {
        cfg.check()?;
        let bound = 1.0 / (cfg.hidden_size as f32).sqrt();
        let weights = cfg
            .weights()
            .into_iter()
            .map(|(name, shape)| {
                let v = Tensor::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0) * bound);
                (name, Param::new(v))
            })
            .collect();
        Ok(Recurrent { cfg, weights })
    }

    /// The layer's hyper-parameters.
    pub fn config(&self) -> &RnnConfig {
        &self.cfg
    }
}

/// The configuration a `GRU` or `LSTM` spec describes (`None` for other layers).
pub fn config_of(spec: &LayerSpec) -> Option<RnnConfig> {
    let cell = match spec {
        LayerSpec::GRU { .. } => RnnCell::Gru,
        LayerSpec::LSTM { .. } => RnnCell::Lstm,
        _ => return None,
    };
    match *spec {
        LayerSpec::GRU {
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
        }
        | LayerSpec::LSTM {
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
        } => Some(RnnConfig {
            cell,
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
        }),
        _ => None,
    }
}

/// The `GRU` or `LSTM` spec of a configuration: [`config_of`]'s inverse (the layer, the JSON
/// reader and the ONNX importer all make specs through it).
pub fn spec_of(c: &RnnConfig) -> LayerSpec {
    let (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional) = (
        c.input_size,
        c.hidden_size,
        c.num_layers,
        c.bias,
        c.batch_first,
        c.dropout,
        c.bidirectional,
    );
    match c.cell {
        RnnCell::Gru => LayerSpec::GRU {
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
        },
        RnnCell::Lstm => LayerSpec::LSTM {
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
        },
    }
}

impl Module for Recurrent {
    fn forward(&self, _t: &mut Tape, _x: Var) -> Result<Var> {
        value_err!(
            "{}: returns (output, h_n), so it cannot sit in an nn.Sequential chain: call it in an nn.Module's forward (`out, h = self.rnn(x)`)",
            self.cfg.cell.name()
        )
    }

    fn forward_multi(&self, t: &mut Tape, xs: &[Var]) -> Result<Vec<Var>> {
        let name = self.cfg.cell.name();
        let max = if self.cfg.cell == RnnCell::Lstm { 3 } else { 2 };
        if xs.is_empty() || xs.len() > max {
            let takes = if max == 3 {
                "x, or x with (h0, c0)"
            } else {
                "x, or x and h0"
            };
            value_err!("{name}: takes {takes}; got {} inputs", xs.len());
        }
        if max == 3 && xs.len() == 2 {
            value_err!("LSTM: the initial state is a pair (h0, c0), got h0 alone");
        }
        let ws: Vec<Var> = self.weights.iter().map(|(_, p)| p.bind(t)).collect();
        let o = t.rnn(
            &self.cfg,
            xs[0],
            &ws,
            xs.get(1).copied(),
            xs.get(2).copied(),
        )?;
        let mut out = vec![o.output, o.h_n];
        out.extend(o.c_n);
        Ok(out)
    }

    fn tensors(&self) -> Vec<(String, &Param)> {
        self.weights.iter().map(|(n, p)| (n.clone(), p)).collect()
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Param)> {
        self.weights
            .iter_mut()
            .map(|(n, p)| (n.clone(), p))
            .collect()
    }

    fn spec(&self) -> LayerSpec {
        spec_of(&self.cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn pytorch_names_shapes_and_init_bound() {
        let spec = LayerSpec::from_json(
            r#"{"type":"GRU","input_size":3,"hidden_size":4,"num_layers":2,"bidirectional":true}"#,
        )
        .unwrap();
        let m = spec.build(&mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        let names: Vec<(String, Vec<usize>)> = m
            .tensors()
            .into_iter()
            .map(|(n, p)| (n, p.value().shape().to_vec()))
            .collect();
        assert_eq!(names.len(), 16);
        assert_eq!(names[0], ("weight_ih_l0".into(), vec![12, 3]));
        assert_eq!(names[4], ("weight_ih_l0_reverse".into(), vec![12, 3]));
        assert_eq!(names[8], ("weight_ih_l1".into(), vec![12, 8]));
        assert_eq!(names[15], ("bias_hh_l1_reverse".into(), vec![12]));
        for (_, p) in m.tensors() {
            assert!(p.value().iter().all(|v| v.abs() <= 0.5));
        }
        assert_eq!(m.spec(), spec);
        let e = LayerSpec::from_json(r#"{"type":"LSTM","input_size":3,"hidden_size":0}"#)
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("LSTM") && e.contains("hidden_size"), "{e}");
    }
}
