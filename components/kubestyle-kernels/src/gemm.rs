//! The crate's one `unsafe` call: [`matmul`], a safe wrapper around `gemm::gemm`'s raw-pointer
//! API. Every other module is compiled under the crate-wide `deny(unsafe_code)`.

/// `dst[m, n] = a[m, k] · b[k, n]`, all row-major and contiguous, on the calling thread.
///
/// Panics unless `a`, `b` and `dst` hold at least `m * k`, `k * n` and `m * n` values.
#[allow(unsafe_code)]
pub(crate) fn matmul(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], dst: &mut [f32]) {
    let len = |r: usize, c: usize| r.checked_mul(c).expect("matrix size overflows usize");
    assert!(a.len() >= len(m, k) && b.len() >= len(k, n) && dst.len() >= len(m, n));
    // Row strides as gemm takes them.
    let (Ok(k_rs), Ok(n_rs)) = (isize::try_from(k), isize::try_from(n)) else {
        panic!("matrix dimension over isize::MAX");
    };
    // SAFETY: `gemm::gemm(m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs,
    // rhs_cs, rhs_rs, alpha, beta, ..)` computes `dst := alpha·dst + beta·lhs·rhs` through raw
    // pointers. For row i < m, column j < n and inner index l < k it reads
    // `lhs + i·lhs_rs + l·lhs_cs` and `rhs + l·rhs_rs + j·rhs_cs` and writes
    // `dst + i·dst_rs + j·dst_cs`. With the column strides 1 and row strides k, n, n passed here
    // (exactly k and n: converted to `isize` without loss above) these are the element offsets
    // i·k + l < m·k into `a`, l·n + j < k·n into `b` and i·n + j < m·n into `dst`, all in bounds
    // by the assertion above, whose products are checked and cannot have wrapped (an empty
    // range touches nothing). Pointers from slices are non-null and aligned for `f32`.
    // `dst` comes from a `&mut` borrow, so no other reference (`a` and `b` included) aliases it
    // during the call, and `a` and `b` are only read. `read_dst = false` (with `alpha = 0`)
    // means `dst`'s previous contents are never read, only overwritten. `Parallelism::None`
    // runs everything on this thread before returning, so no pointer outlives its borrow.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n_rs,
            false,
            a.as_ptr(),
            1,
            k_rs,
            b.as_ptr(),
            1,
            n_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
