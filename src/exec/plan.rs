//! The memory plan: which buffer slot, and where in it, holds each scheduled value.
//!
//! Every buffer is sized and allocated once, at compile time. This first plan
//! gives each value its own slot, except that an `Output` of a multi-output
//! op, a `Reshape` and a `StopGradient` are views into their operand's slot
//! (no copy; nothing writes a buffer after its step); liveness-based reuse and
//! in-place writes slot into [`MemoryPlan::build`] without touching the executor.

/// Where one scheduled value lives before planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// A buffer of its own, of this many f32 elements.
    Owned(usize),
    /// A view into step `of`'s buffer, starting `offset` elements in.
    View {
        /// The step whose buffer holds the value.
        of: usize,
        /// Offset in elements.
        offset: usize,
    },
}

/// Slot assignment for a schedule of values.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// `slot_of[step]` is the slot holding the value of that step.
    pub slot_of: Vec<usize>,
    /// `offset_of[step]`: where in its slot the value starts, in elements.
    pub offset_of: Vec<usize>,
    /// Size in f32 elements of each slot.
    pub slot_len: Vec<usize>,
    /// Whether each step's value is a view into another step's buffer.
    pub view: Vec<bool>,
}

impl MemoryPlan {
    /// Plans slots for values in schedule order (a view refers to an earlier step).
    pub fn build(values: &[Value]) -> Self {
        let mut plan = MemoryPlan {
            slot_of: Vec::with_capacity(values.len()),
            offset_of: Vec::with_capacity(values.len()),
            slot_len: Vec::new(),
            view: Vec::with_capacity(values.len()),
        };
        for v in values {
            let (slot, offset) = match *v {
                Value::Owned(len) => {
                    plan.slot_len.push(len);
                    (plan.slot_len.len() - 1, 0)
                }
                Value::View { of, offset } => (plan.slot_of[of], plan.offset_of[of] + offset),
            };
            plan.slot_of.push(slot);
            plan.offset_of.push(offset);
            plan.view.push(matches!(v, Value::View { .. }));
        }
        plan
    }
    /// Whether step `i` reads another step's buffer instead of computing its own.
    pub fn is_view(&self, i: usize) -> bool {
        self.view[i]
    }
    /// Total bytes of all slots.
    pub fn bytes(&self) -> usize {
        self.slot_len.iter().sum::<usize>() * std::mem::size_of::<f32>()
    }
}
