//! Which vector instructions the kernels use: detected once per process
//! from the CPU (`is_x86_feature_detected!`), never chosen at compile time,
//! so one binary runs on any x86-64 CPU and takes the AVX2 paths where the
//! CPU has them. `KILN_SIMD=none` (read once, at the first kernel that
//! asks; any case) forces the portable paths everywhere, to test them or to
//! compare; `auto` or unset detects, and any other value is reported on
//! stderr and detects.

use std::sync::OnceLock;

/// The vector paths this process may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Simd {
    /// AVX (256-bit float vectors).
    pub avx: bool,
    /// AVX2 and FMA (the GEMM tile, 2x2 pooling).
    pub avx2_fma: bool,
}

/// What this CPU has, less what `KILN_SIMD=none` turns off.
pub fn simd() -> Simd {
    static LEVEL: OnceLock<Simd> = OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var("KILN_SIMD") {
        Ok(v) if v.eq_ignore_ascii_case("none") => Simd {
            avx: false,
            avx2_fma: false,
        },
        Ok(v) if !v.is_empty() && !v.eq_ignore_ascii_case("auto") => {
            // a typo must not silently keep the vector paths
            eprintln!(
                "kiln: KILN_SIMD={v:?} is not recognised (`none` forces the portable paths, \
                 `auto` detects the CPU's features); detecting"
            );
            detect()
        }
        _ => detect(),
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Simd {
    let avx = is_x86_feature_detected!("avx");
    Simd {
        avx,
        avx2_fma: avx && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Simd {
    Simd {
        avx: false,
        avx2_fma: false,
    }
}

/// Defines a function whose body is compiled twice: for AVX2 + FMA, run
/// when [`simd`] says the CPU has them, and for the target's baseline. What
/// the body inlines (row kernels, closures, loops the compiler vectorises)
/// is compiled for each, so one binary is as fast as a `target-cpu=native`
/// build where the CPU has AVX2 and still runs where it has not. A build
/// that enables AVX2 and FMA for the whole crate (`-C target-cpu=native` on
/// such a CPU) compiles the body once, with no dispatch. The arguments must
/// be plain (no `impl Trait`, no generics).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(all(
                target_arch = "x86_64",
                not(all(target_feature = "avx2", target_feature = "fma"))
            ))]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $body
                if $crate::kernels::simd::simd().avx2_fma {
                    // SAFETY: the CPU has AVX2 and FMA (detected).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}
pub(crate) use multiversion;
