//! The serialisable architecture: one JSON object per layer, `{"type": "Linear", "in_features": 64, …}`.

use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{
    Activation, BatchNorm, Conv, Dropout, Embedding, Flatten, LayerNorm, Linear, Module,
    MultiheadAttention, Pool, Recurrent, Sequential,
};
use crate::autograd::GeluApprox;
use crate::{value_err, KilnError, Result};

fn yes() -> bool {
    true
}
fn eps() -> f32 {
    1e-5
}
fn momentum() -> f32 {
    0.1
}
fn one() -> usize {
    1
}
fn ones2() -> [usize; 2] {
    [1, 1]
}
fn zeros2() -> [usize; 2] {
    [0, 0]
}
fn minus_one() -> isize {
    -1
}
fn slope() -> f32 {
    0.01
}
fn exact() -> GeluApprox {
    GeluApprox::None
}

/// One layer's architecture, named and parameterised as in PyTorch. Read from JSON by hand
/// (`layer_from_json` below, with the defaults above: serde's internally tagged derive buffers
/// every object through its `Content`, a visible share of the browser's small module); written by
/// serde.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
#[allow(missing_docs)] // the fields are PyTorch's constructor arguments
pub enum LayerSpec {
    Linear {
        in_features: usize,
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Conv1d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "one")]
        dilation: usize,
        #[serde(default = "one")]
        groups: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        #[serde(default = "ones2")]
        stride: [usize; 2],
        #[serde(default = "zeros2")]
        padding: [usize; 2],
        #[serde(default = "ones2")]
        dilation: [usize; 2],
        #[serde(default = "one")]
        groups: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    MaxPool2d {
        kernel_size: [usize; 2],
        stride: [usize; 2],
        #[serde(default = "zeros2")]
        padding: [usize; 2],
    },
    AvgPool2d {
        kernel_size: [usize; 2],
        stride: [usize; 2],
        #[serde(default = "zeros2")]
        padding: [usize; 2],
    },
    Flatten {
        #[serde(default = "one_isize")]
        start_dim: isize,
        #[serde(default = "minus_one")]
        end_dim: isize,
    },
    ReLU,
    LeakyReLU {
        #[serde(default = "slope")]
        negative_slope: f32,
    },
    GELU {
        #[serde(default = "exact")]
        approximate: GeluApprox,
    },
    Sigmoid,
    Tanh,
    Softmax {
        #[serde(default = "minus_one")]
        dim: isize,
    },
    Dropout {
        p: f32,
    },
    BatchNorm1d {
        num_features: usize,
        #[serde(default = "eps")]
        eps: f32,
        #[serde(default = "momentum")]
        momentum: f32,
    },
    BatchNorm2d {
        num_features: usize,
        #[serde(default = "eps")]
        eps: f32,
        #[serde(default = "momentum")]
        momentum: f32,
    },
    LayerNorm {
        normalized_shape: Vec<usize>,
        #[serde(default = "eps")]
        eps: f32,
    },
    Embedding {
        num_embeddings: usize,
        embedding_dim: usize,
    },
    Sequential {
        layers: Vec<LayerSpec>,
    },
    GRU {
        input_size: usize,
        hidden_size: usize,
        #[serde(default = "one")]
        num_layers: usize,
        #[serde(default = "yes")]
        bias: bool,
        #[serde(default)]
        batch_first: bool,
        #[serde(default)]
        dropout: f32,
        #[serde(default)]
        bidirectional: bool,
    },
    LSTM {
        input_size: usize,
        hidden_size: usize,
        #[serde(default = "one")]
        num_layers: usize,
        #[serde(default = "yes")]
        bias: bool,
        #[serde(default)]
        batch_first: bool,
        #[serde(default)]
        dropout: f32,
        #[serde(default)]
        bidirectional: bool,
    },
    /// Its calls are `Op::MultiheadAttention` nodes (query, key, value, masks): never a chain link.
    MultiheadAttention {
        embed_dim: usize,
        num_heads: usize,
        #[serde(default)]
        dropout: f32,
        #[serde(default = "yes")]
        bias: bool,
        #[serde(default)]
        batch_first: bool,
    },
}

fn one_isize() -> isize {
    1
}

fn positive(layer: &str, what: &str, v: usize) -> Result<()> {
    if v == 0 {
        value_err!("{layer}: {what} must be positive");
    }
    Ok(())
}

impl LayerSpec {
    /// The layer's type name, as in PyTorch (`"Linear"`, `"Conv2d"`…).
    /// (A match, not serde's tag: serialising to read the tag linked the whole `Serialize` of
    /// every layer into the browser's small module; `type_names_are_serdes_tags` keeps them equal.)
    pub fn type_name(&self) -> String {
        use LayerSpec as S;
        match self {
            S::Linear { .. } => "Linear",
            S::Conv1d { .. } => "Conv1d",
            S::Conv2d { .. } => "Conv2d",
            S::MaxPool2d { .. } => "MaxPool2d",
            S::AvgPool2d { .. } => "AvgPool2d",
            S::Flatten { .. } => "Flatten",
            S::ReLU => "ReLU",
            S::LeakyReLU { .. } => "LeakyReLU",
            S::GELU { .. } => "GELU",
            S::Sigmoid => "Sigmoid",
            S::Tanh => "Tanh",
            S::Softmax { .. } => "Softmax",
            S::Dropout { .. } => "Dropout",
            S::BatchNorm1d { .. } => "BatchNorm1d",
            S::BatchNorm2d { .. } => "BatchNorm2d",
            S::LayerNorm { .. } => "LayerNorm",
            S::Embedding { .. } => "Embedding",
            S::Sequential { .. } => "Sequential",
            S::GRU { .. } => "GRU",
            S::LSTM { .. } => "LSTM",
            S::MultiheadAttention { .. } => "MultiheadAttention",
        }
        .to_string()
    }

    /// Parse one layer from JSON, with a clear message for unknown types or fields.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| spec_error(&e))
    }

    /// Parse a list of layers from JSON.
    pub fn list_from_json(json: &str) -> Result<Vec<Self>> {
        serde_json::from_str(json).map_err(|e| spec_error(&e))
    }

    /// Check the arguments without drawing any weights (`Linear(0, 3)` is refused here, when the
    /// layer is made, not at its first use).
    pub fn check(&self) -> Result<()> {
        use LayerSpec as S;
        let name = self.type_name();
        match self {
            S::Linear {
                in_features,
                out_features,
                ..
            } => {
                positive(&name, "in_features", *in_features)?;
                positive(&name, "out_features", *out_features)
            }
            S::Embedding {
                num_embeddings,
                embedding_dim,
            } => {
                positive(&name, "num_embeddings", *num_embeddings)?;
                positive(&name, "embedding_dim", *embedding_dim)
            }
            S::Conv1d { .. } | S::Conv2d { .. } => Conv::geometry(self).map(|_| ()),
            S::Sequential { layers } => {
                if let Some((r, why)) = layers.iter().find_map(|l| Some((l, l.chain_refusal()?))) {
                    value_err!("Sequential: {} {why}", r.type_name());
                }
                layers.iter().try_for_each(LayerSpec::check)
            }
            S::GRU { .. } | S::LSTM { .. } => super::rnn::config_of(self)
                .expect("a recurrent spec")
                .check(),
            // the rest hold at most a few vectors: building them is the check
            other => other
                .build(&mut <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0))
                .map(|_| ()),
        }
    }

    /// Whether the layer's training forward mixes the samples of a batch (batch-norm normalises
    /// by the batch's statistics), so the fit loop must not split a batch into shards.
    pub fn couples_samples(&self) -> bool {
        match self {
            LayerSpec::BatchNorm1d { .. } | LayerSpec::BatchNorm2d { .. } => true,
            LayerSpec::Sequential { layers } => layers.iter().any(LayerSpec::couples_samples),
            _ => false,
        }
    }

    /// Why the layer cannot be a link of a Sequential chain (it returns a tuple), if it cannot.
    pub fn chain_refusal(&self) -> Option<&'static str> {
        match self {
            LayerSpec::GRU { .. } | LayerSpec::LSTM { .. } => Some("returns (output, h_n), so it cannot sit in a Sequential chain: use it in an nn.Module's forward (`out, h = self.rnn(x)`)"),
            LayerSpec::MultiheadAttention { .. } => Some("returns (output, weights) from (query, key, value), so it cannot sit in a Sequential chain: use it in an nn.Module's forward (`out, w = self.attn(x, x, x)`)"),
            _ => None,
        }
    }

    /// Build the layer with PyTorch's default initialisation drawn from `rng`.
    pub fn build(&self, rng: &mut ChaCha8Rng) -> Result<Box<dyn Module>> {
        use LayerSpec as S;
        Ok(match self.clone() {
            S::Linear {
                in_features,
                out_features,
                bias,
            } => {
                self.check()?;
                Box::new(Linear::new(in_features, out_features, bias, rng))
            }
            S::Conv1d { .. } | S::Conv2d { .. } => Box::new(Conv::new(self.clone(), rng)?),
            S::MaxPool2d {
                kernel_size,
                stride,
                padding,
            } => Box::new(Pool::new(true, kernel_size, stride, padding)?),
            S::AvgPool2d {
                kernel_size,
                stride,
                padding,
            } => Box::new(Pool::new(false, kernel_size, stride, padding)?),
            S::Flatten { start_dim, end_dim } => Box::new(Flatten { start_dim, end_dim }),
            S::ReLU
            | S::LeakyReLU { .. }
            | S::GELU { .. }
            | S::Sigmoid
            | S::Tanh
            | S::Softmax { .. } => Box::new(Activation(self.clone())),
            S::Dropout { p } => {
                if !(0.0..1.0).contains(&p) {
                    value_err!("Dropout: p must be in [0, 1), got {p}");
                }
                Box::new(Dropout { p })
            }
            S::BatchNorm1d {
                num_features,
                eps,
                momentum,
            } => Box::new(BatchNorm::new(num_features, eps, momentum, false)?),
            S::BatchNorm2d {
                num_features,
                eps,
                momentum,
            } => Box::new(BatchNorm::new(num_features, eps, momentum, true)?),
            S::LayerNorm {
                normalized_shape,
                eps,
            } => Box::new(LayerNorm::new(normalized_shape, eps)?),
            S::Embedding {
                num_embeddings,
                embedding_dim,
            } => {
                self.check()?;
                Box::new(Embedding::new(num_embeddings, embedding_dim, rng))
            }
            S::Sequential { layers } => {
                self.check()?;
                Box::new(Sequential::from_specs(&layers, rng)?)
            }
            S::MultiheadAttention { .. } => Box::new(MultiheadAttention::new(self.clone(), rng)?),
            S::GRU { .. } | S::LSTM { .. } => Box::new(Recurrent::new(
                super::rnn::config_of(self).expect("a recurrent spec"),
                rng,
            )?),
        })
    }
}

fn spec_error(e: &serde_json::Error) -> KilnError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let name = rest.split('`').nth(1).unwrap_or(rest).to_string();
        return KilnError::Unknown {
            kind: "layer",
            name,
            hint: ". Known layers: Linear, Conv1d, Conv2d, MaxPool2d, AvgPool2d, Flatten, ReLU, LeakyReLU, GELU, Sigmoid, Tanh, Softmax, Dropout, BatchNorm1d, BatchNorm2d, LayerNorm, Embedding, GRU, LSTM, MultiheadAttention, Sequential".into(),
        };
    }
    KilnError::value(format!("invalid architecture: {msg}"))
}

const LAYERS: &str = "`Linear`, `Conv1d`, `Conv2d`, `MaxPool2d`, `AvgPool2d`, `Flatten`, `ReLU`, `LeakyReLU`, `GELU`, `Sigmoid`, `Tanh`, `Softmax`, `Dropout`, `BatchNorm1d`, `BatchNorm2d`, `LayerNorm`, `Embedding`, `Sequential`, `GRU`, `LSTM`, `MultiheadAttention`";

/// What `Conv1d` and `Conv2d` take (PyTorch's names).
const CONV_ARGS: &[&str] = &[
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
];

/// One layer from its JSON object, with PyTorch's defaults; unknown argument names are refused.
fn layer_from_json(v: &serde_json::Value) -> std::result::Result<LayerSpec, String> {
    use LayerSpec as S;
    let (name, a) = crate::json_args::tagged(v, "type", "layer")?;
    let only = |known: &[&str]| {
        let mut all = vec!["type"];
        all.extend_from_slice(known);
        a.only(&all)
    };
    Ok(match name {
        "Linear" => {
            only(&["in_features", "out_features", "bias"])?;
            S::Linear {
                in_features: a.get("in_features")?,
                out_features: a.get("out_features")?,
                bias: a.or("bias", yes())?,
            }
        }
        "Conv1d" => {
            only(CONV_ARGS)?;
            S::Conv1d {
                in_channels: a.get("in_channels")?,
                out_channels: a.get("out_channels")?,
                kernel_size: a.get("kernel_size")?,
                stride: a.or("stride", one())?,
                padding: a.or("padding", 0)?,
                dilation: a.or("dilation", one())?,
                groups: a.or("groups", one())?,
                bias: a.or("bias", yes())?,
            }
        }
        "Conv2d" => {
            only(CONV_ARGS)?;
            S::Conv2d {
                in_channels: a.get("in_channels")?,
                out_channels: a.get("out_channels")?,
                kernel_size: a.get("kernel_size")?,
                stride: a.or("stride", ones2())?,
                padding: a.or("padding", zeros2())?,
                dilation: a.or("dilation", ones2())?,
                groups: a.or("groups", one())?,
                bias: a.or("bias", yes())?,
            }
        }
        "MaxPool2d" | "AvgPool2d" => {
            only(&["kernel_size", "stride", "padding"])?;
            let (kernel_size, stride, padding) = (
                a.get("kernel_size")?,
                a.get("stride")?,
                a.or("padding", zeros2())?,
            );
            if name == "MaxPool2d" {
                S::MaxPool2d {
                    kernel_size,
                    stride,
                    padding,
                }
            } else {
                S::AvgPool2d {
                    kernel_size,
                    stride,
                    padding,
                }
            }
        }
        "Flatten" => {
            only(&["start_dim", "end_dim"])?;
            S::Flatten {
                start_dim: a.or("start_dim", one_isize())?,
                end_dim: a.or("end_dim", minus_one())?,
            }
        }
        "ReLU" | "Sigmoid" | "Tanh" => {
            only(&[])?;
            match name {
                "ReLU" => S::ReLU,
                "Sigmoid" => S::Sigmoid,
                _ => S::Tanh,
            }
        }
        "LeakyReLU" => {
            only(&["negative_slope"])?;
            S::LeakyReLU {
                negative_slope: a.or("negative_slope", slope())?,
            }
        }
        "GELU" => {
            only(&["approximate"])?;
            S::GELU {
                approximate: a.or("approximate", exact())?,
            }
        }
        "Softmax" => {
            only(&["dim"])?;
            S::Softmax {
                dim: a.or("dim", minus_one())?,
            }
        }
        "Dropout" => {
            only(&["p"])?;
            S::Dropout { p: a.get("p")? }
        }
        "BatchNorm1d" | "BatchNorm2d" => {
            only(&["num_features", "eps", "momentum"])?;
            let (num_features, eps, momentum) = (
                a.get("num_features")?,
                a.or("eps", eps())?,
                a.or("momentum", momentum())?,
            );
            if name == "BatchNorm1d" {
                S::BatchNorm1d {
                    num_features,
                    eps,
                    momentum,
                }
            } else {
                S::BatchNorm2d {
                    num_features,
                    eps,
                    momentum,
                }
            }
        }
        "LayerNorm" => {
            only(&["normalized_shape", "eps"])?;
            S::LayerNorm {
                normalized_shape: a.get("normalized_shape")?,
                eps: a.or("eps", eps())?,
            }
        }
        "Embedding" => {
            only(&["num_embeddings", "embedding_dim"])?;
            S::Embedding {
                num_embeddings: a.get("num_embeddings")?,
                embedding_dim: a.get("embedding_dim")?,
            }
        }
        "Sequential" => {
            only(&["layers"])?;
            let layers = a
                .value("layers")?
                .as_array()
                .ok_or_else(|| a.bad("layers", "a list of layers"))?
                .iter()
                .map(layer_from_json)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            S::Sequential { layers }
        }
        "GRU" | "LSTM" => {
            only(&[
                "input_size",
                "hidden_size",
                "num_layers",
                "bias",
                "batch_first",
                "dropout",
                "bidirectional",
            ])?;
            super::rnn::spec_of(&crate::autograd::RnnConfig {
                cell: if name == "GRU" {
                    crate::autograd::RnnCell::Gru
                } else {
                    crate::autograd::RnnCell::Lstm
                },
                input_size: a.get("input_size")?,
                hidden_size: a.get("hidden_size")?,
                num_layers: a.or("num_layers", one())?,
                bias: a.or("bias", yes())?,
                batch_first: a.or("batch_first", false)?,
                dropout: a.or("dropout", 0.0)?,
                bidirectional: a.or("bidirectional", false)?,
            })
        }
        "MultiheadAttention" => {
            only(&["embed_dim", "num_heads", "dropout", "bias", "batch_first"])?;
            S::MultiheadAttention {
                embed_dim: a.get("embed_dim")?,
                num_heads: a.get("num_heads")?,
                dropout: a.or("dropout", 0.0)?,
                bias: a.or("bias", yes())?,
                batch_first: a.or("batch_first", false)?,
            }
        }
        other => {
            return Err(format!(
                "unknown variant `{other}`, expected one of {LAYERS}"
            ))
        }
    })
}

impl<'de> serde::Deserialize<'de> for LayerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        layer_from_json(&serde_json::Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_with_pytorch_defaults() {
        let s = LayerSpec::from_json(r#"{"type":"Conv2d","in_channels":1,"out_channels":8,"kernel_size":[3,3],"padding":[1,1]}"#).unwrap();
        match &s {
            LayerSpec::Conv2d {
                stride,
                dilation,
                groups,
                bias,
                ..
            } => assert_eq!(
                (*stride, *dilation, *groups, *bias),
                ([1, 1], [1, 1], 1, true)
            ),
            other => panic!("{other:?}"),
        }
        let back = LayerSpec::from_json(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.type_name(), "Conv2d");
    }

    #[test]
    fn type_names_are_serdes_tags() {
        let layers = r#"[
            {"type": "Linear", "in_features": 2, "out_features": 3},
            {"type": "Conv1d", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
            {"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": [3, 3]},
            {"type": "MaxPool2d", "kernel_size": [2, 2], "stride": [2, 2]},
            {"type": "AvgPool2d", "kernel_size": [2, 2], "stride": [2, 2]},
            {"type": "Flatten"}, {"type": "ReLU"}, {"type": "LeakyReLU"}, {"type": "GELU"},
            {"type": "Sigmoid"}, {"type": "Tanh"}, {"type": "Softmax"}, {"type": "Dropout", "p": 0.1},
            {"type": "BatchNorm1d", "num_features": 4}, {"type": "BatchNorm2d", "num_features": 4},
            {"type": "LayerNorm", "normalized_shape": [4]},
            {"type": "Embedding", "num_embeddings": 5, "embedding_dim": 2},
            {"type": "Sequential", "layers": [{"type": "ReLU"}]},
            {"type": "GRU", "input_size": 2, "hidden_size": 3},
            {"type": "LSTM", "input_size": 2, "hidden_size": 3},
            {"type": "MultiheadAttention", "embed_dim": 4, "num_heads": 2}
        ]"#;
        let specs = LayerSpec::list_from_json(layers).unwrap();
        assert_eq!(specs.len(), 21, "one of each layer type");
        for s in specs {
            let tag = serde_json::to_value(&s).unwrap()["type"].clone();
            assert_eq!(tag.as_str(), Some(s.type_name().as_str()), "{s:?}");
        }
    }

    #[test]
    fn unknown_layers_and_fields_are_named() {
        let e = LayerSpec::from_json(r#"{"type":"Transformer"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown layer \"Transformer\""), "{e}");
        let e = LayerSpec::from_json(
            r#"{"type":"Linear","in_features":3,"out_features":2,"bais":true}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bais"), "{e}");
    }
}
