//! The plant's physics: a filler and its utilities as one deterministic struct.
//!
//! Time is a parameter: [`Plant::step`] integrates the `dt` it is given and never reads a clock,
//! and all randomness comes from an RNG seeded in [`Plant::new`], so one seed and one sequence
//! of steps and commands always give the same trajectory.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Longest interval integrated in one go. Longer steps are split, so lags, Poisson faults and
/// per-bottle rejects behave the same whatever the caller's tick.
const MAX_SUBSTEP_S: f64 = 0.1;

// ---- Filler ----
/// Highest speed setpoint the filler accepts, bottles/min.
pub const MAX_SPEED_BPM: f64 = 600.0;
/// Speed setpoint at start-up, bottles/min.
pub const DEFAULT_SPEED_BPM: f64 = 400.0;
/// Time constant of the speed loop while running.
const SPEED_TAU_S: f64 = 4.0;
/// Acceleration limit of the drive while running, bpm/s.
const MAX_ACCEL: f64 = 60.0;
/// Deceleration ramp of a normal stop, bpm/s.
const STOP_DECEL: f64 = 80.0;
/// Deceleration of the quick stop on a fault, bpm/s.
const FAULT_DECEL: f64 = 200.0;
/// Mean running time between random faults (a Poisson process).
const MEAN_RUN_BETWEEN_FAULTS_S: f64 = 750.0;
const FAULT_MIN_S: f64 = 20.0;
const FAULT_MAX_S: f64 = 60.0;
/// Faults that strike at random; starvation comes from the tank instead.
const RANDOM_FAULTS: [FaultCode; 5] = [
    FaultCode::InfeedJam,
    FaultCode::CapperTorque,
    FaultCode::LowAirPressure,
    FaultCode::LabelMissing,
    FaultCode::GuardDoorOpen,
];
/// Share of bottles rejected in steady running.
const REJECT_RATE: f64 = 0.012;
/// Share rejected while the line settles after a fault (restart scrap).
const RESTART_REJECT_RATE: f64 = 0.05;
const RESTART_WINDOW_S: f64 = 60.0;
/// "At speed" when within this share of the setpoint (or 2 bpm near zero).
const AT_SPEED_TOLERANCE: f64 = 0.02;
const AMBIENT_C: f64 = 24.0;
const MOTOR_TEMP_TAU_S: f64 = 900.0;
/// Steady temperature rise per A² of motor current.
const MOTOR_HEATING_K_PER_A2: f64 = 0.11;
const LINE_PRESSURE_BAR: f64 = 2.5;

// ---- Utilities ----
const TANK_CAPACITY_L: f64 = 10_000.0;
const BOTTLE_L: f64 = 0.75;
/// Level setpoint at start-up, %.
pub const DEFAULT_LEVEL_SETPOINT: f64 = 60.0;
const PUMP_MAX_LPM: f64 = 600.0;
const PUMP_TAU_S: f64 = 2.0;
/// Gain of the level P controller, (L/min) per % of error. A P controller leaves an offset:
/// at 300 L/min outflow the level settles ~3.75 % below its setpoint, as on a real line.
const LEVEL_KP: f64 = 80.0;
/// Below this level the filler trips on starvation...
const STARVED_LEVEL: f64 = 2.0;
/// ...and may restart only once the tank is back above this one.
const RESTART_LEVEL: f64 = 10.0;
const STARVED_RETRY_S: f64 = 5.0;
const LEVEL_LOW: f64 = 10.0;
const LEVEL_HIGH: f64 = 90.0;
/// The product in the buffer tank is chilled; its temperature wanders slowly around this.
const PRODUCT_MEAN_C: f64 = 4.2;
const PRODUCT_TAU_S: f64 = 1800.0;
const PRODUCT_SIGMA_C: f64 = 0.35;
/// The product warms a little in the filler bowl.
const FILLER_WARMING_C: f64 = 0.3;
const AIR_CUT_IN_BAR: f64 = 6.5;
const AIR_CUT_OUT_BAR: f64 = 7.5;
const COMPRESSOR_BAR_PER_S: f64 = 0.05;
const AIR_LEAK_BAR_PER_S: f64 = 0.003;
const AIR_USE_BAR_PER_BOTTLE: f64 = 0.02 / (400.0 / 60.0);
const BASE_LOAD_KW: f64 = 10.0;
const CHILLER_KW: f64 = 4.0;
const COMPRESSOR_KW: f64 = 15.0;
const PUMP_KW_PER_LPM: f64 = 0.012;
const MOTOR_PF: f64 = 0.85;
const NOMINAL_V: f64 = 400.0;
const GRID_TAU_S: f64 = 600.0;
const GRID_SIGMA_V: f64 = 1.5;
const VOLTAGE_DROP_V_PER_KW: f64 = 0.04;
const WATER_BASE_LPM: f64 = 2.0;
const WATER_PER_BOTTLE_L: f64 = 0.05;

/// The filler's machine state, as exposed in its state register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MachineState {
    #[default]
    Idle = 0,
    Running = 1,
    Fault = 2,
}

impl MachineState {
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// Why the filler stopped, as exposed in its fault-code register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FaultCode {
    #[default]
    None = 0,
    InfeedJam = 1,
    CapperTorque = 2,
    LowAirPressure = 3,
    LabelMissing = 4,
    GuardDoorOpen = 5,
    /// The buffer tank ran dry; clears only once it is refilled.
    ProductStarved = 6,
}

impl FaultCode {
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// What the plant's instruments show after the last step: measured values carry noise, and
/// commands read back as applied (clamped).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Readings {
    // Commands as applied.
    pub speed_setpoint: f64,
    pub run_enable: bool,
    /// A reset requested but not yet handled; cleared by the next step.
    pub fault_reset: bool,
    pub level_setpoint: f64,
    pub pump_enable: bool,
    // Filler.
    pub state: MachineState,
    pub fault: FaultCode,
    pub at_speed: bool,
    /// bottles/min
    pub speed: f64,
    /// A
    pub motor_current: f64,
    /// °C
    pub motor_temp: f64,
    /// °C
    pub product_temp: f64,
    /// bar
    pub line_pressure: f64,
    /// mm/s RMS
    pub vibration: f64,
    pub good_count: u64,
    pub reject_count: u64,
    // Utilities.
    /// %
    pub tank_level: f64,
    /// L/min
    pub inflow: f64,
    /// L/min
    pub outflow: f64,
    /// °C
    pub tank_temp: f64,
    pub level_low: bool,
    pub level_high: bool,
    pub pump_running: bool,
    pub compressor_running: bool,
    pub energy_kwh: f64,
    /// kW
    pub active_power: f64,
    /// V, line to line
    pub voltage: f64,
    pub power_factor: f64,
    /// bar
    pub air_pressure: f64,
    /// L
    pub water_litres: f64,
}

/// The simulated bottling line: filler, buffer tank, compressed air, energy and water meters.
#[derive(Debug, Clone)]
pub struct Plant {
    rng: StdRng,
    elapsed: Duration,
    // Commands.
    speed_setpoint: f64,
    run_enable: bool,
    reset_requested: bool,
    level_setpoint: f64,
    pump_enable: bool,
    // Filler state (true values, before instrument noise).
    state: MachineState,
    fault: FaultCode,
    fault_left_s: f64,
    since_restart_s: f64,
    speed: f64,
    accel: f64,
    motor_temp: f64,
    bottle_fraction: f64,
    good: u64,
    rejects: u64,
    faults: u64,
    // Utilities state.
    tank_volume_l: f64,
    inflow: f64,
    pump_running: bool,
    tank_temp: f64,
    air_pressure: f64,
    compressor_on: bool,
    grid_offset_v: f64,
    power_kw: f64,
    energy_kwh: f64,
    water_l: f64,
    readings: Readings,
}

impl Plant {
    /// A plant in steady production at the default setpoints. The initial state does not depend
    /// on `seed`; only the noise and the random events that follow do.
    pub fn new(seed: u64) -> Plant {
        let speed = DEFAULT_SPEED_BPM;
        let current = motor_current(speed, 0.0);
        let mut plant = Plant {
            rng: StdRng::seed_from_u64(seed),
            elapsed: Duration::ZERO,
            speed_setpoint: DEFAULT_SPEED_BPM,
            run_enable: true,
            reset_requested: false,
            level_setpoint: DEFAULT_LEVEL_SETPOINT,
            pump_enable: true,
            state: MachineState::Running,
            fault: FaultCode::None,
            fault_left_s: 0.0,
            since_restart_s: RESTART_WINDOW_S,
            speed,
            accel: 0.0,
            motor_temp: AMBIENT_C + MOTOR_HEATING_K_PER_A2 * current * current,
            bottle_fraction: 0.0,
            // Counters of a line that has been producing for a while, large enough that the
            // high words of the u32 registers are in use from the start.
            good: 4_718_592,
            rejects: 71_303,
            faults: 0,
            // At the P controller's equilibrium: inflow matches the bottles' outflow.
            tank_volume_l: (DEFAULT_LEVEL_SETPOINT - speed * BOTTLE_L / LEVEL_KP) / 100.0
                * TANK_CAPACITY_L,
            inflow: speed * BOTTLE_L,
            pump_running: true,
            tank_temp: PRODUCT_MEAN_C,
            air_pressure: 7.0,
            compressor_on: false,
            grid_offset_v: 0.0,
            power_kw: 0.0,
            energy_kwh: 125_431.0,
            water_l: 843_210.0,
            readings: Readings::default(),
        };
        plant.power_kw = plant.power(NOMINAL_V);
        plant.refresh(false);
        plant
    }

    /// Advances the plant by `dt`.
    pub fn step(&mut self, dt: Duration) {
        let mut left = dt.as_secs_f64();
        while left > 0.0 {
            let h = left.min(MAX_SUBSTEP_S);
            self.substep(h);
            left -= h;
        }
        self.elapsed += dt;
        self.refresh(true);
    }

    /// What the instruments showed after the last step.
    pub fn readings(&self) -> &Readings {
        &self.readings
    }

    /// Simulated time since [`Plant::new`].
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    pub fn state(&self) -> MachineState {
        self.state
    }

    pub fn fault(&self) -> FaultCode {
        self.fault
    }

    /// Faults since start, including injected ones.
    pub fn fault_count(&self) -> u64 {
        self.faults
    }

    /// Sets the filler's speed setpoint, clamped to 0..=[`MAX_SPEED_BPM`] (NaN is ignored).
    pub fn set_speed_setpoint(&mut self, bpm: f64) {
        if !bpm.is_nan() {
            self.speed_setpoint = bpm.clamp(0.0, MAX_SPEED_BPM);
            self.readings.speed_setpoint = self.speed_setpoint;
        }
    }

    pub fn set_run_enable(&mut self, on: bool) {
        self.run_enable = on;
        self.readings.run_enable = on;
    }

    /// Requests a fault reset, handled by the next step. A fault whose cause persists (a dry
    /// tank) stays.
    pub fn reset_fault(&mut self) {
        self.reset_requested = true;
        self.readings.fault_reset = true;
    }

    /// Sets the buffer tank's level setpoint, clamped to 0..=100 % (NaN is ignored).
    pub fn set_level_setpoint(&mut self, percent: f64) {
        if !percent.is_nan() {
            self.level_setpoint = percent.clamp(0.0, 100.0);
            self.readings.level_setpoint = self.level_setpoint;
        }
    }

    pub fn set_pump_enable(&mut self, on: bool) {
        self.pump_enable = on;
        self.readings.pump_enable = on;
    }

    /// Trips the filler with `code` for `duration` (for scenarios and tests), whatever its state.
    pub fn inject_fault(&mut self, code: FaultCode, duration: Duration) {
        self.trip(code, duration.as_secs_f64());
    }

    fn level(&self) -> f64 {
        self.tank_volume_l / TANK_CAPACITY_L * 100.0
    }

    fn trip(&mut self, code: FaultCode, duration_s: f64) {
        self.state = MachineState::Fault;
        self.fault = code;
        self.fault_left_s = duration_s;
        self.faults += 1;
    }

    fn try_clear_fault(&mut self) {
        if self.fault == FaultCode::ProductStarved && self.level() < RESTART_LEVEL {
            self.fault_left_s = STARVED_RETRY_S;
            return;
        }
        self.fault = FaultCode::None;
        self.fault_left_s = 0.0;
        self.state = if self.run_enable {
            MachineState::Running
        } else {
            MachineState::Idle
        };
        self.since_restart_s = 0.0;
    }

    fn substep(&mut self, h: f64) {
        self.update_state(h);
        self.update_speed(h);
        let bottles = self.produce(h);
        let current = motor_current(self.speed, self.accel);
        self.motor_temp = lag(
            self.motor_temp,
            AMBIENT_C + MOTOR_HEATING_K_PER_A2 * current * current,
            h,
            MOTOR_TEMP_TAU_S,
        );

        // Buffer tank: the filler draws product, the P controller refills it.
        let outflow = self.outflow();
        let error = self.level_setpoint - self.level();
        let demand = if self.pump_enable {
            (LEVEL_KP * error).clamp(0.0, PUMP_MAX_LPM)
        } else {
            0.0
        };
        self.pump_running = demand > 0.0;
        self.inflow = lag(self.inflow, demand, h, PUMP_TAU_S);
        self.tank_volume_l =
            (self.tank_volume_l + (self.inflow - outflow) * h / 60.0).clamp(0.0, TANK_CAPACITY_L);
        self.tank_temp = ornstein_uhlenbeck(
            &mut self.rng,
            self.tank_temp,
            PRODUCT_MEAN_C,
            PRODUCT_SIGMA_C,
            h,
            PRODUCT_TAU_S,
        );

        // Compressed air: bottles use it, the compressor cycles between its switch points.
        let used = AIR_LEAK_BAR_PER_S + AIR_USE_BAR_PER_BOTTLE * self.speed / 60.0;
        if self.air_pressure < AIR_CUT_IN_BAR {
            self.compressor_on = true;
        } else if self.air_pressure > AIR_CUT_OUT_BAR {
            self.compressor_on = false;
        }
        let supplied = if self.compressor_on {
            COMPRESSOR_BAR_PER_S
        } else {
            0.0
        };
        self.air_pressure = (self.air_pressure + (supplied - used) * h).max(0.0);

        // Energy: the voltage sags under the load of the previous substep.
        self.grid_offset_v = ornstein_uhlenbeck(
            &mut self.rng,
            self.grid_offset_v,
            0.0,
            GRID_SIGMA_V,
            h,
            GRID_TAU_S,
        );
        self.power_kw = self.power(self.voltage());
        self.energy_kwh += self.power_kw * h / 3600.0;
        self.water_l += WATER_BASE_LPM * h / 60.0 + WATER_PER_BOTTLE_L * bottles as f64;
    }

    fn update_state(&mut self, h: f64) {
        use MachineState::*;
        if std::mem::take(&mut self.reset_requested) && self.state == Fault {
            self.try_clear_fault();
        }
        match self.state {
            Fault => {
                self.fault_left_s -= h;
                if self.fault_left_s <= 0.0 {
                    self.try_clear_fault();
                }
            }
            Running if !self.run_enable => self.state = Idle,
            Idle if self.run_enable => self.state = Running,
            Running | Idle => {}
        }
        if self.state == Running {
            if self.level() < STARVED_LEVEL {
                self.trip(FaultCode::ProductStarved, STARVED_RETRY_S);
            } else if self.speed > 1.0
                && self.rng.random::<f64>() < 1.0 - (-h / MEAN_RUN_BETWEEN_FAULTS_S).exp()
            {
                let code = RANDOM_FAULTS[self.rng.random_range(0..RANDOM_FAULTS.len())];
                let duration = self.rng.random_range(FAULT_MIN_S..=FAULT_MAX_S);
                self.trip(code, duration);
            }
        }
        self.since_restart_s += h;
    }

    fn update_speed(&mut self, h: f64) {
        let before = self.speed;
        self.speed = match self.state {
            MachineState::Running => {
                let step = (self.speed_setpoint - before) * (1.0 - (-h / SPEED_TAU_S).exp());
                before + step.clamp(-MAX_ACCEL * h, MAX_ACCEL * h)
            }
            MachineState::Idle => (before - STOP_DECEL * h).max(0.0),
            MachineState::Fault => (before - FAULT_DECEL * h).max(0.0),
        };
        self.accel = (self.speed - before) / h;
    }

    /// Fills the bottles that passed in `h` and sorts out the rejects; returns how many passed.
    fn produce(&mut self, h: f64) -> u64 {
        self.bottle_fraction += self.speed / 60.0 * h;
        let n = self.bottle_fraction.floor();
        self.bottle_fraction -= n;
        let n = n as u64;
        let p = if self.since_restart_s < RESTART_WINDOW_S {
            RESTART_REJECT_RATE
        } else {
            REJECT_RATE
        };
        for _ in 0..n {
            if self.rng.random_bool(p) {
                self.rejects += 1;
            } else {
                self.good += 1;
            }
        }
        n
    }

    fn outflow(&self) -> f64 {
        if self.tank_volume_l > 0.0 {
            self.speed * BOTTLE_L
        } else {
            0.0
        }
    }

    fn voltage(&self) -> f64 {
        NOMINAL_V + self.grid_offset_v - VOLTAGE_DROP_V_PER_KW * self.power_kw
    }

    fn power(&self, voltage: f64) -> f64 {
        let motor =
            3f64.sqrt() * voltage * motor_current(self.speed, self.accel) * MOTOR_PF / 1000.0;
        let compressor = if self.compressor_on {
            COMPRESSOR_KW
        } else {
            0.0
        };
        BASE_LOAD_KW + CHILLER_KW + motor + compressor + PUMP_KW_PER_LPM * self.inflow
    }

    /// Samples the instruments; with `noisy`, each reading gets its sensor's noise.
    fn refresh(&mut self, noisy: bool) {
        let speed = self.speed;
        let load = speed / MAX_SPEED_BPM;
        let current = motor_current(speed, self.accel);
        let level = self.level();
        let outflow = self.outflow();
        let voltage = self.voltage();
        let tolerance = (self.speed_setpoint * AT_SPEED_TOLERANCE).max(2.0);
        let rng = &mut self.rng;
        let mut noise = |sigma: f64| if noisy { sigma * gauss(rng) } else { 0.0 };
        // Flow meters and the speed encoder read exactly zero at standstill.
        let moving = |v: f64, sigma: f64, n: &mut dyn FnMut(f64) -> f64| {
            if v > 0.05 {
                (v + n(sigma)).max(0.0)
            } else {
                0.0
            }
        };
        self.readings = Readings {
            speed_setpoint: self.speed_setpoint,
            run_enable: self.run_enable,
            fault_reset: self.reset_requested,
            level_setpoint: self.level_setpoint,
            pump_enable: self.pump_enable,
            state: self.state,
            fault: self.fault,
            at_speed: self.state == MachineState::Running
                && (speed - self.speed_setpoint).abs() <= tolerance,
            speed: moving(speed, 0.4, &mut noise),
            motor_current: moving(current, 0.12, &mut noise),
            motor_temp: self.motor_temp + noise(0.05),
            product_temp: self.tank_temp + FILLER_WARMING_C + noise(0.03),
            line_pressure: (LINE_PRESSURE_BAR - 0.15 * load + noise(0.004 + 0.03 * load)).max(0.0),
            vibration: (0.25
                + 2.8 * load * load
                + 0.01 * self.accel.abs()
                + noise(0.04 * (1.0 + 2.0 * load)))
            .max(0.05),
            good_count: self.good,
            reject_count: self.rejects,
            tank_level: (level + noise(0.05)).clamp(0.0, 100.0),
            inflow: moving(self.inflow, 1.5, &mut noise),
            outflow: moving(outflow, 1.0, &mut noise),
            tank_temp: self.tank_temp + noise(0.03),
            level_low: level < LEVEL_LOW,
            level_high: level > LEVEL_HIGH,
            pump_running: self.pump_running,
            compressor_running: self.compressor_on,
            energy_kwh: self.energy_kwh,
            active_power: (self.power_kw + noise(0.15)).max(0.0),
            voltage: voltage + noise(0.3),
            // Induction motors and the compressor run at a better power factor under load.
            power_factor: (0.80 + 0.12 * (self.power_kw / 60.0).min(1.0) + noise(0.003))
                .clamp(0.0, 1.0),
            air_pressure: (self.air_pressure + noise(0.01)).max(0.0),
            water_litres: self.water_l,
        };
    }
}

/// Motor current of the filler's main drive: magnetising current, load, and a term for
/// accelerating the machine's inertia.
fn motor_current(speed: f64, accel: f64) -> f64 {
    if speed > 0.0 {
        3.0 + 0.032 * speed + 0.05 * accel.abs()
    } else {
        0.0
    }
}

/// First-order lag of `x` toward `target` over `h` seconds (exact for a constant target).
fn lag(x: f64, target: f64, h: f64, tau: f64) -> f64 {
    target + (x - target) * (-h / tau).exp()
}

/// Exact Ornstein-Uhlenbeck update: mean-reverting noise with stationary deviation `sigma`.
fn ornstein_uhlenbeck(rng: &mut StdRng, x: f64, mean: f64, sigma: f64, h: f64, tau: f64) -> f64 {
    let decay = (-h / tau).exp();
    mean + (x - mean) * decay + sigma * (1.0 - decay * decay).sqrt() * gauss(rng)
}

/// A standard normal sample (Box-Muller).
fn gauss(rng: &mut StdRng) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const MINUTE: u64 = 60;
    const HOUR: u64 = 3600;

    /// Steps `plant` one second at a time for `secs` seconds, calling `check` after each step.
    fn run_secs(plant: &mut Plant, secs: u64, mut check: impl FnMut(&Plant)) {
        for _ in 0..secs {
            plant.step(SECOND);
            check(plant);
        }
    }

    #[test]
    fn speed_settles_at_the_setpoint_while_running_and_follows_a_new_one() {
        let mut plant = Plant::new(7);
        let mut checked = 0u64;
        for setpoint in [400.0, 250.0, 550.0, 120.0] {
            plant.set_speed_setpoint(setpoint);
            let mut running_for = 0u64;
            run_secs(&mut plant, HOUR, |p| {
                let r = p.readings();
                running_for = if r.state == MachineState::Running {
                    running_for + 1
                } else {
                    0
                };
                if running_for >= 30 {
                    checked += 1;
                    assert!(
                        (r.speed - setpoint).abs() <= setpoint * 0.02,
                        "after {running_for} s running at setpoint {setpoint}: speed {}",
                        r.speed
                    );
                    assert!(r.at_speed);
                }
            });
        }
        // Faults take their share, but most of the four hours is steady running.
        assert!(checked > 3 * HOUR, "only {checked} s checked");
    }

    #[test]
    fn run_enable_off_ramps_the_filler_down_and_on_brings_it_back() {
        let mut plant = Plant::new(11);
        plant.set_run_enable(false);
        run_secs(&mut plant, 4, |_| {});
        let slowing = plant.readings().speed;
        assert!(slowing > 0.0 && slowing < 400.0, "ramping down: {slowing}");
        run_secs(&mut plant, 10, |_| {});
        let r = plant.readings();
        assert_eq!(r.state, MachineState::Idle);
        assert_eq!((r.speed, r.motor_current, r.outflow), (0.0, 0.0, 0.0));
        let counted = r.good_count + r.reject_count;
        run_secs(&mut plant, 10 * MINUTE, |p| {
            assert_eq!(p.readings().good_count + p.readings().reject_count, counted);
        });
        plant.set_run_enable(true);
        run_secs(&mut plant, 30, |_| {});
        assert_eq!(plant.state(), MachineState::Running);
        assert!((plant.readings().speed - 400.0).abs() < 8.0);
    }

    #[test]
    fn tank_level_stays_in_bounds_and_near_its_setpoint() {
        let mut plant = Plant::new(3);
        for (setpoint, speed) in [(60.0, 400.0), (85.0, 550.0), (30.0, 300.0), (95.0, 600.0)] {
            plant.set_level_setpoint(setpoint);
            plant.set_speed_setpoint(speed);
            let mut t = 0;
            run_secs(&mut plant, HOUR, |p| {
                t += 1;
                let r = p.readings();
                assert!((0.0..=100.0).contains(&r.tank_level), "{}", r.tank_level);
                // Settled: the P controller holds the level a little below its setpoint.
                if t > 40 * MINUTE {
                    assert!(
                        r.tank_level > setpoint - 8.0 && r.tank_level < setpoint + 1.0,
                        "level {} for setpoint {setpoint}",
                        r.tank_level
                    );
                    assert!(r.fault != FaultCode::ProductStarved);
                }
            });
        }
    }

    #[test]
    fn a_dry_tank_starves_the_filler_until_it_is_refilled() {
        let mut plant = Plant::new(5);
        plant.set_pump_enable(false);
        let mut seconds = 0;
        while plant.fault() != FaultCode::ProductStarved {
            plant.step(SECOND);
            seconds += 1;
            assert!(seconds < 2 * HOUR, "the tank never ran dry");
            assert!((0.0..=100.0).contains(&plant.readings().tank_level));
        }
        let r = plant.readings();
        assert!(r.tank_level < STARVED_LEVEL + 0.5, "{}", r.tank_level);
        assert!(r.level_low && !r.pump_running);
        // A reset does not help while the tank is dry.
        plant.reset_fault();
        run_secs(&mut plant, 5 * MINUTE, |p| {
            assert_eq!(p.fault(), FaultCode::ProductStarved)
        });
        plant.set_pump_enable(true);
        run_secs(&mut plant, 3 * MINUTE, |_| {});
        assert_eq!(plant.state(), MachineState::Running);
        assert!(plant.readings().pump_running);
    }

    #[test]
    fn counters_and_meters_never_decrease() {
        let mut plant = Plant::new(9);
        let first = plant.readings().clone();
        let mut last = first.clone();
        run_secs(&mut plant, 6 * HOUR, |p| {
            let r = p.readings();
            assert!(r.good_count >= last.good_count);
            assert!(r.reject_count >= last.reject_count);
            assert!(r.energy_kwh > last.energy_kwh, "the base load always draws");
            assert!(r.water_litres > last.water_litres);
            last = r.clone();
        });
        let bottles = last.good_count - first.good_count;
        // 6 h at 400 bpm is 144 000 bottles, less the time lost to faults.
        assert!((120_000..144_000).contains(&bottles), "{bottles} bottles");
        let kwh = last.energy_kwh - first.energy_kwh;
        assert!((120.0..300.0).contains(&kwh), "{kwh} kWh in 6 h");
    }

    #[test]
    fn random_faults_happen_and_clear_by_themselves() {
        let mut plant = Plant::new(21);
        let mut faults = Vec::new();
        let mut current: Option<(FaultCode, u64)> = None;
        run_secs(&mut plant, 6 * HOUR, |p| {
            let r = p.readings();
            match (r.state, &mut current) {
                (MachineState::Fault, None) => {
                    assert!(RANDOM_FAULTS.contains(&r.fault), "{:?}", r.fault);
                    current = Some((r.fault, 1));
                }
                (MachineState::Fault, Some((code, secs))) => {
                    assert_eq!(r.fault, *code);
                    if *secs >= 3 {
                        assert_eq!(r.speed, 0.0, "quick stop");
                    }
                    *secs += 1;
                }
                (state, Some((code, secs))) => {
                    assert_eq!(state, MachineState::Running);
                    assert_eq!(r.fault, FaultCode::None);
                    faults.push((*code, *secs));
                    current = None;
                }
                (state, None) => assert_eq!(state, MachineState::Running),
            }
        });
        // One every 12.5 min of running: about 28 in 6 h.
        assert!((15..=45).contains(&faults.len()), "{} faults", faults.len());
        for (code, secs) in &faults {
            assert!((19..=61).contains(secs), "{code:?} lasted {secs} s");
        }
        let distinct: std::collections::HashSet<_> = faults.iter().map(|f| f.0).collect();
        assert!(distinct.len() >= 3, "{distinct:?}");
        assert_eq!(
            plant.fault_count(),
            faults.len() as u64 + u64::from(current.is_some())
        );
    }

    #[test]
    fn reset_clears_a_fault_at_once() {
        let mut plant = Plant::new(1);
        plant.inject_fault(FaultCode::GuardDoorOpen, Duration::from_secs(3600));
        run_secs(&mut plant, 10, |_| {});
        assert_eq!(plant.readings().fault, FaultCode::GuardDoorOpen);
        assert_eq!(plant.readings().speed, 0.0);
        plant.reset_fault();
        assert!(plant.readings().fault_reset, "pending until the next step");
        plant.step(Duration::from_millis(100));
        let r = plant.readings();
        assert_eq!(
            (r.state, r.fault, r.fault_reset),
            (MachineState::Running, FaultCode::None, false)
        );
    }

    #[test]
    fn reject_ratio_is_plausible_and_higher_after_restarts() {
        let mut plant = Plant::new(33);
        let (mut steady, mut restart) = ((0u64, 0u64), (0u64, 0u64));
        let mut since_restart = u64::MAX;
        let mut last = plant.readings().clone();
        run_secs(&mut plant, 8 * HOUR, |p| {
            let r = p.readings();
            if last.state == MachineState::Fault && r.state != MachineState::Fault {
                since_restart = 0;
            }
            let bucket = if since_restart < RESTART_WINDOW_S as u64 {
                &mut restart
            } else {
                &mut steady
            };
            bucket.0 += r.good_count - last.good_count;
            bucket.1 += r.reject_count - last.reject_count;
            since_restart = since_restart.saturating_add(1);
            last = r.clone();
        });
        let ratio = |(good, rejects): (u64, u64)| rejects as f64 / (good + rejects) as f64;
        let total = (steady.0 + restart.0, steady.1 + restart.1);
        assert!(
            (0.01..0.02).contains(&ratio(total)),
            "overall {}",
            ratio(total)
        );
        assert!(
            (0.009..0.015).contains(&ratio(steady)),
            "steady {}",
            ratio(steady)
        );
        assert!(ratio(restart) > 0.035, "after restarts {}", ratio(restart));
    }

    #[test]
    fn instruments_read_believable_values() {
        let mut plant = Plant::new(4);
        let (mut compressor_on, mut compressor_off) = (0, 0);
        // Skip the first hour's warm-up of the slow states.
        run_secs(&mut plant, HOUR, |_| {});
        run_secs(&mut plant, HOUR, |p| {
            let r = p.readings();
            if r.compressor_running {
                compressor_on += 1;
            } else {
                compressor_off += 1;
            }
            assert!(
                (6.3..7.7).contains(&r.air_pressure),
                "air {}",
                r.air_pressure
            );
            assert!((385.0..405.0).contains(&r.voltage), "voltage {}", r.voltage);
            assert!(
                (0.75..0.97).contains(&r.power_factor),
                "pf {}",
                r.power_factor
            );
            assert!((2.0..6.5).contains(&r.tank_temp), "tank {}", r.tank_temp);
            assert!((r.product_temp - r.tank_temp - FILLER_WARMING_C).abs() < 0.3);
            assert!(
                (2.3..2.6).contains(&r.line_pressure),
                "line {}",
                r.line_pressure
            );
            if r.state == MachineState::Running && r.at_speed {
                assert!(
                    (14.5..17.0).contains(&r.motor_current),
                    "I {}",
                    r.motor_current
                );
                assert!((0.9..2.2).contains(&r.vibration), "vib {}", r.vibration);
                assert!(
                    (20.0..50.0).contains(&r.active_power),
                    "P {}",
                    r.active_power
                );
                assert!((290.0..310.0).contains(&r.outflow), "out {}", r.outflow);
            }
            assert!(
                (35.0..60.0).contains(&r.motor_temp),
                "motor {}",
                r.motor_temp
            );
        });
        // The compressor cycles: loaded a bit less than half the time.
        let duty = f64::from(compressor_on) / f64::from(compressor_on + compressor_off);
        assert!((0.2..0.7).contains(&duty), "compressor duty {duty}");
    }

    #[test]
    fn one_seed_gives_one_trajectory() {
        let trajectory = |seed| {
            let mut plant = Plant::new(seed);
            let mut out = Vec::new();
            for i in 0..2000 {
                plant.step(Duration::from_millis(50 + i % 200));
                if i == 700 {
                    plant.set_speed_setpoint(300.0);
                }
                out.push(plant.readings().clone());
            }
            out
        };
        assert_eq!(trajectory(42), trajectory(42));
        assert_ne!(trajectory(42), trajectory(43));
        assert_eq!(Plant::new(1).readings(), Plant::new(2).readings());
    }
}
