//! Fitting a scaling law to one's own runs, as Hoffmann et al. 2022 did:
//!
//! - Approach 3: L(N, D) = E + A/N^α + B/D^β, fitted by minimising the Huber loss
//!   (δ = 10⁻³) of the residuals log L̂ − log L, with L̂ written in log-sum-exp form
//!   (L̂ = exp(LSE(a − α log N, b − β log D, e)), A = eᵃ, B = eᵇ, E = eᵉ), by L-BFGS from the
//!   best points of a grid of starts ([`fit_law`]); bootstrap intervals over the runs, each
//!   resample's fit started from the best fit ([`bootstrap`]).
//! - Approach 2: per compute budget, a parabola of loss against log N (and log D) and its
//!   minimum ([`parabola_minimum`]); across budgets, N_opt ∝ C^a ([`power_law`]).

use super::lbfgs::{minimize, LbfgsOptions};
use super::scaling::LossFit;
use serde::Serialize;

/// Huber δ of the fit (Chinchilla's).
pub const HUBER_DELTA: f64 = 1e-3;

/// Coverage of the bootstrap intervals.
pub const INTERVAL: f64 = 0.95;

/// One run: parameters, training tokens, final loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Observation {
    /// N.
    pub params: f64,
    /// D.
    pub tokens: f64,
    /// Final validation loss (nats per token).
    pub loss: f64,
}

/// The constants of L(N, D) = E + A/N^α + B/D^β.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Law {
    /// Irreducible loss E.
    pub e: f64,
    /// Model-size coefficient A.
    pub a: f64,
    /// Data coefficient B.
    pub b: f64,
    /// Model-size exponent α.
    pub alpha: f64,
    /// Data exponent β.
    pub beta: f64,
}

impl Law {
    /// L(N, D).
    pub fn loss(&self, params: f64, tokens: f64) -> f64 {
        self.e + self.a / params.powf(self.alpha) + self.b / tokens.powf(self.beta)
    }

    /// The law as a [`LossFit`] called `name` (its compute-optimal allocation under C = 6ND).
    pub fn as_loss_fit(&self, name: &'static str, source: &'static str) -> LossFit {
        LossFit {
            name,
            source,
            e: self.e,
            a: self.a,
            b: self.b,
            alpha: self.alpha,
            beta: self.beta,
        }
    }

    /// The law of a published fit.
    pub fn of(fit: &LossFit) -> Law {
        Law {
            e: fit.e,
            a: fit.a,
            b: fit.b,
            alpha: fit.alpha,
            beta: fit.beta,
        }
    }

    /// θ = (a, b, e, α, β) = (log A, log B, log E, α, β).
    fn theta(&self) -> [f64; 5] {
        [self.a.ln(), self.b.ln(), self.e.ln(), self.alpha, self.beta]
    }

    fn from_theta(t: &[f64]) -> Law {
        Law {
            a: t[0].exp(),
            b: t[1].exp(),
            e: t[2].exp(),
            alpha: t[3],
            beta: t[4],
        }
    }

    /// The five constants in a fixed order (E, A, B, α, β).
    pub fn values(&self) -> [f64; 5] {
        [self.e, self.a, self.b, self.alpha, self.beta]
    }

    /// Every constant finite (θ can run off to where A = eᵃ overflows).
    pub fn is_finite(&self) -> bool {
        self.values().iter().all(|v| v.is_finite())
    }
}

/// Names of [`Law::values`], in order.
pub const LAW_NAMES: [&str; 5] = ["E", "A", "B", "alpha", "beta"];

/// Huber loss of `r` and its derivative.
fn huber(r: f64, delta: f64) -> (f64, f64) {
    if r.abs() <= delta {
        (0.5 * r * r, r)
    } else {
        (delta * (r.abs() - 0.5 * delta), delta * r.signum())
    }
}

/// The data in the form the objective wants: log N, log D, log L.
struct LogData {
    log_n: Vec<f64>,
    log_d: Vec<f64>,
    log_l: Vec<f64>,
}

impl LogData {
    fn new(obs: &[Observation]) -> LogData {
        LogData {
            log_n: obs.iter().map(|o| o.params.ln()).collect(),
            log_d: obs.iter().map(|o| o.tokens.ln()).collect(),
            log_l: obs.iter().map(|o| o.loss.ln()).collect(),
        }
    }

    /// Σ Huber(LSE(a − α log N, b − β log D, e) − log L) at θ = (a, b, e, α, β), and its
    /// gradient when `grad` is given.
    fn objective(&self, t: &[f64], mut grad: Option<&mut [f64]>) -> f64 {
        let (a, b, e, alpha, beta) = (t[0], t[1], t[2], t[3], t[4]);
        if let Some(g) = grad.as_deref_mut() {
            g.iter_mut().for_each(|v| *v = 0.0);
        }
        let mut total = 0.0;
        for i in 0..self.log_n.len() {
            let x = [a - alpha * self.log_n[i], b - beta * self.log_d[i], e];
            let m = x[0].max(x[1]).max(x[2]);
            let w = [(x[0] - m).exp(), (x[1] - m).exp(), (x[2] - m).exp()];
            let sum = w[0] + w[1] + w[2];
            let r = m + sum.ln() - self.log_l[i];
            let (h, dh) = huber(r, HUBER_DELTA);
            total += h;
            if let Some(g) = grad.as_deref_mut() {
                let (p0, p1, p2) = (w[0] / sum, w[1] / sum, w[2] / sum);
                g[0] += dh * p0;
                g[1] += dh * p1;
                g[2] += dh * p2;
                g[3] -= dh * p0 * self.log_n[i];
                g[4] -= dh * p1 * self.log_d[i];
            }
        }
        total
    }
}

/// How the fit searches.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Starting values of α (and of β).
    pub exponents: Vec<f64>,
    /// Starting values of e = log E.
    pub log_e: Vec<f64>,
    /// Starting values of a = log A (and of b = log B).
    pub log_coefficients: Vec<f64>,
    /// L-BFGS runs from this many of the grid's best points (by objective).
    pub starts: usize,
    /// Stopping rules of each L-BFGS run.
    pub lbfgs: LbfgsOptions,
}

impl Default for FitOptions {
    /// Chinchilla's grid (Hoffmann et al. 2022, §D.2): α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5,
    /// …, 1}, a, b ∈ {0, 5, …, 25}: 4,500 points; L-BFGS from the best 32.
    fn default() -> Self {
        FitOptions {
            exponents: vec![0.0, 0.5, 1.0, 1.5, 2.0],
            log_e: vec![-1.0, -0.5, 0.0, 0.5, 1.0],
            log_coefficients: vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
            starts: 32,
            lbfgs: LbfgsOptions::default(),
        }
    }
}

impl FitOptions {
    /// Points in the grid of starts.
    pub fn grid_size(&self) -> usize {
        self.exponents.len().pow(2) * self.log_e.len() * self.log_coefficients.len().pow(2)
    }
}

/// The fitted law (Approach 3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LawFit {
    /// The constants.
    pub law: Law,
    /// Σ Huber over the runs at the minimum.
    pub objective: f64,
    /// Points of the grid of starts.
    pub grid_points: usize,
    /// L-BFGS runs (from the grid's best points).
    pub starts: usize,
    /// The best run stopped on a tolerance.
    pub converged: bool,
    /// Root-mean-square of log L̂ − log L over the runs.
    pub rms_log_residual: f64,
}

fn rms_log_residual(law: &Law, obs: &[Observation]) -> f64 {
    let sum: f64 = obs
        .iter()
        .map(|o| (law.loss(o.params, o.tokens).ln() - o.loss.ln()).powi(2))
        .sum();
    (sum / obs.len().max(1) as f64).sqrt()
}

/// Runs L-BFGS on `data` from `theta`.
fn descend(data: &LogData, theta: &[f64], options: &LbfgsOptions) -> super::lbfgs::Minimum {
    minimize(
        |t: &[f64], g: &mut [f64]| data.objective(t, Some(g)),
        theta,
        options,
    )
}

/// Fits L(N, D) to `obs` (Approach 3): the grid of starts evaluated, L-BFGS from its best
/// points, the lowest minimum kept. `None` when no start ends at finite constants.
pub fn fit_law(obs: &[Observation], options: &FitOptions) -> Option<LawFit> {
    let data = LogData::new(obs);
    let mut grid: Vec<(f64, [f64; 5])> = Vec::with_capacity(options.grid_size());
    for &alpha in &options.exponents {
        for &beta in &options.exponents {
            for &e in &options.log_e {
                for &a in &options.log_coefficients {
                    for &b in &options.log_coefficients {
                        let t = [a, b, e, alpha, beta];
                        let v = data.objective(&t, None);
                        if v.is_finite() {
                            grid.push((v, t));
                        }
                    }
                }
            }
        }
    }
    let grid_points = grid.len();
    grid.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut best: Option<(f64, Vec<f64>, bool)> = None;
    let mut starts = 0;
    for (_, t) in grid.iter().take(options.starts.max(1)) {
        starts += 1;
        let m = descend(&data, t, &options.lbfgs);
        let usable = m.value.is_finite() && Law::from_theta(&m.x).is_finite();
        if usable && best.as_ref().is_none_or(|b| m.value < b.0) {
            best = Some((m.value, m.x, m.converged));
        }
    }
    let (objective, theta, converged) = best?;
    let law = Law::from_theta(&theta);
    Some(LawFit {
        law,
        objective,
        grid_points,
        starts,
        converged,
        rms_log_residual: rms_log_residual(&law, obs),
    })
}

/// Fits `obs` from `start` alone (a bootstrap resample's fit).
pub fn refit_from(obs: &[Observation], start: &Law, options: &LbfgsOptions) -> Option<Law> {
    let data = LogData::new(obs);
    let m = descend(&data, &start.theta(), options);
    let law = Law::from_theta(&m.x);
    (m.value.is_finite() && law.is_finite()).then_some(law)
}

/// A central interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// `lo ≤ x ≤ hi`.
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }

    /// The central [`INTERVAL`] of `values` (percentiles, linear between order statistics).
    pub fn central(values: &[f64]) -> Interval {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if v.is_empty() {
                return f64::NAN;
            }
            let pos = p * (v.len() - 1) as f64;
            let (i, frac) = (pos.floor() as usize, pos - pos.floor());
            let j = (i + 1).min(v.len() - 1);
            v[i] + frac * (v[j] - v[i])
        };
        let tail = (1.0 - INTERVAL) / 2.0;
        Interval {
            lo: q(tail),
            hi: q(1.0 - tail),
        }
    }
}

/// Bootstrap intervals of the law's constants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bootstrap {
    /// Resamples fitted.
    pub resamples: usize,
    /// Resamples whose fit failed (left out of the intervals).
    pub failed: usize,
    /// The central [`INTERVAL`] of each constant, in [`LAW_NAMES`] order.
    pub intervals: [Interval; 5],
    /// Every resample's law (for intervals of derived figures).
    #[serde(skip)]
    pub laws: Vec<Law>,
}

impl Bootstrap {
    /// The central interval of `f` over the resamples' laws.
    pub fn interval_of(&self, f: impl Fn(&Law) -> f64) -> Interval {
        let values: Vec<f64> = self.laws.iter().map(f).collect();
        Interval::central(&values)
    }
}

/// A small deterministic random stream (splitmix64).
pub struct Rng(u64);

impl Rng {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        h5gpt_formats::permutation::mix64(self.0)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Refits `resamples` resamples of `obs` (drawn with replacement, seeded by `seed`), each from
/// `best`, and gives each constant's central [`INTERVAL`].
pub fn bootstrap(
    obs: &[Observation],
    best: &Law,
    resamples: usize,
    seed: u64,
    options: &LbfgsOptions,
) -> Bootstrap {
    let mut rng = Rng::new(seed);
    let mut laws = Vec::with_capacity(resamples);
    let mut failed = 0;
    let mut sample = Vec::with_capacity(obs.len());
    for _ in 0..resamples {
        sample.clear();
        sample.extend((0..obs.len()).map(|_| obs[rng.below(obs.len())]));
        match refit_from(&sample, best, options) {
            Some(law) => laws.push(law),
            None => failed += 1,
        }
    }
    let intervals = std::array::from_fn(|k| {
        let values: Vec<f64> = laws.iter().map(|l| l.values()[k]).collect();
        Interval::central(&values)
    });
    Bootstrap {
        resamples,
        failed,
        intervals,
        laws,
    }
}

/// y = c₀ + c₁u + c₂u², u = x − `centre`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Parabola {
    /// c₀, c₁, c₂.
    pub c: [f64; 3],
    /// The x the polynomial is centred on.
    pub centre: f64,
}

impl Parabola {
    /// y at `x`.
    pub fn at(&self, x: f64) -> f64 {
        let u = x - self.centre;
        self.c[0] + self.c[1] * u + self.c[2] * u * u
    }

    /// The vertex (x, y).
    pub fn vertex(&self) -> (f64, f64) {
        let x = self.centre - self.c[1] / (2.0 * self.c[2]);
        (x, self.at(x))
    }
}

/// The least-squares parabola through `points`, when it opens upwards. `None` with fewer than
/// three distinct x or a parabola that does not open upwards (no minimum).
pub fn fit_parabola(points: &[(f64, f64)]) -> Option<Parabola> {
    let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if xs.len() < 3 {
        return None;
    }
    // Centred x for conditioning.
    let centre = points.iter().map(|p| p.0).sum::<f64>() / points.len() as f64;
    let mut m = [[0.0f64; 4]; 3]; // normal equations [X'X | X'y] in (1, u, u²)
    for &(x, y) in points {
        let u = x - centre;
        let basis = [1.0, u, u * u];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] += basis[r] * basis[c];
            }
            m[r][3] += basis[r] * y;
        }
    }
    let c = solve3(m)?;
    (c[2] > 0.0).then_some(Parabola { c, centre })
}

/// The minimum (x, y) of the least-squares parabola through `points` and its c₂ (see
/// [`fit_parabola`]).
pub fn parabola_minimum(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let p = fit_parabola(points)?;
    let (x, y) = p.vertex();
    Some((x, y, p.c[2]))
}

/// Gaussian elimination with partial pivoting on an augmented 3×4 system.
fn solve3(mut m: [[f64; 4]; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        for row in 0..3 {
            if row != col {
                let f = m[row][col] / m[col][col];
                let pivot_row = m[col];
                for (x, p) in m[row].iter_mut().zip(pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some([m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]])
}

/// y = k·x^exponent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PowerLaw {
    /// The exponent.
    pub exponent: f64,
    /// k.
    pub coefficient: f64,
}

impl PowerLaw {
    /// k·x^exponent.
    pub fn at(&self, x: f64) -> f64 {
        self.coefficient * x.powf(self.exponent)
    }
}

/// The least-squares line through (log x, log y): y = k·x^a. `None` with fewer than two
/// distinct x.
pub fn power_law(points: &[(f64, f64)]) -> Option<PowerLaw> {
    let logs: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x.ln(), y.ln())).collect();
    let n = logs.len() as f64;
    let mx = logs.iter().map(|p| p.0).sum::<f64>() / n;
    let my = logs.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if logs.len() < 2 || sxx <= 1e-24 {
        return None;
    }
    let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let exponent = sxy / sxx;
    Some(PowerLaw {
        exponent,
        coefficient: (my - exponent * mx).exp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::scaling::{CHINCHILLA, EPOCH};

    /// An IsoFLOP design at Chinchilla's scale: 6 budgets from 6e18 to 3e21 FLOPs (C = 6ND),
    /// 9 model sizes each from N_opt/8 to 8·N_opt (as the law puts N_opt), losses from `law`
    /// times exp(σ·noise).
    fn synthetic(law: &Law, sigma: f64, seed: u64) -> Vec<Observation> {
        let mut rng = Rng::new(seed);
        let fit = law.as_loss_fit("truth", "test");
        let mut out = Vec::new();
        for k in 0..6 {
            let c = 6e18 * (500f64).powf(k as f64 / 5.0);
            let center = fit.optimal(c).params;
            for j in 0..9 {
                let n = center * 8f64.powf((j as f64 - 4.0) / 4.0);
                let d = c / (6.0 * n);
                let loss = law.loss(n, d) * (sigma * rng.normal()).exp();
                out.push(Observation {
                    params: n,
                    tokens: d,
                    loss,
                });
            }
        }
        out
    }

    fn relative(a: f64, b: f64) -> f64 {
        (a / b - 1.0).abs()
    }

    #[test]
    fn huber_is_quadratic_inside_delta_and_linear_outside() {
        assert_eq!(huber(5e-4, 1e-3), (0.5 * 25e-8, 5e-4));
        let (h, d) = huber(-3e-3, 1e-3);
        assert!((h - 1e-3 * (3e-3 - 5e-4)).abs() < 1e-18);
        assert_eq!(d, -1e-3);
    }

    #[test]
    fn the_objective_gradient_matches_finite_differences() {
        let obs = synthetic(&Law::of(&CHINCHILLA), 0.01, 7);
        let data = LogData::new(&obs);
        let t = [6.0, 6.2, 0.5, 0.36, 0.27];
        let mut g = [0.0; 5];
        data.objective(&t, Some(&mut g));
        for k in 0..5 {
            let h = 1e-6;
            let (mut up, mut down) = (t, t);
            up[k] += h;
            down[k] -= h;
            let numeric = (data.objective(&up, None) - data.objective(&down, None)) / (2.0 * h);
            assert!(
                (numeric - g[k]).abs() <= 1e-5 * numeric.abs().max(1e-3),
                "∂{k}: analytic {} numeric {numeric}",
                g[k]
            );
        }
    }

    /// Without noise the fit recovers Hoffmann's and Epoch's constants almost exactly.
    #[test]
    fn noiseless_losses_give_back_the_published_laws() {
        for truth in [CHINCHILLA, EPOCH] {
            let law = Law::of(&truth);
            let fit = fit_law(&synthetic(&law, 0.0, 1), &FitOptions::default()).unwrap();
            let got = fit.law;
            assert!(relative(got.e, law.e) < 1e-3, "{}: {got:?}", truth.name);
            assert!(
                (got.alpha - law.alpha).abs() < 1e-3,
                "{}: {got:?}",
                truth.name
            );
            assert!(
                (got.beta - law.beta).abs() < 1e-3,
                "{}: {got:?}",
                truth.name
            );
            assert!(relative(got.a, law.a) < 2e-2, "{}: {got:?}", truth.name);
            assert!(relative(got.b, law.b) < 2e-2, "{}: {got:?}", truth.name);
            assert!(fit.rms_log_residual < 1e-4, "{fit:?}");
        }
    }

    /// With 0.5 % noise on each loss (54 runs), the fit recovers E within 3 %, the exponents
    /// within 0.05, and the compute-optimal N at 1e24 FLOPs within a factor of 2.
    #[test]
    fn noisy_losses_give_back_the_published_laws_within_tolerances() {
        for (truth, seed) in [(CHINCHILLA, 11), (EPOCH, 12), (CHINCHILLA, 13), (EPOCH, 14)] {
            let law = Law::of(&truth);
            let fit = fit_law(&synthetic(&law, 0.005, seed), &FitOptions::default()).unwrap();
            let got = fit.law;
            let msg = format!("{} seed {seed}: {got:?}", truth.name);
            assert!(relative(got.e, law.e) < 0.03, "{msg}");
            assert!((got.alpha - law.alpha).abs() < 0.05, "{msg}");
            assert!((got.beta - law.beta).abs() < 0.05, "{msg}");
            let n_true = truth.optimal(1e24).params;
            let n_got = got.as_loss_fit("fit", "test").optimal(1e24).params;
            assert!(
                (n_got / n_true).ln().abs() < 2f64.ln(),
                "{msg}: N_opt {n_got:.3e} vs {n_true:.3e}"
            );
        }
    }

    /// The bootstrap's 95 % intervals cover the true α, β and E in most of 12 seeds (a seed
    /// counts when all three are covered), and are not absurdly wide.
    #[test]
    fn bootstrap_intervals_cover_the_truth_in_most_seeds() {
        let law = Law::of(&CHINCHILLA);
        let mut covered = 0;
        let seeds = 12;
        for seed in 0..seeds {
            let obs = synthetic(&law, 0.005, 100 + seed);
            let fit = fit_law(&obs, &FitOptions::default()).unwrap();
            let boot = bootstrap(&obs, &fit.law, 60, seed, &LbfgsOptions::default());
            assert!(boot.failed < 6, "{boot:?}");
            let [e, _, _, alpha, beta] = boot.intervals;
            assert!(
                alpha.hi - alpha.lo < 0.3 && beta.hi - beta.lo < 0.3,
                "{boot:?}"
            );
            if e.contains(law.e) && alpha.contains(law.alpha) && beta.contains(law.beta) {
                covered += 1;
            }
        }
        assert!(
            covered * 3 >= seeds * 2,
            "covered in {covered} of {seeds} seeds"
        );
    }

    #[test]
    fn parabola_minimum_of_an_exact_parabola() {
        let points: Vec<(f64, f64)> = (0..5)
            .map(|i| {
                let x = i as f64;
                (x, 2.0 * (x - 1.7).powi(2) + 3.0)
            })
            .collect();
        let (x, y, c2) = parabola_minimum(&points).unwrap();
        assert!((x - 1.7).abs() < 1e-9 && (y - 3.0).abs() < 1e-9 && (c2 - 2.0).abs() < 1e-9);
        let down: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x, -y)).collect();
        assert!(parabola_minimum(&down).is_none());
        assert!(parabola_minimum(&points[..2]).is_none());
    }

    #[test]
    fn power_law_through_exact_points() {
        let points: Vec<(f64, f64)> = [1e18, 1e19, 1e20]
            .iter()
            .map(|&c| (c, 0.1 * f64::powf(c, 0.5)))
            .collect();
        let p = power_law(&points).unwrap();
        assert!((p.exponent - 0.5).abs() < 1e-9 && relative(p.coefficient, 0.1) < 1e-6);
        assert!(power_law(&points[..1]).is_none());
    }

    /// Approach 2 on the synthetic design: the per-budget minima follow N_opt ∝ C^a with
    /// a = β/(α+β), as the law says.
    #[test]
    fn isoflop_minima_follow_the_laws_exponent() {
        let law = Law::of(&CHINCHILLA);
        let obs = synthetic(&law, 0.0, 3);
        let mut minima = Vec::new();
        for budget in obs.chunks(9) {
            let c = 6.0 * budget[0].params * budget[0].tokens;
            let points: Vec<(f64, f64)> = budget.iter().map(|o| (o.params.ln(), o.loss)).collect();
            let (x, _, _) = parabola_minimum(&points).unwrap();
            minima.push((c, x.exp()));
        }
        let p = power_law(&minima).unwrap();
        let expected = law.beta / (law.alpha + law.beta);
        assert!((p.exponent - expected).abs() < 0.03, "{p:?} vs {expected}");
    }
}
