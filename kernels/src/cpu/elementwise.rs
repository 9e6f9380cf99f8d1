//! A step's element-wise math on the CPU, in loops the compiler vectorizes: the gated feed-forward's
//! `silu(gate) * up` in one pass, with an exp of plain multiplies and adds (libm's `expf` is a call per
//! value, and candle's `silu` then `mul` two passes and a temporary).

/// `out[i] = silu(gate[i]) * up[i]` (`silu(g) = g / (1 + e^-g)`), over the shortest of the three.
pub fn silu_times(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        unsafe { silu_times_avx2(gate, up, out) };
        return;
    }
    silu_times_portable(gate, up, out);
}

/// The same loop on 256-bit vectors (no FMA: the same operations, so the same bits, as the portable one).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn silu_times_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    silu_times_portable(gate, up, out);
}

#[inline(always)]
fn silu_times_portable(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

/// Cephes' `expf`: `ln 2` in two parts (`x - n ln 2` exact enough in f32), and the coefficients of the
/// polynomial `p` in `e^r = 1 + r + r^2 p(r)`, highest first. The attention's vector exponentials use
/// them too.
pub const CEPHES_EXP_LN2: [f32; 2] = [0.693_359_4, -2.121_944_4e-4];
pub const CEPHES_EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` within two units in the last place over f32's range (Cephes' `expf`: `x = n ln 2 + r`, a
/// degree-6 polynomial in `r`, times `2^n` built in the exponent bits), without branches; `x` beyond
/// f32's range saturates (e^88.3 and e^-87.3: `silu` of a large negative value is then ~0, as it
/// should be). NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let [ln2_hi, ln2_lo] = CEPHES_EXP_LN2;
    // Adding 1.5 * 2^23 rounds to an integer in the low mantissa bits, with SSE2's plain adds.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * ln2_hi - n * ln2_lo;
    let [c0, c1, c2, c3, c4, c5] = CEPHES_EXP_POLY;
    let p = ((((c0 * r + c1) * r + c2) * r + c3) * r + c4) * r + c5;
    let e = p * r * r + r + 1.0;
    // `n` (-126..=127) sits in `shifted`'s low bits; 2^n is its biased exponent.
    let n_bits = shifted.to_bits().wrapping_sub(ROUNDER.to_bits()) as i32;
    e * f32::from_bits(((n_bits + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units in the last place between `a` and the exact `b`.
    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        let ulp = (f32::from_bits(b32.abs().to_bits() + 1) - b32.abs()) as f64;
        (a as f64 - b).abs() / ulp
    }

    #[test]
    fn exp_is_within_two_ulps_over_the_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp(x);
            let want = (x as f64).exp();
            assert!(ulps(got, want) <= 2.0, "exp({x}) = {got}, want {want}");
            x += 0.013_7;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn silu_times_matches_the_formula_in_f64() {
        let gate: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.0) * 0.031).collect();
        let up: Vec<f32> = (0..4099).map(|i| ((i * 7) % 13) as f32 - 6.5).collect();
        let mut out = vec![f32::NAN; gate.len()];
        silu_times(&gate, &up, &mut out);
        for ((&g, &u), &o) in gate.iter().zip(&up).zip(&out) {
            let (g, u) = (g as f64, u as f64);
            let want = g / (1.0 + (-g).exp()) * u;
            assert!(
                (o as f64 - want).abs() <= 4e-7 * want.abs() + 1e-30,
                "silu({g}) * {u} = {o}, want {want}"
            );
        }
        // Far out: silu(-100) is ~0 (no NaN from inf / inf), silu(100) is 100.
        silu_times(&[-100.0, 100.0], &[1.0, 1.0], &mut out[..2]);
        assert!(out[0] <= 0.0 && out[0] > -1e-30, "{}", out[0]);
        assert_eq!(out[1], 100.0);
    }
}
