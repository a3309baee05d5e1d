//! Saving and loading named parameters in the safetensors format.

use crate::error::{KilnError, Result};
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::io::Write;
use std::path::{Path, PathBuf};

fn io_err(path: &Path, what: impl std::fmt::Display) -> KilnError {
    KilnError::Invalid(format!("{}: {what}", path.display()))
}

/// The temporary file [`save`] writes before renaming it over `path`: in the
/// same directory, named `.<file name>.kiln-save-<pid>.tmp` so a stray one
/// (left by a killed process) is obviously kiln's.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io_err(path, "not a file path (it has no file name)"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".kiln-save-{}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Checks, without touching `path`, that [`save`] could write it: its
/// directory exists and accepts a new file (a temporary file is created and
/// removed there), and `path` is not a directory. `Err` naming the path and
/// the reason otherwise. Use it before a long training run that ends in a save.
pub fn check_writable(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    if path.is_dir() {
        return Err(io_err(path, "is a directory, not a weights file"));
    }
    let tmp = temp_path(path)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_err(path, format!("cannot write weights here: {e}")))?;
    std::fs::remove_file(&tmp).map_err(|e| io_err(&tmp, format!("cannot remove: {e}")))
}

/// Writes `tensors` (name, value) to `path` as f32 safetensors (the format
/// of `safetensors.torch.save_file`).
///
/// The file is written to a temporary file beside `path` ([`temp_path`]),
/// flushed to disk and renamed over `path`, so `path` always holds either
/// its old contents or the complete new file. An existing file keeps its
/// permissions. On any error the temporary file is removed; after a
/// successful save, temporary files for `path` that a killed earlier save
/// left behind are removed too (on Linux: those whose process is gone).
///
/// `Err` naming the file if two tensors share a name (naming it), if a
/// tensor cannot be serialised, or if the file cannot be written.
pub fn save(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let mut seen = std::collections::BTreeSet::new();
    if let Some((dup, _)) = tensors.iter().find(|(n, _)| !seen.insert(n.as_str())) {
        return Err(io_err(
            path,
            format!("two tensors are named `{dup}`; tensor names must be unique"),
        ));
    }
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
                .map_err(|e| io_err(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, None)
        .map_err(|e| io_err(path, format!("cannot serialise weights: {e}")))?;
    let tmp = temp_path(path)?;
    let written = write_then_rename(path, &tmp, &data);
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    remove_stale_temps(path);
    Ok(())
}

/// Removes `.<file name>.kiln-save-<pid>.tmp` files beside `path` whose
/// process no longer runs (they can only be left by a save that was killed).
/// Only where `/proc` tells which processes run; best effort, never an error.
fn remove_stale_temps(path: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.kiln-save-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn write_then_rename(path: &Path, tmp: &Path, data: &[u8]) -> Result<()> {
    let fail =
        |what: &str, e: std::io::Error| io_err(path, format!("cannot write weights ({what}): {e}"));
    let mut f = std::fs::File::create(tmp).map_err(|e| fail("create", e))?;
    f.write_all(data).map_err(|e| fail("write", e))?;
    f.sync_all().map_err(|e| fail("sync", e))?;
    if let Ok(meta) = std::fs::metadata(path) {
        f.set_permissions(meta.permissions())
            .map_err(|e| fail("keep permissions", e))?;
    }
    drop(f);
    std::fs::rename(tmp, path).map_err(|e| fail("rename", e))
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
