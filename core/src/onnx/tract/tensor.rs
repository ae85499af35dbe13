//! The tensors that cross kiln's inference API, and their conversion to and from tract's.

use ndarray::ArrayD;
use tract_onnx::prelude::{DatumType, Tensor, TractError, TractResult};

use crate::{KilnError, Result};

/// The element type of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float (`float32`).
    F32,
    /// 64-bit float (`float64`).
    F64,
    /// 64-bit signed integer (`int64`).
    I64,
    /// 32-bit signed integer (`int32`).
    I32,
    /// 8-bit signed integer (`int8`).
    I8,
    /// 8-bit unsigned integer (`uint8`).
    U8,
    /// Boolean (`bool`).
    Bool,
    /// Any other element type, by its numpy-style name (`"float16"`, `"string"`, …).
    Other(String),
}

impl DType {
    /// The numpy-style name: `"float32"`, `"float64"`, `"int64"`, `"int32"`, `"int8"`, `"uint8"`,
    /// `"bool"`, or the name carried by [`DType::Other`].
    pub fn name(&self) -> &str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
            DType::Other(name) => name,
        }
    }

    /// The dtype of a tract tensor as kiln reports it. Integer "dimension" tensors (TDim) are
    /// int64 in ONNX.
    pub(crate) fn from_datum(dt: DatumType) -> DType {
        match dt.unquantized() {
            DatumType::F32 => DType::F32,
            DatumType::F64 => DType::F64,
            DatumType::I64 | DatumType::TDim => DType::I64,
            DatumType::I32 => DType::I32,
            DatumType::I8 => DType::I8,
            DatumType::U8 => DType::U8,
            DatumType::Bool => DType::Bool,
            DatumType::F16 => DType::Other("float16".into()),
            DatumType::I16 => DType::Other("int16".into()),
            DatumType::U16 => DType::Other("uint16".into()),
            DatumType::U32 => DType::Other("uint32".into()),
            DatumType::U64 => DType::Other("uint64".into()),
            DatumType::String => DType::Other("string".into()),
            other => DType::Other(format!("{other:?}").to_lowercase()),
        }
    }

    /// The dtype that [`TensorData`] carries for values of this dtype: narrow types that
    /// `TensorData` has no variant for are widened without loss (float16 → float32, int16 /
    /// uint16 → int32, uint32 → int64) and uint64 travels as int64 (values above `i64::MAX`
    /// are refused on the way out).
    pub(crate) fn carried(&self) -> Option<DType> {
        match self {
            DType::Other(n) if n == "float16" => Some(DType::F32),
            DType::Other(n) if n == "int16" || n == "uint16" => Some(DType::I32),
            DType::Other(n) if n == "uint32" || n == "uint64" => Some(DType::I64),
            DType::Other(_) => None,
            known => Some(known.clone()),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The name, shape and element type of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The name in the ONNX graph.
    pub name: String,
    /// One entry per axis: `Some(n)` for a fixed size, `None` for a free (batch, `dim_param`) one.
    pub dims: Vec<Option<usize>>,
    /// The element type.
    pub dtype: DType,
}

impl TensorInfo {
    /// The shape as kiln prints it in messages, e.g. `[?, 1, 8, 8]`.
    pub fn shape_string(&self) -> String {
        crate::onnx::feeds::dims_string(&self.dims)
    }
}

/// A tensor handed to or returned by [`super::TractSession::run`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `float32` values.
    F32(ArrayD<f32>),
    /// `float64` values.
    F64(ArrayD<f64>),
    /// `int64` values.
    I64(ArrayD<i64>),
    /// `int32` values.
    I32(ArrayD<i32>),
    /// `int8` values.
    I8(ArrayD<i8>),
    /// `uint8` values.
    U8(ArrayD<u8>),
    /// `bool` values.
    Bool(ArrayD<bool>),
}

impl TensorData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            TensorData::F32(a) => a.shape(),
            TensorData::F64(a) => a.shape(),
            TensorData::I64(a) => a.shape(),
            TensorData::I32(a) => a.shape(),
            TensorData::I8(a) => a.shape(),
            TensorData::U8(a) => a.shape(),
            TensorData::Bool(a) => a.shape(),
        }
    }

    /// The values as f32, whatever the element type (booleans become 0 and 1); handy for
    /// comparing outputs.
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            TensorData::F32(a) => a.clone(),
            TensorData::F64(a) => a.mapv(|v| v as f32),
            TensorData::I64(a) => a.mapv(|v| v as f32),
            TensorData::I32(a) => a.mapv(|v| v as f32),
            TensorData::I8(a) => a.mapv(|v| v as f32),
            TensorData::U8(a) => a.mapv(|v| v as f32),
            TensorData::Bool(a) => a.mapv(|v| v as u8 as f32),
        }
    }

    /// Into a tract tensor of element type `want` (the model's own input type). Only the
    /// widenings of [`DType::carried`] are undone here; the dtype was validated before.
    pub(crate) fn into_tract(self, want: DatumType) -> Result<Tensor> {
        let t: Tensor = match self {
            TensorData::F32(a) => a.into(),
            TensorData::F64(a) => a.into(),
            TensorData::I64(a) => a.into(),
            TensorData::I32(a) => a.into(),
            TensorData::I8(a) => a.into(),
            TensorData::U8(a) => a.into(),
            TensorData::Bool(a) => a.into(),
        };
        if t.datum_type() == want.unquantized() {
            return Ok(t);
        }
        t.cast_to_dt(want.unquantized())
            .map(|c| c.into_owned())
            .map_err(|e| KilnError::onnx(format!("cannot convert input to {want:?}: {e}")))
    }

    /// From a tract tensor, widening the element types that have no variant of their own.
    pub(crate) fn from_tract(t: Tensor, what: &str) -> Result<TensorData> {
        let fail = |e: TractError| KilnError::onnx(format!("{what}: {e}"));
        let dt = t.datum_type();
        Ok(match dt.unquantized() {
            DatumType::F32 => TensorData::F32(t.into_plain_array().map_err(fail)?),
            DatumType::F64 => TensorData::F64(t.into_plain_array().map_err(fail)?),
            DatumType::I64 => TensorData::I64(t.into_plain_array().map_err(fail)?),
            DatumType::I32 => TensorData::I32(t.into_plain_array().map_err(fail)?),
            DatumType::Bool => TensorData::Bool(t.into_plain_array().map_err(fail)?),
            // Quantized u8/i8 carry their zero point and scale in the type only; the stored
            // bytes are the plain integers ONNX means.
            DatumType::I8 => {
                let t = if dt.is_quantized() {
                    t.cast_to_dt(DatumType::I8).map_err(fail)?.into_owned()
                } else {
                    t
                };
                TensorData::I8(t.into_plain_array().map_err(fail)?)
            }
            DatumType::U8 => {
                let t = if dt.is_quantized() {
                    t.cast_to_dt(DatumType::U8).map_err(fail)?.into_owned()
                } else {
                    t
                };
                TensorData::U8(t.into_plain_array().map_err(fail)?)
            }
            DatumType::F16 => TensorData::F32(cast_plain(&t, DatumType::F32).map_err(fail)?),
            DatumType::I16 | DatumType::U16 => {
                TensorData::I32(cast_plain(&t, DatumType::I32).map_err(fail)?)
            }
            DatumType::U32 | DatumType::TDim => {
                TensorData::I64(cast_plain(&t, DatumType::I64).map_err(fail)?)
            }
            DatumType::U64 => {
                let values = t.to_plain_array_view::<u64>().map_err(fail)?;
                if values.iter().any(|&v| v > i64::MAX as u64) {
                    return Err(KilnError::onnx(format!(
                        "{what}: uint64 values above {} do not fit int64",
                        i64::MAX
                    )));
                }
                TensorData::I64(values.mapv(|v| v as i64))
            }
            other => {
                return Err(KilnError::onnx(format!(
                    "{what}: element type {} is not supported by kiln (supported: float32, \
                     float64, int64, int32, int8, uint8, bool)",
                    DType::from_datum(other)
                )))
            }
        })
    }
}

fn cast_plain<T: tract_onnx::prelude::Datum>(t: &Tensor, dt: DatumType) -> TractResult<ArrayD<T>> {
    t.cast_to_dt(dt)?.into_owned().into_plain_array::<T>()
}

macro_rules! from_array {
    ($($t:ty => $variant:ident),*) => {$(
        impl From<ArrayD<$t>> for TensorData {
            fn from(a: ArrayD<$t>) -> Self {
                TensorData::$variant(a)
            }
        }
    )*};
}
from_array!(f32 => F32, f64 => F64, i64 => I64, i32 => I32, i8 => I8, u8 => U8, bool => Bool);
