//! Executables of a program with a symbolic batch ([`crate::BATCH`]): the
//! executable runs the specialisation for one concrete batch; a run whose
//! feeds carry another batch swaps in that batch's specialisation (built on
//! first use by the compiler, then cached), copying the parameters and state
//! over, so every batch sees one set of parameters and optimiser state.

use super::Executable;
use crate::dtype::Feed;
use crate::error::{KilnError, Result};
use crate::shape::{batch_multiple, dims_str};
use std::collections::BTreeMap;

/// Builds the executable of one concrete batch.
pub type Specialiser = Box<dyn Fn(usize) -> Result<Executable> + Send + Sync>;

/// The specialisations of a symbolic program (see the module docs).
pub struct Batching {
    build: Specialiser,
    /// Each input's symbolic shape.
    inputs: Vec<(String, Vec<usize>)>,
    /// The batch the executable holding this runs.
    batch: usize,
    /// The other batches' executables.
    cache: BTreeMap<usize, Executable>,
}

impl std::fmt::Debug for Batching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batching")
            .field("inputs", &self.inputs)
            .field("batch", &self.batch)
            .field("cached", &self.cache.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Batching {
    /// Specialisations built by `build`, for inputs of symbolic shapes
    /// `inputs`, the holder running batch `batch`.
    pub fn new(build: Specialiser, inputs: Vec<(String, Vec<usize>)>, batch: usize) -> Self {
        Batching {
            build,
            inputs,
            batch,
            cache: BTreeMap::new(),
        }
    }

    /// The batch `feeds` carry: every symbolic dimension `k·BATCH` of a fed
    /// input must be `k·b` for one `b`. `None` if no feed is symbolic.
    fn batch_of(&self, feeds: &[(&str, &dyn Feed)]) -> Result<Option<usize>> {
        let mut found: Option<(usize, &str)> = None;
        for (i, (name, t)) in feeds.iter().enumerate() {
            let Some((_, dims)) = self.inputs.iter().find(|(n, _)| n == name) else {
                continue; // unknown: the feed check names it
            };
            if feeds[..i].iter().any(|(n, _)| n == name) {
                continue; // fed twice: the feed check names it
            }
            let fits = |(&d, &got): (&usize, &usize)| d == got || batch_multiple(d).is_some();
            if t.shape().len() != dims.len() || !dims.iter().zip(t.shape()).all(fits) {
                return Err(KilnError::Shape {
                    op: "feed".into(),
                    message: format!(
                        "feed `{name}` has shape {:?}, but the input was declared with shape {}",
                        t.shape(),
                        dims_str(dims)
                    ),
                });
            }
            for (&d, &got) in dims.iter().zip(t.shape()) {
                let Some(k) = batch_multiple(d) else {
                    continue;
                };
                let b = got / k;
                let clash = found.filter(|&(other, _)| other != b);
                if got % k != 0 || clash.is_some() {
                    let why = match clash {
                        Some((other, first)) => format!("feed `{first}` has batch {other}"),
                        None => format!("{got} is no multiple of {k}"),
                    };
                    return Err(KilnError::Shape {
                        op: "feed".into(),
                        message: format!(
                            "feed `{name}` has shape {:?}, which does not fit its declared shape {} ({why})",
                            t.shape(),
                            dims_str(dims)
                        ),
                    });
                }
                found = Some((b, name));
            }
        }
        Ok(found.map(|f| f.0))
    }
}

impl Executable {
    /// Gives the executable its other batches' specialisations (see [`Batching`]).
    pub fn set_batching(&mut self, batching: Batching) {
        self.batching = Some(Box::new(batching));
    }

    /// The concrete batch the executable is specialised for now, if its
    /// program has a symbolic batch ([`crate::BATCH`]); each run takes the
    /// batch its feeds carry.
    pub fn batch(&self) -> Option<usize> {
        self.batching.as_ref().map(|b| b.batch)
    }

    /// Makes the executable run the batch `feeds` carry (a no-op when it
    /// has no symbolic batch or already runs that one).
    pub(super) fn select_batch(&mut self, feeds: &[(&str, &dyn Feed)]) -> Result<()> {
        let Some(bat) = self.batching.as_ref() else {
            return Ok(());
        };
        match bat.batch_of(feeds)? {
            Some(b) if b != bat.batch => {
                let mut bat = self.batching.take().expect("checked above");
                let next = self.take_over(&mut bat, b);
                let done = next.map(|mut next| {
                    std::mem::swap(self, &mut next);
                    bat.cache.insert(bat.batch, next);
                    bat.batch = b;
                });
                self.batching = Some(bat);
                done
            }
            _ => Ok(()),
        }
    }

    /// Batch `b`'s executable with this one's parameters, state, run count,
    /// mode and profile.
    fn take_over(&mut self, bat: &mut Batching, b: usize) -> Result<Executable> {
        let mut next = match bat.cache.remove(&b) {
            Some(e) => e,
            None => (bat.build)(b)?,
        };
        for (name, step) in &self.params {
            next.set_param_data(name, self.data(*step))?;
        }
        next.ctx = self.ctx;
        next.profile = self.profile.take();
        Ok(next)
    }
}
