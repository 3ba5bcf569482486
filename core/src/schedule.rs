//! The learning-rate schedule of GPT-3 (appendix B): linear warm-up, then cosine decay to a
//! fraction of the peak, then flat.

/// Schedule settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub max_lr: f64,
    /// Final learning rate as a fraction of the peak (GPT-3: 0.1).
    pub min_lr_ratio: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Step at which the cosine reaches its minimum (the run's length).
    pub decay_steps: usize,
}

impl LrSchedule {
    /// Learning rate for optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let min_lr = self.max_lr * self.min_lr_ratio;
        // 1) linear warm-up: (step+1)/warmup of the peak, so step 0 already learns
        if step < self.warmup_steps {
            return self.max_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        // 2) after the decay: the minimum
        if step >= self.decay_steps {
            return min_lr;
        }
        // 3) in between: cosine from the peak down to the minimum
        let span = (self.decay_steps - self.warmup_steps).max(1) as f64;
        let progress = (step - self.warmup_steps) as f64 / span;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        min_lr + coeff * (self.max_lr - min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_peak_and_end() {
        let s = LrSchedule {
            max_lr: 6e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            decay_steps: 110,
        };
        assert!((s.lr(0) - 6e-5).abs() < 1e-15);
        assert!((s.lr(4) - 3e-4).abs() < 1e-15);
        assert!((s.lr(9) - 6e-4).abs() < 1e-15, "warm-up ends at the peak");
        assert!(
            (s.lr(10) - 6e-4).abs() < 1e-15,
            "the cosine starts at the peak"
        );
        assert!(
            (s.lr(60) - 3.3e-4).abs() < 1e-12,
            "half-way: the mean of peak and floor"
        );
        assert!((s.lr(110) - 6e-5).abs() < 1e-15);
        assert!((s.lr(1000) - 6e-5).abs() < 1e-15, "flat after the decay");
        for step in 10..110 {
            assert!(s.lr(step + 1) <= s.lr(step), "monotone decay at {step}");
        }
    }
}
