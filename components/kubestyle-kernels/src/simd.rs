//! Plain loops compiled for AVX-512 where the CPU has it.
//!
//! The crate is built for the baseline x86-64 (SSE2), so that one binary runs everywhere; the
//! compiler vectorises plain loops (the Winograd transforms, the moments, the norm) for 4 floats
//! at a time. [`with_avx512`] runs a closure inside a function compiled with AVX-512F enabled:
//! the closure is inlined there (`#[inline(always)]` on the work it calls) and its loops are
//! vectorised for 16 floats, where run-time detection found the feature. The operations and
//! their order are unchanged — Rust never reassociates float arithmetic or contracts
//! `a * b + c` into a fused multiply-add by itself — so the result is the same bit for bit
//! (tested: `with_and_without_avx512_agree`).

/// Whether the CPU has AVX-512F (detected once, cached by std).
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// `f()`, compiled for AVX-512F when the CPU has it (see the module's note), else as built.
#[inline(always)]
pub(crate) fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        #[target_feature(enable = "avx512f")]
        fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: a `target_feature` function's only requirement is that the CPU has the
        // feature, and `avx512()` detected AVX-512F at run time.
        #[allow(unsafe_code)]
        return unsafe { run(f) };
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Promise: the same float operations give the same bits compiled either way.
    #[test]
    fn with_and_without_avx512_agree() {
        #[inline(always)]
        fn work(x: &[f32]) -> (Vec<f32>, f64) {
            let y: Vec<f32> = x.iter().map(|v| (v * 1.7 + 0.3).max(0.0) - v * v).collect();
            let s = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            (y, s)
        }
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        assert_eq!(with_avx512(|| work(&x)), work(&x));
    }
}
