//! Learning-rate schedules as the Cerebras Model Zoo runs them: a sequence of phases (their
//! `SequentialLR` of `LinearLR`, `CosineDecayLR` and `ConstantLR`; release 2.0.3 spells them
//! `learning_rate: [{scheduler: Linear, ...}, ...]`), each counting its own steps from 0.
//!
//! Step-for-step their semantics, not our GPT-3 cosine ([`crate::schedule::LrSchedule`]):
//! a linear phase gives exactly `initial_lr` at its step 0 (ours warms up with (step+1)/warm-up)
//! and `end_lr` at its step `steps`, which is the next phase's step 0. The last phase holds its
//! end value after its `steps`. Optimizer step `s` (0-based) trains with `lr(s)`, so a run of
//! `max_steps` = the phases' total never trains at the final value: its last step is
//! `max_steps − 1`.

use serde::{Deserialize, Serialize};

/// The shape of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseKind {
    /// `initial + (end − initial) · s / steps` (Cerebras `LinearLR`).
    Linear,
    /// `end + (initial − end) · (1 + cos(π · s / steps)) / 2` (Cerebras `CosineDecayLR`).
    Cosine,
    /// `initial` throughout (Cerebras `ConstantLR`).
    Constant,
}

/// One phase of a [`PhaseSchedule`] (a `[[lr_schedule]]` table in our TOML).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrPhase {
    /// How the learning rate moves.
    pub kind: PhaseKind,
    /// Learning rate at the phase's first step.
    pub initial_lr: f64,
    /// Learning rate after `steps` steps (for `constant`: the same as `initial_lr`).
    pub end_lr: f64,
    /// Steps the phase lasts (Cerebras `total_iters`); `None` only for a last phase that
    /// runs to the end of training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
}

impl LrPhase {
    /// The learning rate `step` steps into the phase (clamped to its end).
    pub fn lr(&self, step: usize) -> f64 {
        let total = match self.steps {
            Some(total) if total > 0 => total,
            Some(_) => return self.end_lr,
            None => return self.initial_lr,
        };
        if step >= total {
            return self.end_lr;
        }
        let progress = step as f64 / total as f64;
        match self.kind {
            PhaseKind::Linear => self.initial_lr + (self.end_lr - self.initial_lr) * progress,
            PhaseKind::Cosine => {
                self.end_lr
                    + (self.initial_lr - self.end_lr)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            PhaseKind::Constant => self.initial_lr,
        }
    }
}

/// Phases run one after the other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhaseSchedule(pub Vec<LrPhase>);

impl PhaseSchedule {
    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, mut step: usize) -> f64 {
        let Some((last, head)) = self.0.split_last() else {
            return 0.0;
        };
        for phase in head {
            let steps = phase.steps.unwrap_or(usize::MAX);
            if step < steps {
                return phase.lr(step);
            }
            step -= steps;
        }
        last.lr(step)
    }

    /// Steps until the last phase ends (Cerebras' `total_iters` summed); `None` when the last
    /// phase runs on.
    pub fn total_steps(&self) -> Option<usize> {
        self.0.iter().map(|p| p.steps).sum()
    }

    /// The step each phase starts at.
    pub fn boundaries(&self) -> Vec<usize> {
        let mut at = 0;
        self.0
            .iter()
            .map(|p| {
                let start = at;
                at += p.steps.unwrap_or(0);
                start
            })
            .collect()
    }

    /// The highest learning rate of any phase.
    pub fn peak(&self) -> f64 {
        self.0
            .iter()
            .flat_map(|p| [p.initial_lr, p.end_lr])
            .fold(0.0, f64::max)
    }

    /// Checks that the schedule can run: at least one phase, finite non-negative learning
    /// rates, every phase but the last with a length.
    pub fn validate(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("the learning-rate schedule has no phases".into());
        }
        let last = self.0.len() - 1;
        for (i, phase) in self.0.iter().enumerate() {
            for lr in [phase.initial_lr, phase.end_lr] {
                if !(lr.is_finite() && lr >= 0.0) {
                    return Err(format!(
                        "phase {} of the learning-rate schedule: learning rate {lr} is not a finite number ≥ 0",
                        i + 1
                    ));
                }
            }
            if i < last && phase.steps.is_none() {
                return Err(format!(
                    "phase {} of the learning-rate schedule has no length (steps), but phase {} follows it",
                    i + 1,
                    i + 2
                ));
            }
        }
        Ok(())
    }

    /// One line per phase: `linear 0 → 6e-4 over 1525 steps (steps 0..1525)`.
    pub fn describe(&self) -> Vec<String> {
        self.0
            .iter()
            .zip(self.boundaries())
            .map(|(p, start)| {
                let kind = match p.kind {
                    PhaseKind::Linear => "linear",
                    PhaseKind::Cosine => "cosine",
                    PhaseKind::Constant => "constant",
                };
                match (p.kind, p.steps) {
                    (PhaseKind::Constant, Some(n)) => format!(
                        "{kind} {} for {n} steps (steps {start}..{})",
                        show_lr(p.initial_lr),
                        start + n
                    ),
                    (_, Some(n)) => format!(
                        "{kind} {} → {} over {n} steps (steps {start}..{})",
                        show_lr(p.initial_lr),
                        show_lr(p.end_lr),
                        start + n
                    ),
                    (_, None) => format!("{kind} {} from step {start} on", show_lr(p.initial_lr)),
                }
            })
            .collect()
    }
}

/// A learning rate as the report shows it: `0`, `6e-4`, `6.0072e-4`.
pub fn show_lr(lr: f64) -> String {
    if lr == 0.0 {
        "0".into()
    } else {
        let text = format!("{lr:.4e}");
        // 6.0000e-4 → 6e-4
        match text.split_once('e') {
            Some((mantissa, exp)) => {
                let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
                format!("{mantissa}e{exp}")
            }
            None => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(a: f64, b: f64, n: usize) -> LrPhase {
        LrPhase {
            kind: PhaseKind::Linear,
            initial_lr: a,
            end_lr: b,
            steps: Some(n),
        }
    }

    #[test]
    fn phases_count_their_own_steps_and_the_last_one_holds() {
        let s = PhaseSchedule(vec![linear(0.0, 1.0, 4), linear(1.0, 0.5, 2)]);
        let lrs: Vec<f64> = (0..9).map(|i| s.lr(i)).collect();
        assert_eq!(lrs, [0.0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.5, 0.5]);
        assert_eq!(s.total_steps(), Some(6));
        assert_eq!(s.boundaries(), [0, 4]);
        assert_eq!(s.peak(), 1.0);
    }

    #[test]
    fn cosine_runs_from_initial_to_end() {
        let p = LrPhase {
            kind: PhaseKind::Cosine,
            initial_lr: 1.0,
            end_lr: 0.1,
            steps: Some(10),
        };
        assert_eq!(p.lr(0), 1.0);
        assert!((p.lr(5) - 0.55).abs() < 1e-15);
        assert!((p.lr(10) - 0.1).abs() < 1e-15);
        assert!((p.lr(20) - 0.1).abs() < 1e-15);
    }

    #[test]
    fn a_middle_phase_without_a_length_is_refused() {
        let mut open = linear(0.0, 1.0, 1);
        open.steps = None;
        let s = PhaseSchedule(vec![open, linear(1.0, 0.0, 1)]);
        assert!(s.validate().unwrap_err().contains("phase 1"));
    }
}
