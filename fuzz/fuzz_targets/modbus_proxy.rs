//! Arbitrary bytes through the Modbus TCP man in the middle (`ironplant_sim::attack::proxy`),
//! as a client and a server would send them: the first byte splits the input into the client's
//! and the server's stream.
//!
//! Checks, beyond "no panic": frames are cut at their MBAP length and never beyond the input;
//! rewriting an answer keeps its length and header.
#![no_main]

use std::time::Duration;

use ironplant_sim::attack::proxy::{frame_len, ProxyState};
use ironplant_sim::attack::{AttackControl, Scenario};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (client, server) = rest.split_at(at);
    let attacks = AttackControl::new();
    for signal in ["tank_level", "inflow", "motor_temp", "good_count", "water_total"] {
        let _ = attacks.start(Scenario::Mitm {
            signal: signal.into(),
            factor: 0.5,
            start_s: 0.0,
        });
    }
    let mut state = ProxyState::default();
    let mut c = client;
    while let Ok(Some(len)) = frame_len(c) {
        assert!(len <= c.len());
        state.on_request(&c[..len]);
        c = &c[len..];
    }
    let mut s = server;
    while let Ok(Some(len)) = frame_len(s) {
        assert!(len <= s.len());
        let mut frame = s[..len].to_vec();
        state.on_response(&mut frame, Duration::ZERO, &attacks);
        assert_eq!(frame.len(), len);
        assert_eq!(frame[..9.min(len)], s[..9.min(len)]);
        s = &s[len..];
    }
});
