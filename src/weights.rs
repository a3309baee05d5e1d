//! Saving and loading named parameters in the safetensors format.

use crate::error::{KilnError, Result};
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

fn io_err(path: &Path, what: impl std::fmt::Display) -> KilnError {
    KilnError::Invalid(format!("{}: {what}", path.display()))
}

/// Writes `tensors` (name, value) to `path` as f32 safetensors.
pub fn save(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data().iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            TensorView::new(Dtype::F32, t.shape().to_vec(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| io_err(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| io_err(path, format!("cannot write weights: {e}")))
}

/// Reads every tensor of a safetensors file at `path`, sorted by name.
/// `Err` naming the file if it is missing, truncated or not f32 safetensors.
pub fn load(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let bytes =
        std::fs::read(path).map_err(|e| io_err(path, format!("cannot read weights: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| io_err(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name).map_err(|e| io_err(path, e))?;
        if view.dtype() != Dtype::F32 {
            return Err(io_err(
                path,
                format!(
                    "tensor `{name}` has dtype {:?}, kiln reads F32",
                    view.dtype()
                ),
            ));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push((name, Tensor::from_vec(view.shape().to_vec(), data)?));
    }
    Ok(out)
}
