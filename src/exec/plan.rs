//! The memory plan: which buffer slot holds each scheduled value.
//!
//! Every buffer is sized and allocated once, at compile time. This first plan
//! gives each value its own slot; liveness-based reuse and in-place writes
//! slot into [`MemoryPlan::build`] without touching the executor.

/// Slot assignment for a schedule of values.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// `slot_of[step]` is the slot holding the value of that step.
    pub slot_of: Vec<usize>,
    /// Size in f32 elements of each slot.
    pub slot_len: Vec<usize>,
}

impl MemoryPlan {
    /// Plans slots for values of the given sizes (in schedule order).
    pub fn build(value_len: &[usize]) -> Self {
        MemoryPlan {
            slot_of: (0..value_len.len()).collect(),
            slot_len: value_len.to_vec(),
        }
    }
    /// Total bytes of all slots.
    pub fn bytes(&self) -> usize {
        self.slot_len.iter().sum::<usize>() * std::mem::size_of::<f32>()
    }
}
