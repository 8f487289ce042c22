//! Small numeric helpers: a median over a scratch buffer and a symmetric positive definite
//! solver (no allocation: callers own the buffers).

/// The median of `values`, sorting a copy in `scratch` (which must be at least as long).
/// `None` for an empty slice.
pub(crate) fn median(values: &[f64], scratch: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 || scratch.len() < n {
        return None;
    }
    let s = &mut scratch[..n];
    s.copy_from_slice(values);
    s.sort_unstable_by(f64::total_cmp);
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    })
}

/// Solves `a x = b` in place for a symmetric positive definite `n`×`n` matrix `a` (row-major;
/// overwritten by its Cholesky factor); `b` becomes `x`. False if `a` is not positive definite.
pub(crate) fn solve_spd(a: &mut [f64], b: &mut [f64], n: usize) -> bool {
    if a.len() < n * n || b.len() < n {
        return false;
    }
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    // L y = b, then Lᵀ x = y.
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k * n + i] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_lengths() {
        let mut s = [0.0; 8];
        assert_eq!(median(&[3.0, 1.0, 2.0], &mut s), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0], &mut s), Some(2.5));
        assert_eq!(median(&[], &mut s), None);
        assert_eq!(median(&[1.0; 9], &mut s), None);
    }

    #[test]
    fn solves_a_small_spd_system_and_refuses_a_singular_one() {
        // [[4,2],[2,3]] x = [2, 1] → x = [0.5, 0].
        let mut a = [4.0, 2.0, 2.0, 3.0];
        let mut b = [2.0, 1.0];
        assert!(solve_spd(&mut a, &mut b, 2));
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
        let mut a = [1.0, 1.0, 1.0, 1.0];
        let mut b = [1.0, 1.0];
        assert!(!solve_spd(&mut a, &mut b, 2));
    }
}
