//! Nearest-rank percentiles.

/// The `pct`-th percentile of `sorted` (ascending) by the nearest-rank
/// method: the ⌈pct/100 · n⌉-th smallest value, counting from 1 and never
/// below the first. `None` when `sorted` is empty.
///
/// The rank is computed in integers (`⌈pct·n / 100⌉`), so `p95` of 20 values
/// is exactly the 19th, with no floating-point rounding to push it to the 20th.
pub(crate) fn nearest_rank<T: Copy>(sorted: &[T], pct: u32) -> Option<T> {
    debug_assert!((1..=100).contains(&pct), "percentile {pct} out of 1..=100");
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (pct as usize * n).div_ceil(100).clamp(1, n);
    Some(sorted[rank - 1])
}
