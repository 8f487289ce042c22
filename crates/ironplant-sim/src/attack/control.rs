//! The run-time switch of the live simulator's attacks: a cloneable handle the simulator's
//! physics loop applies on every tick and that the CLI, the demo or the API start and stop
//! attacks through.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use super::scenario::{Injector, Phase, Scenario, ScenarioError};
use crate::plant::Readings;

/// Most attacks running at once; starting one more is refused.
pub const MAX_ACTIVE: usize = 16;

/// Shared, run-time switchable attack state (see the module docs). Cloning gives another
/// handle to the same state. Times are on the clock of whoever calls [`AttackControl::apply`]
/// (the plant's simulated time in the simulator).
#[derive(Debug, Clone, Default)]
pub struct AttackControl {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// The latest `now` passed to `apply`: new attacks start from there.
    now: Duration,
    /// What the last `apply` showed, so a freeze started now holds exactly that.
    shown: Option<Readings>,
    attacks: Vec<Injector>,
}

/// A running attack, as listed by [`AttackControl::active`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAttack {
    /// Unique among running attacks, e.g. `drift:tank_level` ([`Scenario::label`]).
    pub label: String,
    pub scenario: Scenario,
    /// When it takes (or took) effect, seconds on the controller's clock.
    pub begins_s: f64,
    pub phase: Phase,
}

/// Why an attack could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{MAX_ACTIVE} attacks are already running; stop one first")]
    TooMany,
}

impl AttackControl {
    pub fn new() -> AttackControl {
        AttackControl::default()
    }

    /// Starts `scenario` now (it takes effect its `start_s` later) and returns its label. A
    /// running attack with the same label is replaced (and its recording or frozen value
    /// forgotten).
    pub fn start(&self, scenario: Scenario) -> Result<String, StartError> {
        let mut state = self.inner.lock();
        let mut injector = Injector::new(scenario, state.now)?;
        if let Some(shown) = &state.shown {
            injector.prime(shown);
        }
        let label = injector.scenario().label();
        state.attacks.retain(|a| a.scenario().label() != label);
        if state.attacks.len() >= MAX_ACTIVE {
            return Err(StartError::TooMany);
        }
        tracing::info!(attack = %label, "simulated attack started");
        state.attacks.push(injector);
        Ok(label)
    }

    /// Stops the attacks whose label is `name`, or whose kind is `name` (`drift` stops every
    /// drift), or all of them for `all`. Returns the labels stopped.
    pub fn stop(&self, name: &str) -> Vec<String> {
        let mut state = self.inner.lock();
        let mut stopped = Vec::new();
        state.attacks.retain(|a| {
            let label = a.scenario().label();
            let hit = name == "all" || name == label || name == a.scenario().name();
            if hit {
                stopped.push(label);
            }
            !hit
        });
        for label in &stopped {
            tracing::info!(attack = %label, "simulated attack stopped");
        }
        stopped
    }

    /// The running attacks, in the order they were started (and are applied).
    pub fn active(&self) -> Vec<ActiveAttack> {
        let state = self.inner.lock();
        state
            .attacks
            .iter()
            .map(|a| ActiveAttack {
                label: a.scenario().label(),
                scenario: a.scenario().clone(),
                begins_s: a.begins().as_secs_f64(),
                phase: a.phase(state.now),
            })
            .collect()
    }

    /// Bends `readings` (the plant's, at `now`) by every running attack, in start order.
    pub fn apply(&self, now: Duration, readings: &mut Readings) {
        let mut state = self.inner.lock();
        state.now = state.now.max(now);
        for a in &mut state.attacks {
            a.apply(now, readings);
        }
        state.shown = Some(readings.clone());
    }

    /// The value shown for one signal at `now` when its true value is `actual`: what a proxy
    /// that sees single values on the wire asks.
    pub fn value(&self, signal: &str, now: Duration, actual: f64) -> f64 {
        let mut state = self.inner.lock();
        state.now = state.now.max(now);
        state
            .attacks
            .iter_mut()
            .fold(actual, |v, a| a.value(signal, now, v))
    }

    /// Whether any running attack bends `signal`.
    pub fn targets(&self, signal: &str) -> bool {
        self.inner
            .lock()
            .attacks
            .iter()
            .any(|a| a.signals().any(|s| s == signal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(signal: &str, amount: f64) -> Scenario {
        Scenario::Step {
            signal: signal.into(),
            amount,
            start_s: 0.0,
        }
    }

    #[test]
    fn attacks_start_replace_list_apply_and_stop_at_run_time() {
        let control = AttackControl::new();
        let mut r = Readings {
            tank_level: 50.0,
            line_pressure: 2.5,
            ..Readings::default()
        };
        control.apply(Duration::from_secs(100), &mut r);
        assert_eq!(r.tank_level, 50.0, "nothing running");

        let handle = control.clone();
        assert_eq!(
            handle.start(step("tank_level", 5.0)),
            Ok("step:tank_level".into())
        );
        handle
            .start(Scenario::Freeze {
                signal: "line_pressure".into(),
                start_s: 10.0,
            })
            .expect("valid");
        let active = control.active();
        assert_eq!(active.len(), 2);
        assert_eq!(
            active[0].begins_s, 100.0,
            "starts on the controller's clock"
        );
        assert_eq!(active[1].phase, Phase::Waiting);

        let mut r2 = r.clone();
        control.apply(Duration::from_secs(101), &mut r2);
        assert_eq!(r2.tank_level, 55.0);
        // The same label again replaces the running one.
        handle.start(step("tank_level", -5.0)).expect("valid");
        assert_eq!(control.active().len(), 2);
        let mut r3 = r.clone();
        control.apply(Duration::from_secs(102), &mut r3);
        assert_eq!(r3.tank_level, 45.0);

        assert!(matches!(
            control.start(step("speed_setpoint", 1.0)),
            Err(StartError::Scenario(ScenarioError::UnknownSignal { .. }))
        ));
        assert_eq!(control.stop("nothing"), Vec::<String>::new());
        assert_eq!(control.stop("step"), vec!["step:tank_level".to_owned()]);
        assert_eq!(control.stop("all"), vec!["freeze:line_pressure".to_owned()]);
        let mut r4 = r.clone();
        control.apply(Duration::from_secs(103), &mut r4);
        assert_eq!(r4, r);
    }

    #[test]
    fn the_number_of_running_attacks_is_bounded() {
        let control = AttackControl::new();
        let signals: Vec<&str> = crate::attack::scenario::attackable()
            .map(|d| d.name)
            .collect();
        for s in signals.iter().take(MAX_ACTIVE) {
            control
                .start(Scenario::Freeze {
                    signal: (*s).into(),
                    start_s: 0.0,
                })
                .expect("room");
        }
        assert_eq!(
            control.start(Scenario::Freeze {
                signal: signals[MAX_ACTIVE].into(),
                start_s: 0.0,
            }),
            Err(StartError::TooMany)
        );
    }
}
