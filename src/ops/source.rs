//! Source ops (`Input`, `Param`, `Constant`, `Fill`) take no operands; this file
//! holds what they share: a serde format for floats that may be infinite.

/// Serialises an `f32` as a JSON number when finite and as the string
/// `"inf"`, `"-inf"` or `"nan"` otherwise, so `-inf` padding survives a dump.
pub mod serde_f32 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `v`.
    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f32(*v)
        } else {
            s.serialize_str(&super::super::fmt_f32(*v))
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
