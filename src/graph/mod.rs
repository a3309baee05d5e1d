//! The graph IR: a `petgraph` `StableDiGraph` whose nodes carry an op, the
//! output shape and an optional name, and whose edges carry the operand index.
//! Shapes are inferred when a node is added, so a wrong shape is an `Err` at
//! build time.

pub mod dump;
mod init;
pub mod order;
mod program;
mod rewrite;

pub use init::Init;
pub use program::Program;

use crate::dtype::DType;
use crate::error::{KilnError, Result};
use crate::ops::{Input, Output, Param};
use crate::ops::{Op, OpBuilder};
use crate::rng::mix64;
use crate::shape::{checked_numel, checked_size, Shape};
use crate::tensor::Tensor;
use petgraph::stable_graph::StableDiGraph;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::BTreeMap;

pub use crate::ops::builder::NodeId;

/// A node: its op, its output shape, an optional name, and its creation order.
#[derive(Clone, Debug)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// The output shape, inferred from the operands.
    pub shape: Shape,
    /// The element type, inferred from the operands (f32 unless the node
    /// carries `i64` indices, see [`crate::dtype`]).
    pub dtype: DType,
    /// A human-readable name shown in dumps (`conv2d_0.weight`).
    pub name: Option<String>,
    /// Creation order, used to break ties deterministically.
    pub(crate) seq: usize,
}

/// A graph's identity: every new graph gets its own, clones keep theirs.
#[derive(Clone, Debug)]
struct Tag(u32);

impl Default for Tag {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        Tag(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// A static op graph under construction.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub(crate) g: StableDiGraph<Node, usize>,
    tag: Tag,
    inputs: BTreeMap<String, NodeId>,
    params: BTreeMap<String, (NodeId, Tensor)>,
    /// Parameters that hold state (optimiser buffers), not trainable weights.
    state: std::collections::BTreeSet<String>,
    /// Layer state a training step updates: `(state, new value)`.
    state_updates: Vec<(NodeId, NodeId)>,
    /// `(node, axes, who)`: compiling for training needs at least two
    /// values of `node` over `axes` (batch statistics); `who` names the layer.
    training_checks: Vec<(NodeId, Vec<usize>, String)>,
    next_seq: usize,
    seed: u64,
    name_counters: BTreeMap<String, usize>,
}

impl OpBuilder for Graph {
    fn add_op(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId> {
        Graph::add_op(self, op, operands)
    }
    fn shape(&self, id: NodeId) -> Result<&[usize]> {
        Graph::shape(self, id)
    }
}

impl Graph {
    /// An empty graph; parameters are initialised from seed 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty graph whose random parameter initialisers draw from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Graph {
            seed,
            ..Self::default()
        }
    }

    /// Adds a node applying `op` to `operands`, inferring its shape.
    /// `Err` if an operand is not in this graph, the shapes do not fit the
    /// op, or the result has more elements than a buffer can hold
    /// ([`crate::shape::MAX_ELEMENTS`], all outputs of the op together).
    pub fn add_op(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId> {
        let ins: Vec<Operand> = operands
            .iter()
            .map(|&id| {
                self.node(id).map(|n| Operand {
                    shape: n.shape.dims(),
                    op: &n.op,
                    id: Some(id),
                })
            })
            .collect::<Result<_>>()?;
        let shape = infer_node(&op, &ins)?;
        let dtypes = operands
            .iter()
            .map(|&id| Ok(self.node(id)?.dtype))
            .collect::<Result<Vec<DType>>>()?;
        let dtype = op.def().dtype(&dtypes)?;
        Ok(self.insert(op, Shape(shape), dtype, operands))
    }

    fn insert(&mut self, op: Op, shape: Shape, dtype: DType, operands: &[NodeId]) -> NodeId {
        let seq = self.next_seq;
        self.next_seq += 1;
        let idx = self.g.add_node(Node {
            op,
            shape,
            dtype,
            name: None,
            seq,
        });
        for (i, &src) in operands.iter().enumerate() {
            self.g.add_edge(src.0, idx, i);
        }
        self.id(idx)
    }

    /// The creation number the next node will get.
    pub(crate) fn next_seq(&self) -> usize {
        self.next_seq
    }

    /// Removes a node that nothing uses (inputs and parameters are never removed).
    pub(crate) fn remove_node(&mut self, id: NodeId) {
        let removable = self
            .g
            .node_weight(id.0)
            .is_some_and(|n| !n.op.is_interface());
        if removable && self.users(id).is_empty() {
            self.g.remove_node(id.0);
        }
    }

    /// Declares a named f32 input of `shape`, fed at run time with a
    /// [`Tensor`]. `Err` if the name is empty or taken, or the shape has
    /// more elements than a buffer can hold ([`crate::shape::MAX_ELEMENTS`]).
    pub fn input(&mut self, name: &str, shape: impl Into<Shape>) -> Result<NodeId> {
        self.typed_input(name, shape.into(), DType::F32)
    }

    /// Declares a named `i64` input of `shape` (class labels, embedding or
    /// gather indices; PyTorch's `torch.long`), fed at run time with an
    /// [`crate::I64Tensor`]. Only index-reading ops, movement ops and
    /// `to_f32` take it (see [`crate::dtype`]). `Err` as [`Graph::input`].
    pub fn input_i64(&mut self, name: &str, shape: impl Into<Shape>) -> Result<NodeId> {
        self.typed_input(name, shape.into(), DType::I64)
    }

    fn typed_input(&mut self, name: &str, shape: Shape, dtype: DType) -> Result<NodeId> {
        checked_numel(&format!("input {name:?}"), shape.dims())?;
        self.claim_name(name)?;
        let id = self.insert(Op::Input(Input { name: name.into() }), shape, dtype, &[]);
        self.inputs.insert(name.into(), id);
        self.set_name(id, name);
        Ok(id)
    }

    /// Declares a trainable parameter of `shape`, initialised by `init`.
    pub fn param(&mut self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<NodeId> {
        self.add_param(name, shape.into(), init)
    }

    /// Declares a non-trainable state tensor (optimiser buffers, counters):
    /// stored and updated like a parameter, but not returned by
    /// [`Graph::trainable_params`].
    pub fn state(&mut self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<NodeId> {
        let id = self.add_param(name, shape.into(), init)?;
        self.state.insert(name.into());
        Ok(id)
    }

    /// Declares that a training step writes `value` into `state` after each
    /// run (all reads in that run see the old value): how a layer keeps
    /// state of its own, such as BatchNorm's running statistics (PyTorch's
    /// buffers updated in `forward`). [`crate::Trainer`] applies these
    /// updates beside its optimiser's, and saves and loads these states
    /// with the parameters; an evaluation reads them. `Err` if `state` is
    /// not a state tensor of this graph (see [`Graph::state`]), already has
    /// an update, or differs from `value` in shape.
    pub fn update_state(&mut self, state: NodeId, value: NodeId) -> Result<()> {
        let (node, vshape) = (self.node(state)?, self.shape(value)?);
        let name = match &node.op {
            Op::Param(Param { name }) if self.state.contains(name) => name.clone(),
            Op::Param(Param { name }) => {
                return Err(KilnError::Invalid(format!(
                    "update_state: `{name}` is a trainable parameter, not a state tensor (the optimiser updates it); declare state with Graph::state"
                )))
            }
            op => {
                return Err(KilnError::Invalid(format!(
                    "update_state: %{} is a `{}`, not a state tensor: declare it with Graph::state",
                    state.index(),
                    op.name()
                )))
            }
        };
        if node.shape.dims() != vshape {
            return Err(KilnError::Shape {
                op: "update_state".into(),
                message: format!(
                    "new value for `{name}` has shape {vshape:?}, the state has {}",
                    node.shape
                ),
            });
        }
        if self.state_updates.iter().any(|u| u.0 == state) {
            return Err(KilnError::Invalid(format!(
                "update_state: `{name}` already has an update: give each state one new value"
            )));
        }
        self.state_updates.push((state, value));
        Ok(())
    }

    /// Makes compiling for training refuse, naming `who`, a graph in which
    /// `node` has fewer than two values over `axes` (PyTorch's BatchNorm
    /// raises "expected more than 1 value per channel when training"). The
    /// sizes are checked as compiled, after a symbolic batch is specialised.
    pub(crate) fn require_two_in_training(&mut self, node: NodeId, axes: Vec<usize>, who: &str) {
        self.training_checks.push((node, axes, who.into()));
    }

    /// `Err` naming the layer if a [`Graph::require_two_in_training`] check fails.
    pub(crate) fn check_training(&self) -> Result<()> {
        for (node, axes, who) in &self.training_checks {
            let Ok(shape) = self.shape(*node) else {
                continue;
            };
            if axes.iter().map(|&a| shape[a]).product::<usize>() < 2 {
                return Err(KilnError::Shape {
                    op: who.clone(),
                    message: format!(
                        "expected more than 1 value per channel when training, got input of shape {shape:?}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The layer-state updates declared with [`Graph::update_state`], as
    /// `(state, new value)` in declaration order.
    pub fn state_updates(&self) -> &[(NodeId, NodeId)] {
        &self.state_updates
    }

    fn add_param(&mut self, name: &str, shape: Shape, init: Init) -> Result<NodeId> {
        checked_numel(&format!("param {name:?}"), shape.dims())?;
        if crate::shape::is_symbolic(shape.dims()) {
            return Err(KilnError::Invalid(format!(
                "param {name:?}: a parameter's shape cannot hold the symbolic batch (BATCH)"
            )));
        }
        let salt = mix64(self.seed ^ mix64(self.params.len() as u64 + 1));
        let value = init.materialize(name, &shape, salt)?;
        self.claim_name(name)?;
        let id = self.insert(
            Op::Param(Param { name: name.into() }),
            shape,
            DType::F32,
            &[],
        );
        self.params.insert(name.into(), (id, value));
        self.set_name(id, name);
        Ok(id)
    }

    fn claim_name(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(KilnError::Invalid(
                "input and parameter names must not be empty".into(),
            ));
        }
        if self.inputs.contains_key(name) || self.params.contains_key(name) {
            return Err(KilnError::DuplicateName(name.into()));
        }
        Ok(())
    }

    /// The node behind `id`, or `Err` if it is not in this graph.
    pub fn node(&self, id: NodeId) -> Result<&Node> {
        self.g
            .node_weight(id.0)
            .filter(|_| self.owns(id))
            .ok_or_else(|| KilnError::UnknownNode(id.index()))
    }

    /// The handle of the node at `index`.
    pub(crate) fn id(&self, index: petgraph::stable_graph::NodeIndex) -> NodeId {
        NodeId(index, self.tag.0)
    }

    /// Whether `id` is a handle of this graph (or one it was cloned from).
    fn owns(&self, id: NodeId) -> bool {
        id.1 == self.tag.0
    }

    /// The output shape of `id`.
    pub fn shape(&self, id: NodeId) -> Result<&[usize]> {
        Ok(self.node(id)?.shape.dims())
    }

    /// The element type of `id` (see [`crate::dtype`]).
    pub fn dtype(&self, id: NodeId) -> Result<DType> {
        Ok(self.node(id)?.dtype)
    }

    /// Gives node `id` a human-readable name (shown in dumps).
    pub fn set_name(&mut self, id: NodeId, name: impl Into<String>) {
        let owned = self.owns(id);
        if let Some(n) = self.g.node_weight_mut(id.0).filter(|_| owned) {
            n.name = Some(name.into());
        }
    }

    /// A fresh name `"{prefix}_{k}"` for layer `k` of a kind (`conv2d_0`, `conv2d_1`...).
    pub fn fresh_name(&mut self, prefix: &str) -> String {
        let c = self.name_counters.entry(prefix.into()).or_insert(0);
        *c += 1;
        format!("{prefix}_{}", *c - 1)
    }

    /// The operands of `id`, in operand order (none for a node of another graph).
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        if !self.owns(id) {
            return Vec::new();
        }
        let mut e: Vec<(usize, NodeId)> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| (*e.weight(), self.id(e.source())))
            .collect();
        e.sort();
        e.into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes that use `id` as an operand (each once), in creation order
    /// (none for a node of another graph).
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        if !self.owns(id) {
            return Vec::new();
        }
        let mut u: Vec<NodeId> = self
            .g
            .neighbors_directed(id.0, Direction::Outgoing)
            .map(|i| self.id(i))
            .collect();
        u.sort_by_key(|n| self.g[n.0].seq);
        u.dedup();
        u
    }

    /// All node ids, in creation order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.g.node_indices().map(|i| self.id(i)).collect();
        v.sort_by_key(|n| self.g[n.0].seq);
        v
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// The named inputs (fed at run time).
    pub fn inputs(&self) -> impl Iterator<Item = (&str, NodeId)> {
        self.inputs.iter().map(|(k, &v)| (k.as_str(), v))
    }

    /// The named parameters with their current values.
    pub fn params(&self) -> impl Iterator<Item = (&str, NodeId, &Tensor)> {
        self.params.iter().map(|(k, (id, t))| (k.as_str(), *id, t))
    }

    /// The trainable parameters (all parameters but state), by name.
    pub fn trainable_params(&self) -> Vec<(String, NodeId)> {
        self.params
            .iter()
            .filter(|(k, _)| !self.state.contains(*k))
            .map(|(k, (id, _))| (k.clone(), *id))
            .collect()
    }

    /// The declared shape of parameter `name`.
    pub fn shape_of_param(&self, name: &str) -> Result<&[usize]> {
        let (id, _) = self
            .params
            .get(name)
            .ok_or_else(|| KilnError::Invalid(format!("no parameter named `{name}`")))?;
        self.shape(*id)
    }

    /// The current value of parameter `name`.
    pub fn param_value(&self, name: &str) -> Option<&Tensor> {
        self.params.get(name).map(|(_, t)| t)
    }

    /// Replaces the value of parameter `name`; `Err` if unknown or of another shape.
    pub fn set_param_value(&mut self, name: &str, value: Tensor) -> Result<()> {
        let (id, slot) = self
            .params
            .get_mut(name)
            .ok_or_else(|| KilnError::Invalid(format!("no parameter named `{name}`")))?;
        let want = self.g[id.0].shape.dims();
        if value.shape() != want {
            return Err(KilnError::Shape {
                op: "param".into(),
                message: format!(
                    "value for `{name}` has shape {:?}, the parameter has {want:?}",
                    value.shape()
                ),
            });
        }
        *slot = value;
        Ok(())
    }
}

/// An operand as [`infer_node`] sees it: its shape, its op and, for a node
/// already in a graph, its id (for messages).
pub(crate) struct Operand<'a> {
    pub shape: &'a [usize],
    pub op: &'a Op,
    pub id: Option<NodeId>,
}

/// The shape of a node applying `op` to `operands`, with every check
/// [`Graph::add_op`] makes, without adding it: the op's shape rule, the
/// result's size (all outputs together at most
/// [`crate::shape::MAX_ELEMENTS`]), and that a multi-output operand is read
/// only through an `Output` node naming one of its outputs.
pub(crate) fn infer_node(op: &Op, operands: &[Operand]) -> Result<Vec<usize>> {
    let shapes: Vec<&[usize]> = operands.iter().map(|o| o.shape).collect();
    let shape = op.infer_shape(&shapes)?;
    let numel = checked_numel(op.name(), &shape)?;
    checked_size(
        op.name(),
        "size of all outputs together",
        numel.checked_mul(op.num_outputs()),
    )?;
    for (i, o) in operands.iter().enumerate() {
        let n = o.op.num_outputs();
        let at =
            o.id.map_or_else(|| "a new node".to_string(), |id| format!("%{}", id.index()));
        match op {
            Op::Output(Output { index }) if *index >= n => {
                return Err(KilnError::Attr {
                    op: "output".into(),
                    message: format!(
                        "operand {at} (`{}`) has {n} output(s), there is no output {index}",
                        o.op.name()
                    ),
                })
            }
            Op::Output(_) => {}
            _ if n > 1 => {
                return Err(KilnError::Invalid(format!(
                "operand {i} of `{}` is `{}`, which has {n} outputs: take one with Graph::output",
                op.name(),
                o.op.name()
            )))
            }
            _ => {}
        }
    }
    Ok(shape)
}
