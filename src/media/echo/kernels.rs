//! The echo canceller's inner loops: exact energies, dot products over
//! sixteen independent lanes (also compiled for AVX2 and taken when the CPU
//! has it: the same sums bit for bit), the NLMS update, and the taps moved
//! when the filter's window moves.

use super::{FRAME, POWER_SMOOTHING};

/// (1 − k)ʲ for j < FRAME, k the power smoothing: how much of a sample's
/// power a smoothed power still holds j samples later.
pub(super) fn quiet_decay() -> &'static [f32; FRAME] {
    static DECAY: std::sync::OnceLock<[f32; FRAME]> = std::sync::OnceLock::new();
    DECAY.get_or_init(|| {
        let mut decay = [1.0f32; FRAME];
        for j in 1..FRAME {
            decay[j] = decay[j - 1] * (1.0 - POWER_SMOOTHING);
        }
        decay
    })
}

/// Σ xᵢ² in f64: exact for samples of 16 bits scaled to full scale 1.
pub(super) fn energy_exact(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

/// The filter's inner loops, compiled twice: for the baseline x86-64
/// (SSE2) and for AVX2, taken when the CPU has it (the same sixteen lanes in
/// two registers instead of four: the same sums, bit for bit).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (just checked).
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

pub(super) fn weighted_energy(g: &[f32], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (just checked).
        return unsafe { weighted_energy_avx2(g, x) };
    }
    weighted_energy_lanes(g, x)
}

/// wᵢ += gain·gᵢ·xᵢ (the background's NLMS update).
pub(super) fn adapt(w: &mut [f32], g: &[f32], x: &[f32], gain: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (just checked).
        return unsafe { adapt_avx2(w, g, x, gain) };
    }
    adapt_lanes(w, g, x, gain);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn weighted_energy_avx2(g: &[f32], x: &[f32]) -> f32 {
    weighted_energy_lanes(g, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adapt_avx2(w: &mut [f32], g: &[f32], x: &[f32], gain: f32) {
    adapt_lanes(w, g, x, gain);
}

#[inline(always)]
pub(super) fn adapt_lanes(w: &mut [f32], g: &[f32], x: &[f32], gain: f32) {
    for ((w, g), v) in w.iter_mut().zip(g).zip(x) {
        *w += gain * g * v;
    }
}

/// Σ aᵢbᵢ over sixteen lanes (the compiler vectorises independent sums,
/// and sixteen keep two or four vector additions in flight; one running
/// sum it must keep in order).
#[inline(always)]
pub(super) fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a16, b16) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a16
        .remainder()
        .iter()
        .zip(b16.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a16.zip(b16) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Σ gᵢxᵢ², as [`dot_lanes`].
#[inline(always)]
pub(super) fn weighted_energy_lanes(g: &[f32], x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (g16, x16) = (g.chunks_exact(LANES), x.chunks_exact(LANES));
    let tail: f32 = g16
        .remainder()
        .iter()
        .zip(x16.remainder())
        .map(|(g, x)| g * x * x)
        .sum();
    for (g, x) in g16.zip(x16) {
        for l in 0..LANES {
            lanes[l] += g[l] * x[l] * x[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Independent partial sums of the filter's dot products.
const LANES: usize = 16;

/// Weights (oldest first) of a window whose offset grew by `shift` taps:
/// each weight stays with the same delay, so it moves `shift` places
/// towards the newest end; taps that fall out are dropped, new ones start
/// at zero.
pub(super) fn shift_taps(weights: &mut [f32], shift: isize) {
    let n = weights.len();
    if shift.unsigned_abs() >= n {
        weights.fill(0.0);
    } else if shift > 0 {
        let s = shift as usize;
        weights.copy_within(..n - s, s);
        weights[..s].fill(0.0);
    } else if shift < 0 {
        let s = shift.unsigned_abs();
        weights.copy_within(s.., 0);
        weights[n - s..].fill(0.0);
    }
}
