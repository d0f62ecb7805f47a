//! Small dense symmetric linear algebra: Cholesky factor, solve and inverse of positive definite matrices (row-major).

/// A square matrix in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matrix {
    pub n: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn zeros(n: usize) -> Matrix {
        Matrix {
            n,
            data: vec![0.0; n.saturating_mul(n)],
        }
    }

    pub fn get(&self, row: usize, col: usize) -> f64 {
        self.data
            .get(row * self.n + col)
            .copied()
            .unwrap_or(f64::NAN)
    }

    pub fn set(&mut self, row: usize, col: usize, value: f64) {
        if let Some(slot) = self.data.get_mut(row * self.n + col) {
            *slot = value;
        }
    }

    pub fn add(&mut self, row: usize, col: usize, value: f64) {
        if let Some(slot) = self.data.get_mut(row * self.n + col) {
            *slot += value;
        }
    }

    /// `self * v`.
    pub fn times(&self, v: &[f64]) -> Vec<f64> {
        (0..self.n)
            .map(|r| {
                (0..self.n)
                    .map(|c| self.get(r, c) * v.get(c).copied().unwrap_or(0.0))
                    .sum()
            })
            .collect()
    }
}

/// Lower Cholesky factor L with A = L L^T, or `None` when A is not
/// (numerically) positive definite: a pivot not above a tiny fraction of
/// the diagonal's scale, or anything not finite.
pub(crate) fn cholesky(a: &Matrix) -> Option<Matrix> {
    let n = a.n;
    let scale = (0..n).map(|i| a.get(i, i).abs()).fold(0.0, f64::max);
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let mut l = Matrix::zeros(n);
    for j in 0..n {
        let mut pivot = a.get(j, j);
        for k in 0..j {
            pivot -= l.get(j, k) * l.get(j, k);
        }
        if pivot.is_nan() || pivot <= scale * 1e-12 || !pivot.is_finite() {
            return None;
        }
        let root = pivot.sqrt();
        l.set(j, j, root);
        for i in (j + 1)..n {
            let mut v = a.get(i, j);
            for k in 0..j {
                v -= l.get(i, k) * l.get(j, k);
            }
            l.set(i, j, v / root);
        }
    }
    Some(l)
}

/// Solves L L^T x = b.
pub(crate) fn cholesky_solve(l: &Matrix, b: &[f64]) -> Vec<f64> {
    let n = l.n;
    let mut y = vec![0.0; n];
    for i in 0..n {
        let mut v = b.get(i).copied().unwrap_or(0.0);
        for (k, y_k) in y.iter().enumerate().take(i) {
            v -= l.get(i, k) * y_k;
        }
        y[i] = v / l.get(i, i);
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut v = y[i];
        for (k, x_k) in x.iter().enumerate().skip(i + 1) {
            v -= l.get(k, i) * x_k;
        }
        x[i] = v / l.get(i, i);
    }
    x
}

/// A^-1 from A's Cholesky factor, column by column.
pub(crate) fn cholesky_inverse(l: &Matrix) -> Matrix {
    let n = l.n;
    let mut inverse = Matrix::zeros(n);
    for c in 0..n {
        let mut unit = vec![0.0; n];
        unit[c] = 1.0;
        let column = cholesky_solve(l, &unit);
        for (r, v) in column.into_iter().enumerate() {
            inverse.set(r, c, v);
        }
    }
    inverse
}

/// Positions of the upper triangle (including the diagonal) of an n x n
/// matrix in the order the per-patient vectors use: row by row.
pub(crate) fn upper_triangle(n: usize) -> Vec<(usize, usize)> {
    (0..n).flat_map(|i| (i..n).map(move |j| (i, j))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_inverts_a_small_system() {
        let a = Matrix {
            n: 3,
            data: vec![4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0],
        };
        let l = cholesky(&a).unwrap();
        let x = cholesky_solve(&l, &[1.0, 2.0, 3.0]);
        let back = a.times(&x);
        for (got, want) in back.iter().zip([1.0, 2.0, 3.0]) {
            assert!((got - want).abs() < 1e-12);
        }
        let inverse = cholesky_inverse(&l);
        for r in 0..3 {
            let column: Vec<f64> = (0..3).map(|c| inverse.get(c, r)).collect();
            let unit = a.times(&column);
            for (c, v) in unit.iter().enumerate() {
                assert!((v - if c == r { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn refuses_what_is_not_positive_definite() {
        let singular = Matrix {
            n: 2,
            data: vec![1.0, 1.0, 1.0, 1.0],
        };
        assert!(cholesky(&singular).is_none());
        let nan = Matrix {
            n: 1,
            data: vec![f64::NAN],
        };
        assert!(cholesky(&nan).is_none());
        assert!(cholesky(&Matrix::zeros(0)).is_none());
    }
}
