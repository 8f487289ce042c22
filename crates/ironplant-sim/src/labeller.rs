//! The labeller after the filler, the line's OPC UA machine: it labels every good bottle the
//! filler makes. Plain physics like [`crate::plant`] (elapsed time as a parameter, seeded
//! noise), followed by the OPC UA server in [`crate::opcua`].
//!
//! - **Speed** follows the filler's through a first-order lag (τ 2 s), with ±0.5 bpm noise.
//! - **Labels applied** counts the filler's good bottles since the start.
//! - **Label roll**: a roll holds 5,000 labels; the remaining % falls with each label and a
//!   splice puts a fresh roll in below 2 %.
//! - **Glue temperature** follows its setpoint (writable, 120–180 °C, 150 by default) through a
//!   first-order lag (τ 45 s) with 0.2 °C noise; the glue is too cold to label below 135 °C
//!   (the labeller then reports not ready).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::plant::Readings;

/// Labels on one roll.
pub const ROLL_LABELS: f64 = 5_000.0;
/// The glue setpoint's range, °C.
pub const GLUE_RANGE: (f64, f64) = (120.0, 180.0);
/// Below this the glue does not hold, °C.
pub const GLUE_READY: f64 = 135.0;

/// What the labeller's instruments show.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabellerReadings {
    /// bottles/min
    pub speed: f64,
    pub labels_applied: u64,
    /// % of a roll left
    pub label_roll: f64,
    /// °C
    pub glue_temp: f64,
    /// °C, as applied
    pub glue_setpoint: f64,
    /// Glue hot enough and bottles coming.
    pub ready: bool,
}

/// The simulated labeller.
#[derive(Debug, Clone)]
pub struct Labeller {
    rng: StdRng,
    speed: f64,
    labels: u64,
    roll_used: f64,
    glue_temp: f64,
    glue_setpoint: f64,
    last_good: Option<u64>,
    readings: LabellerReadings,
}

impl Labeller {
    pub fn new(seed: u64) -> Labeller {
        let mut l = Labeller {
            rng: StdRng::seed_from_u64(seed ^ 0x1abe_11e5),
            speed: 0.0,
            labels: 0,
            roll_used: 1_200.0,
            glue_temp: 150.0,
            glue_setpoint: 150.0,
            last_good: None,
            readings: LabellerReadings::default(),
        };
        l.read();
        l
    }

    /// Advances `dt` following the filler's readings `filler`.
    pub fn step(&mut self, dt: Duration, filler: &Readings) {
        let h = dt.as_secs_f64();
        self.speed += (filler.speed - self.speed) * (1.0 - (-h / 2.0).exp());
        let new = match self.last_good {
            Some(last) => filler.good_count.saturating_sub(last),
            None => 0,
        };
        self.last_good = Some(filler.good_count);
        self.labels += new;
        self.roll_used += new as f64;
        if self.roll_used >= ROLL_LABELS * 0.98 {
            // Splice: a fresh roll.
            self.roll_used = 0.0;
        }
        self.glue_temp += (self.glue_setpoint - self.glue_temp) * (1.0 - (-h / 45.0).exp());
        self.read();
    }

    fn read(&mut self) {
        let noise = gauss(&mut self.rng);
        let glue_noise = gauss(&mut self.rng);
        let speed = if self.speed > 0.5 {
            (self.speed + 0.5 * noise).max(0.0)
        } else {
            0.0
        };
        self.readings = LabellerReadings {
            speed: (speed * 10.0).round() / 10.0,
            labels_applied: self.labels,
            label_roll: ((100.0 * (1.0 - self.roll_used / ROLL_LABELS)) * 10.0).round() / 10.0,
            glue_temp: ((self.glue_temp + 0.2 * glue_noise) * 10.0).round() / 10.0,
            glue_setpoint: self.glue_setpoint,
            ready: self.glue_temp >= GLUE_READY,
        };
    }

    pub fn readings(&self) -> &LabellerReadings {
        &self.readings
    }

    /// Sets the glue temperature setpoint; refused outside [`GLUE_RANGE`].
    pub fn set_glue_setpoint(&mut self, celsius: f64) -> Result<(), String> {
        if !(GLUE_RANGE.0..=GLUE_RANGE.1).contains(&celsius) {
            return Err(format!(
                "glue setpoint {celsius} °C is outside {}..{} °C",
                GLUE_RANGE.0, GLUE_RANGE.1
            ));
        }
        self.glue_setpoint = celsius;
        self.readings.glue_setpoint = celsius;
        Ok(())
    }
}

/// A standard normal sample (Box–Muller).
fn gauss(rng: &mut StdRng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::Plant;

    #[test]
    fn labels_follow_the_fillers_good_bottles_and_rolls_are_spliced() {
        let mut plant = Plant::new(7);
        plant.set_speed_setpoint(400.0);
        plant.set_run_enable(true);
        let mut l = Labeller::new(7);
        let dt = Duration::from_millis(100);
        let start_good = plant.readings().good_count;
        l.step(dt, plant.readings());
        let mut min_roll = 100.0f64;
        let mut max_roll = 0.0f64;
        for _ in 0..(20 * 60 * 10) {
            plant.step(dt);
            l.step(dt, plant.readings());
            min_roll = min_roll.min(l.readings().label_roll);
            max_roll = max_roll.max(l.readings().label_roll);
        }
        let good = plant.readings().good_count - start_good;
        assert!(good > 1000, "the filler made bottles: {good}");
        assert_eq!(
            l.readings().labels_applied,
            good,
            "one label per good bottle"
        );
        assert!(
            min_roll < 10.0 && max_roll > 95.0,
            "a splice happened: {min_roll}..{max_roll}"
        );
        assert!(
            (l.readings().speed - plant.readings().speed).abs() < 20.0,
            "the labeller keeps the filler's pace"
        );
    }

    #[test]
    fn the_glue_follows_its_setpoint_and_refuses_nonsense() {
        let mut l = Labeller::new(1);
        let r = Readings::default();
        assert!(l.set_glue_setpoint(400.0).is_err());
        l.set_glue_setpoint(125.0).expect("in range");
        for _ in 0..(10 * 60 * 5) {
            l.step(Duration::from_millis(100), &r);
        }
        assert!((l.readings().glue_temp - 125.0).abs() < 1.5);
        assert!(!l.readings().ready, "too cold to label");
    }
}
