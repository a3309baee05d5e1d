//! Source ops (`Input`, `Param`, `Constant`, `Fill`): no operands, no
//! gradient; and a serde format for floats that may be infinite.

use super::{fmt_f32, Arity, Grads, NodeId, OpBuilder, OpDef, RunCtx, View};
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Serialises an `f32` as a JSON number when finite and as the string
/// `"inf"`, `"-inf"` or `"nan"` otherwise, so `-inf` padding survives a dump.
pub mod serde_f32 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `v`.
    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f32(*v)
        } else {
            s.serialize_str(&super::fmt_f32(*v))
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f32),
        Str(String),
    }

    /// Reads a value written by `serialize`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(v) => Ok(v),
            NumOrStr::Str(s) => match s.as_str() {
                "inf" => Ok(f32::INFINITY),
                "-inf" => Ok(f32::NEG_INFINITY),
                "nan" => Ok(f32::NAN),
                other => Err(serde::de::Error::custom(format!("not a float: {other:?}"))),
            },
        }
    }
}

/// Defines an interface op (`Input`, `Param`): named, its shape declared at
/// [`crate::Graph::input`] / [`crate::Graph::param`], its value fed or loaded
/// by the executor.
macro_rules! interface_op {
    ($(#[$doc:meta])* $ty:ident, $name:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct $ty {
            /// The name (unique among the graph's inputs, or parameters).
            pub name: String,
        }
        impl OpDef for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn attrs(&self) -> Vec<(&'static str, String)> {
                vec![("name", format!("{:?}", self.name))]
            }
            fn arity(&self) -> Arity {
                Arity::Exact(0)
            }
            fn infer_shape(&self, _: &[&[usize]]) -> Result<Vec<usize>> {
                shape_err($name, "input and parameter shapes are declared, not inferred")
            }
            fn eval(&self, _: &[View], _: &mut [f32], _: &[usize], _: &RunCtx) {}
            fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, _: NodeId) -> Grads {
                Ok(vec![])
            }
            fn is_interface(&self) -> bool {
                true
            }
        }
    };
}

interface_op!(
    /// A value fed at run time by name.
    Input,
    "input"
);
interface_op!(
    /// A trainable parameter (or optimiser state); its value lives in the
    /// graph and the executable.
    Param,
    "param"
);

/// A constant tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constant {
    /// The value.
    pub value: Tensor,
}

impl OpDef for Constant {
    fn name(&self) -> &'static str {
        "constant"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![("checksum", fmt_f32(self.value.sum() as f32))]
    }
    fn arity(&self) -> Arity {
        Arity::Exact(0)
    }
    fn infer_shape(&self, _: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(self.value.shape().to_vec())
    }
    fn eval(&self, _: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        out.copy_from_slice(self.value.data())
    }
    fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, _: NodeId) -> Grads {
        Ok(vec![])
    }
    fn is_constant(&self) -> bool {
        true
    }
}

/// A tensor of `shape` filled with one value (a compact constant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fill {
    /// Output shape.
    pub shape: Vec<usize>,
    /// The value of every element.
    #[serde(with = "serde_f32")]
    pub value: f32,
}

impl OpDef for Fill {
    fn name(&self) -> &'static str {
        "fill"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![("value", fmt_f32(self.value))]
    }
    fn arity(&self) -> Arity {
        Arity::Exact(0)
    }
    fn infer_shape(&self, _: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(self.shape.clone())
    }
    fn map_sizes(&self, f: &dyn Fn(usize) -> usize) -> Option<super::Op> {
        let shape = self.shape.iter().map(|&d| f(d)).collect();
        Some(super::Op::Fill(Fill { shape, ..*self }))
    }
    fn eval(&self, _: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        out.fill(self.value)
    }
    fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, _: NodeId) -> Grads {
        Ok(vec![])
    }
    fn is_constant(&self) -> bool {
        true
    }
}
