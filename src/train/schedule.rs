//! Learning-rate schedules: linear warmup, then cosine decay or warmup-stable-decay.

use crate::train::config::{ScheduleKind, TrainConfig};

/// The learning rate for optimizer step `step` (1-based).
pub fn learning_rate(t: &TrainConfig, step: u64) -> f32 {
    let (lr, min_lr) = (t.lr as f64, t.min_lr as f64);
    if step <= t.warmup {
        return (lr * step as f64 / t.warmup.max(1) as f64) as f32;
    }
    let lr = match t.schedule {
        ScheduleKind::Cosine => {
            let progress = (step - t.warmup) as f64 / (t.steps - t.warmup).max(1) as f64;
            min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
        }
        ScheduleKind::Wsd => {
            let decay_steps = (t.steps as f64 * t.decay_fraction).round() as u64;
            let decay_start = t.steps - decay_steps;
            if step <= decay_start {
                lr
            } else {
                lr + (min_lr - lr) * (step - decay_start) as f64 / decay_steps.max(1) as f64
            }
        }
    };
    lr as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(schedule: ScheduleKind) -> TrainConfig {
        TrainConfig { steps: 100, warmup: 10, lr: 1.0, min_lr: 0.1, schedule, decay_fraction: 0.2, ..TrainConfig::default() }
    }

    #[test]
    fn warmup_is_linear() {
        let t = config(ScheduleKind::Cosine);
        assert!((learning_rate(&t, 1) - 0.1).abs() < 1e-6);
        assert!((learning_rate(&t, 10) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn cosine_ends_at_min_lr_and_passes_the_midpoint() {
        let t = config(ScheduleKind::Cosine);
        assert!((learning_rate(&t, 55) - 0.55).abs() < 1e-6);
        assert!((learning_rate(&t, 100) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn wsd_holds_then_cools_down_linearly() {
        let t = config(ScheduleKind::Wsd);
        assert_eq!(learning_rate(&t, 80), 1.0);
        assert!((learning_rate(&t, 90) - 0.55).abs() < 1e-6);
        assert!((learning_rate(&t, 100) - 0.1).abs() < 1e-6);
    }
}
