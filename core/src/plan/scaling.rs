//! The parametric loss L(N, D) = E + A/N^α + B/D^β (Chinchilla's Approach 3), its
//! compute-optimal allocation under C = 6ND, and parameters from a tokens-per-parameter rule.

use serde::Serialize;

/// Fitted constants of L(N, D) = E + A/N^α + B/D^β (loss in nats per token, N parameters,
/// D training tokens).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LossFit {
    /// `--fit` name.
    pub name: &'static str,
    /// Where the constants come from.
    pub source: &'static str,
    /// Irreducible loss.
    pub e: f64,
    /// Model-size coefficient.
    pub a: f64,
    /// Data coefficient.
    pub b: f64,
    /// Model-size exponent α.
    pub alpha: f64,
    /// Data exponent β.
    pub beta: f64,
}

/// Hoffmann et al. 2022, Approach 3 (Equation 10).
pub const CHINCHILLA: LossFit = LossFit {
    name: "chinchilla",
    source: "Hoffmann et al. 2022, Approach 3",
    e: 1.69,
    a: 406.4,
    b: 410.7,
    alpha: 0.34,
    beta: 0.28,
};

/// Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt"), the refit of
/// Approach 3 on the paper's own data.
pub const EPOCH: LossFit = LossFit {
    name: "epoch",
    source: "Besiroglu et al. 2024 refit",
    e: 1.817,
    a: 482.01,
    b: 2085.43,
    alpha: 0.3478,
    beta: 0.3658,
};

/// Every fit `--fit` accepts.
pub const FITS: [LossFit; 2] = [CHINCHILLA, EPOCH];

/// Chinchilla's tokens per parameter (Table 3: 20.2 tokens per parameter at 1B).
pub const CHINCHILLA_RATIO: f64 = 20.0;

/// A compute budget split into parameters and tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Allocation {
    /// Training FLOPs, C = 6ND.
    pub flops: f64,
    /// Parameters.
    pub params: f64,
    /// Training tokens.
    pub tokens: f64,
    /// Predicted loss L(N, D).
    pub loss: f64,
    /// D / N.
    pub tokens_per_param: f64,
}

impl LossFit {
    /// The fit called `name` (`chinchilla` or `epoch`).
    pub fn find(name: &str) -> Option<LossFit> {
        FITS.into_iter().find(|f| f.name == name)
    }

    /// L(N, D).
    pub fn loss(&self, params: f64, tokens: f64) -> f64 {
        self.e + self.a / params.powf(self.alpha) + self.b / tokens.powf(self.beta)
    }

    /// G = (αA / (βB))^(1/(α+β)), the scale of the optimal N.
    pub fn g(&self) -> f64 {
        (self.alpha * self.a / (self.beta * self.b)).powf(1.0 / (self.alpha + self.beta))
    }

    /// The N and D minimizing L under 6ND = `flops`: N = G·(C/6)^(β/(α+β)),
    /// D = G⁻¹·(C/6)^(α/(α+β)).
    pub fn optimal(&self, flops: f64) -> Allocation {
        let sum = self.alpha + self.beta;
        let g = self.g();
        let params = g * (flops / 6.0).powf(self.beta / sum);
        let tokens = (flops / 6.0).powf(self.alpha / sum) / g;
        Allocation {
            flops,
            params,
            tokens,
            loss: self.loss(params, tokens),
            tokens_per_param: tokens / params,
        }
    }

    /// The budget (C = 6ND) for which `tokens` are the compute-optimal D, and its allocation:
    /// C/6 = (D·G)^((α+β)/α).
    pub fn optimal_for_tokens(&self, tokens: f64) -> Allocation {
        let sum = self.alpha + self.beta;
        self.optimal(6.0 * (tokens * self.g()).powf(sum / self.alpha))
    }
}

/// Parameters for `tokens` at `ratio` tokens per parameter, to the nearest integer.
pub fn params_for_tokens(tokens: f64, ratio: f64) -> u64 {
    (tokens / ratio).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_optimum_spends_the_budget_and_beats_its_neighbours() {
        for fit in FITS {
            let best = fit.optimal(1e21);
            assert!((6.0 * best.params * best.tokens / 1e21 - 1.0).abs() < 1e-12);
            let back = fit.optimal_for_tokens(best.tokens);
            assert!((back.flops / 1e21 - 1.0).abs() < 1e-9, "{}", fit.name);
            for scale in [0.9, 1.1] {
                let n = best.params * scale;
                assert!(fit.loss(n, 1e21 / (6.0 * n)) > best.loss, "{}", fit.name);
            }
        }
    }
}
