//! The one error type of kiln. Every public fallible call returns [`Result`].

use thiserror::Error;

/// Everything that can go wrong when building, compiling or running a graph.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KilnError {
    /// An operand's shape does not fit the op (names the op, the operand and the shapes).
    #[error("shape error in `{op}`: {message}")]
    Shape {
        /// The op whose shape rule failed.
        op: String,
        /// What was wrong, naming the operand and both shapes.
        message: String,
    },
    /// An attribute has an invalid value (zero stride, axis out of range, ...).
    #[error("invalid attribute for `{op}`: {message}")]
    Attr {
        /// The op or layer whose attribute is invalid.
        op: String,
        /// What was wrong.
        message: String,
    },
    /// A node id that does not belong to this graph.
    #[error("unknown node %{0}: it is not part of this graph")]
    UnknownNode(usize),
    /// A name that is already taken by another input or parameter.
    #[error("duplicate name `{0}`: inputs and parameters need unique names")]
    DuplicateName(String),
    /// `run` was not given a value for an input of the graph.
    #[error("missing feed for input `{0}`")]
    MissingFeed(String),
    /// `run` was given a value for a name that is no input of the compiled graph.
    #[error("unknown feed `{name}`: the graph's inputs are {known:?}")]
    UnknownFeed {
        /// The name that was fed.
        name: String,
        /// The input names the graph has.
        known: Vec<String>,
    },
    /// A feed's shape differs from the input's declared shape.
    #[error(
        "feed `{name}` has shape {got:?}, but the input was declared with shape {expected:?}{}",
        batch_hint(expected, got)
    )]
    FeedShape {
        /// Input name.
        name: String,
        /// Declared shape.
        expected: Vec<usize>,
        /// Shape that was fed.
        got: Vec<usize>,
    },
    /// A tensor was built from data whose length does not match its shape.
    #[error("tensor data has {len} elements but shape {shape:?} needs {expected}")]
    TensorData {
        /// The requested shape.
        shape: Vec<usize>,
        /// Number of elements the shape needs.
        expected: usize,
        /// Number of elements given.
        len: usize,
    },
    /// An operand's element type does not fit the op (an `i64` index where
    /// the op computes in f32, or the other way round), or a feed's type
    /// differs from its input's.
    #[error("type error in `{op}`: {message}")]
    Type {
        /// The op (or input) whose type rule failed.
        op: String,
        /// What was wrong, naming the operand and its type.
        message: String,
    },
    /// A fed index is out of the range an op reading it allows (PyTorch
    /// raises `IndexError` there).
    #[error("index out of range in feed `{feed}`: {message}")]
    Index {
        /// The input whose feed holds the index.
        feed: String,
        /// The position, the value, the op and its range.
        message: String,
    },
    /// Anything else that is invalid about a request (unknown model name, bad option...).
    #[error("{0}")]
    Invalid(String),
}

/// kiln's result type.
pub type Result<T, E = KilnError> = std::result::Result<T, E>;

/// Shorthand for a shape error of `op`.
pub(crate) fn shape_err<T>(op: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(KilnError::Shape {
        op: op.into(),
        message: message.into(),
    })
}

/// Shorthand for an attribute error of `op`.
pub(crate) fn attr_err<T>(op: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(KilnError::Attr {
        op: op.into(),
        message: message.into(),
    })
}

/// For a feed that differs from its input only in the first dimension: how
/// to declare a batch that may vary.
fn batch_hint(expected: &[usize], got: &[usize]) -> &'static str {
    let only_first = !expected.is_empty()
        && expected.len() == got.len()
        && expected[0] != got[0]
        && expected[1..] == got[1..];
    if only_first {
        " (declare the first dimension as kiln::BATCH to feed any batch size)"
    } else {
        ""
    }
}
