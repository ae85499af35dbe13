//! The checks both ONNX engines (tract's and kiln's own) make on the inputs of a run,
//! with one set of messages, so a wrong input reads the same whichever engine runs the model.

use std::collections::HashMap;

use crate::{KilnError, Result};

/// Puts named feeds in the order of the graph's `inputs`: an unknown name, a name given twice or
/// a missing input is an error naming it.
pub(crate) fn in_graph_order<T>(inputs: &[&str], feeds: Vec<(String, T)>) -> Result<Vec<T>> {
    let mut slots: Vec<Option<T>> = inputs.iter().map(|_| None).collect();
    for (name, value) in feeds {
        let Some(ix) = inputs.iter().position(|i| *i == name) else {
            let names: Vec<String> = inputs.iter().map(|i| format!("{i:?}")).collect();
            return Err(KilnError::value(format!(
                "the model has no input {name:?} (its inputs: {})",
                names.join(", ")
            )));
        };
        if slots[ix].replace(value).is_some() {
            return Err(KilnError::value(format!("input {name:?} was given twice")));
        }
    }
    let missing: Vec<String> = inputs
        .iter()
        .zip(&slots)
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| format!("{i:?}"))
        .collect();
    if !missing.is_empty() {
        return Err(KilnError::value(format!(
            "missing input {}",
            missing.join(", ")
        )));
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Inputs given by position: as many as the graph has.
#[cfg(feature = "onnx")]
pub(crate) fn check_count(inputs: &[&str], got: usize) -> Result<()> {
    if got == inputs.len() {
        return Ok(());
    }
    let names: Vec<String> = inputs.iter().map(|i| format!("{i:?}")).collect();
    Err(KilnError::shape(format!(
        "the model takes {} input{} ({}), got {got}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
    )))
}

/// `[?, 1, 8, 8]`: a graph's dims, `?` where the size is free.
pub(crate) fn dims_string(dims: &[Option<usize>]) -> String {
    let dims: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |n| n.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Whether `shape` has the rank of `dims` and their fixed sizes.
pub(crate) fn fits(dims: &[Option<usize>], shape: &[usize]) -> bool {
    shape.len() == dims.len()
        && shape
            .iter()
            .zip(dims)
            .all(|(n, d)| d.is_none_or(|d| d == *n))
}

/// The error for an input whose shape or element type is not the graph's.
pub(crate) fn mismatch(
    name: &str,
    dims: &[Option<usize>],
    want: &str,
    got: &[usize],
    got_type: &str,
) -> KilnError {
    KilnError::shape(format!(
        "input {name:?}: expected shape {} ({want}), got {got:?} ({got_type})",
        dims_string(dims)
    ))
}

/// The sizes the free dimensions (`"batch"`) took in this run, so inputs sharing one agree.
#[derive(Default)]
pub(crate) struct FreeDims<'a>(HashMap<&'a str, (usize, &'a str)>);

impl<'a> FreeDims<'a> {
    /// Binds input `name`'s free dimensions (`symbols`, one per axis) to `shape`'s sizes.
    pub(crate) fn bind(
        &mut self,
        name: &'a str,
        symbols: &'a [Option<String>],
        shape: &[usize],
    ) -> Result<()> {
        for (axis, sym) in symbols.iter().enumerate() {
            let Some(sym) = sym else { continue };
            match self.0.get(sym.as_str()) {
                Some(&(n, other)) if n != shape[axis] => {
                    return Err(KilnError::shape(format!(
                        "input {name:?}: dimension {axis} is {} but input {other:?} sets the same \
                         free dimension to {n}",
                        shape[axis]
                    )));
                }
                _ => {
                    self.0.insert(sym, (shape[axis], name));
                }
            }
        }
        Ok(())
    }
}
