//! Dynamic loss scaling for f16 mixed precision. Matmul operands are rounded to f16, whose
//! smallest step is 6e-8: small gradients would vanish. The loss is multiplied by `scale`
//! before backward and the gradients divided by it before the optimizer; when the scaled
//! gradients overflow f16 the step is skipped and the scale halved, and after
//! `growth_every` good steps in a row it doubles again.

use serde::{Deserialize, Serialize};

/// Consecutive skipped steps after which training stops: the overflow is not the scale's.
pub const MAX_SKIPPED_IN_A_ROW: u64 = 30;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f32,
    pub growth_every: u64,
    /// Good steps since the scale last changed.
    pub good_steps: u64,
    /// Steps skipped so far, and how many of them in a row up to now.
    pub skipped: u64,
    pub skipped_in_a_row: u64,
}

impl LossScaler {
    pub fn new(scale: f32, growth_every: u64) -> LossScaler {
        LossScaler { scale, growth_every, good_steps: 0, skipped: 0, skipped_in_a_row: 0 }
    }

    /// Takes the step's (true) gradient norm; returns whether to apply the step.
    pub fn update(&mut self, grad_norm: f32) -> bool {
        if grad_norm.is_finite() {
            self.good_steps += 1;
            self.skipped_in_a_row = 0;
            if self.good_steps >= self.growth_every {
                self.scale = (self.scale * 2.0).min(f32::MAX / 2.0);
                self.good_steps = 0;
            }
            true
        } else {
            self.scale /= 2.0;
            self.good_steps = 0;
            self.skipped += 1;
            self.skipped_in_a_row += 1;
            false
        }
    }

    /// Whether so many steps in a row overflowed that lowering the scale is not helping.
    pub fn stuck(&self) -> bool {
        self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_and_skips_on_overflow_and_doubles_after_good_steps() {
        let mut s = LossScaler::new(1024.0, 3);
        assert!(!s.update(f32::INFINITY));
        assert!(!s.update(f32::NAN));
        assert_eq!((s.scale, s.skipped, s.skipped_in_a_row), (256.0, 2, 2));
        assert!(s.update(0.5) && s.update(0.5));
        assert_eq!(s.scale, 256.0);
        assert!(s.update(0.5));
        assert_eq!((s.scale, s.good_steps, s.skipped_in_a_row), (512.0, 0, 0));
        assert!(!s.update(f32::INFINITY));
        assert_eq!((s.scale, s.skipped), (256.0, 3));
    }

    #[test]
    fn stuck_after_too_many_overflows_in_a_row() {
        let mut s = LossScaler::new(1.0, 10);
        for _ in 0..MAX_SKIPPED_IN_A_ROW - 1 {
            s.update(f32::INFINITY);
        }
        assert!(!s.stuck());
        s.update(f32::INFINITY);
        assert!(s.stuck());
    }
}
