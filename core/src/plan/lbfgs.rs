//! L-BFGS (Nocedal & Wright, Algorithm 7.4 and 7.5): a quasi-Newton minimizer for smooth
//! functions of a few variables, with a backtracking line search on the Armijo condition. Small
//! and dependency-free; the scaling-law fit ([`super::fit`]) minimises a five-parameter Huber
//! loss with it.

/// When to stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbfgsOptions {
    /// Pairs (s, y) kept for the inverse-Hessian estimate.
    pub memory: usize,
    /// Iterations at most.
    pub max_iterations: usize,
    /// Stop when the largest gradient component is below this.
    pub gradient_tolerance: f64,
    /// Stop when an iteration improves the function by less than this, relative to
    /// `max(|f|, 1)`.
    pub function_tolerance: f64,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            memory: 10,
            max_iterations: 500,
            gradient_tolerance: 1e-9,
            function_tolerance: 1e-12,
        }
    }
}

/// Where the minimizer stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    /// The point.
    pub x: Vec<f64>,
    /// The function there.
    pub value: f64,
    /// Iterations taken.
    pub iterations: usize,
    /// It stopped on a tolerance (not on the iteration limit or a failed line search).
    pub converged: bool,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises `f` from `x0`. `f(x, grad)` returns the value at `x` and writes the gradient into
/// `grad`. A non-finite value counts as "too far" in the line search; a start with a
/// non-finite value or gradient returns the start, not converged.
pub fn minimize(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    options: &LbfgsOptions,
) -> Minimum {
    let n = x0.len();
    let mut x = x0.to_vec();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let stop = |x: Vec<f64>, value, iterations, converged| Minimum {
        x,
        value,
        iterations,
        converged,
    };
    if !fx.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return stop(x, fx, 0, false);
    }
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut rho_hist: Vec<f64> = Vec::new();
    let (mut x_new, mut g_new) = (vec![0.0; n], vec![0.0; n]);
    for iteration in 0..options.max_iterations {
        if g.iter().all(|v| v.abs() < options.gradient_tolerance) {
            return stop(x, fx, iteration, true);
        }
        // Two-loop recursion: d = -H·g.
        let mut q = g.clone();
        let mut alphas = vec![0.0; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            alphas[i] = rho_hist[i] * dot(&s_hist[i], &q);
            for (qj, yj) in q.iter_mut().zip(&y_hist[i]) {
                *qj -= alphas[i] * yj;
            }
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / g.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1.0),
        };
        for qj in q.iter_mut() {
            *qj *= gamma;
        }
        for i in 0..s_hist.len() {
            let beta = rho_hist[i] * dot(&y_hist[i], &q);
            for (qj, sj) in q.iter_mut().zip(&s_hist[i]) {
                *qj += (alphas[i] - beta) * sj;
            }
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (a stale curvature pair): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            let scale = 1.0 / g.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1.0);
            d = g.iter().map(|v| -v * scale).collect();
            slope = dot(&g, &d);
        }
        // Backtracking line search on the Armijo condition.
        let mut step = 1.0;
        let mut f_new = f64::NAN;
        let mut accepted = false;
        for _ in 0..60 {
            for j in 0..n {
                x_new[j] = x[j] + step * d[j];
            }
            f_new = f(&x_new, &mut g_new);
            if f_new.is_finite()
                && g_new.iter().all(|v| v.is_finite())
                && f_new <= fx + 1e-4 * step * slope
            {
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            return stop(x, fx, iteration, false);
        }
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let improvement = fx - f_new;
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
        // Keep the pair only where it gives positive curvature (the estimate stays positive
        // definite).
        if sy > 1e-12 * dot(&y, &y).max(f64::MIN_POSITIVE) {
            if s_hist.len() == options.memory {
                s_hist.remove(0);
                y_hist.remove(0);
                rho_hist.remove(0);
            }
            rho_hist.push(1.0 / sy);
            s_hist.push(s);
            y_hist.push(y);
        }
        if improvement.abs() <= options.function_tolerance * fx.abs().max(1.0) {
            return stop(x, fx, iteration + 1, true);
        }
    }
    stop(x, fx, options.max_iterations, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(x: &[f64], g: &mut [f64]) -> f64 {
        let (a, b) = (x[0], x[1]);
        g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
        g[1] = 200.0 * (b - a * a);
        (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
    }

    #[test]
    fn finds_the_rosenbrock_minimum() {
        let m = minimize(rosenbrock, &[-1.2, 1.0], &LbfgsOptions::default());
        assert!(m.converged, "{m:?}");
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
        assert!(m.value < 1e-12);
    }

    #[test]
    fn solves_an_ill_conditioned_quadratic_in_few_iterations() {
        // f = Σ c_i (x_i - i)², condition number 1e4.
        let c = [1.0, 10.0, 100.0, 1000.0, 10000.0];
        let f = |x: &[f64], g: &mut [f64]| {
            let mut v = 0.0;
            for i in 0..5 {
                let r = x[i] - i as f64;
                v += c[i] * r * r;
                g[i] = 2.0 * c[i] * r;
            }
            v
        };
        let m = minimize(f, &[10.0; 5], &LbfgsOptions::default());
        assert!(m.converged);
        for (i, xi) in m.x.iter().enumerate() {
            assert!((xi - i as f64).abs() < 1e-6, "{m:?}");
        }
        assert!(m.iterations < 100, "{} iterations", m.iterations);
    }

    #[test]
    fn a_non_finite_start_is_returned_unconverged() {
        let m = minimize(
            |x: &[f64], g: &mut [f64]| {
                g[0] = 1.0;
                x[0].ln()
            },
            &[-1.0],
            &LbfgsOptions::default(),
        );
        assert!(!m.converged);
        assert_eq!(m.x, vec![-1.0]);
    }

    #[test]
    fn the_line_search_backs_off_a_region_where_the_function_is_undefined() {
        // f = x - ln x on x > 0 (NaN below): minimum at x = 1.
        let f = |x: &[f64], g: &mut [f64]| {
            g[0] = 1.0 - 1.0 / x[0];
            x[0] - x[0].ln()
        };
        let m = minimize(f, &[8.0], &LbfgsOptions::default());
        assert!(m.converged, "{m:?}");
        assert!((m.x[0] - 1.0).abs() < 1e-6, "{m:?}");
    }
}
