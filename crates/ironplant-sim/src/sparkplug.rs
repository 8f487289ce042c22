//! The simulator's Sparkplug B edge node: a few plant values of the simulated line, published
//! to an MQTT broker (normally the platform's) as a real MQTT client.
//!
//! Group `bottling`, node `sim-edge`, one device `line1` (all configurable). Each connection:
//! CONNECT with the NDEATH as will (carrying the bdSeq of this connection), subscribe to the
//! node's NCMD, NBIRTH + DBIRTH with the current values, then a DDATA with the metrics that
//! changed, at most once per `interval`. An NCMD `Node Control/Rebirth` = true is answered with a
//! new NBIRTH + DBIRTH. When the connection drops, the next one moves to the next bdSeq (the
//! will of each connection matches the births made on it) after a back-off of 100 ms to 5 s.
//!
//! Payloads come from [`ironplant_sparkplug::EdgeNode`]; the MQTT side is
//! [`ironplant_mqtt::client::Client`], one client per connection (its will is fixed at CONNECT).

use std::time::Duration;

use ironplant_core::Timestamp;
use ironplant_mqtt::client::{Client, ClientOptions, Connector, Event, TcpConnector};
use ironplant_mqtt::codec::{MqttString, QoS, Will, WillProperties};
use ironplant_sparkplug::{EdgeError, EdgeNode, MetricValue, Publish, Qos};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::plant::{MachineState, Readings};

/// Where and as whom the edge node publishes.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// The broker, `host:port`.
    pub broker: String,
    pub group_id: String,
    pub edge_node_id: String,
    pub device_id: String,
    /// Least time between two DDATA messages.
    pub interval: Duration,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        EdgeSettings {
            broker: "127.0.0.1:1883".to_owned(),
            group_id: "bottling".to_owned(),
            edge_node_id: "sim-edge".to_owned(),
            device_id: "line1".to_owned(),
            interval: Duration::from_secs(1),
        }
    }
}

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Metric names and engineering units, in birth order.
pub const METRICS: [(&str, Option<&str>); 10] = [
    ("Filler/State", None),
    ("Filler/FaultCode", None),
    ("Filler/Speed", Some("bpm")),
    ("Filler/MotorTemperature", Some("°C")),
    ("Filler/LinePressure", Some("bar")),
    ("Filler/GoodCount", Some("bottles")),
    ("Filler/RejectCount", Some("bottles")),
    ("Tank/Level", Some("%")),
    ("Tank/Temperature", Some("°C")),
    ("Energy/ActivePower", Some("kW")),
];

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// The metric values of a set of readings, in [`METRICS`] order. Measurements are rounded to
/// their instrument's resolution so that "on change" means a visible change.
pub fn metric_values(r: &Readings) -> Vec<MetricValue> {
    let state = match r.state {
        MachineState::Idle => "Idle",
        MachineState::Running => "Running",
        MachineState::Fault => "Fault",
    };
    vec![
        MetricValue::String(state.to_owned()),
        MetricValue::Int32(i32::from(r.fault.code())),
        MetricValue::Double(round(r.speed, 1)),
        MetricValue::Double(round(r.motor_temp, 1)),
        MetricValue::Double(round(r.line_pressure, 2)),
        MetricValue::UInt64(r.good_count),
        MetricValue::UInt64(r.reject_count),
        MetricValue::Double(round(r.tank_level, 1)),
        MetricValue::Double(round(r.tank_temp, 1)),
        MetricValue::Double(round(r.active_power, 1)),
    ]
}

/// The edge node with its device and metrics declared, holding the values of `r`.
pub fn edge_node(s: &EdgeSettings, r: &Readings) -> Result<EdgeNode, EdgeError> {
    let mut edge = EdgeNode::new(&s.group_id, &s.edge_node_id)?;
    edge.add_device(&s.device_id)?;
    for ((name, unit), value) in METRICS.iter().zip(metric_values(r)) {
        edge.add_device_metric(&s.device_id, name, value)?;
        if let Some(unit) = unit {
            edge.set_unit(Some(&s.device_id), name, unit)?;
        }
    }
    Ok(edge)
}

/// Runs the edge node until the future is dropped, following `readings`, over plain TCP
/// without credentials.
pub async fn run(s: EdgeSettings, readings: watch::Receiver<Readings>) -> Result<(), EdgeError> {
    let tcp = TcpConnector {
        address: s.broker.clone(),
    };
    run_with(s, readings, tcp, None).await
}

/// Like [`run`], reaching the broker through `connector` (TLS with a device certificate, say)
/// and presenting `credentials` (user name, password) when given.
pub async fn run_with<C: Connector + Clone>(
    s: EdgeSettings,
    mut readings: watch::Receiver<Readings>,
    connector: C,
    credentials: Option<(String, String)>,
) -> Result<(), EdgeError> {
    let first = readings.borrow_and_update().clone();
    let mut edge = edge_node(&s, &first)?;
    let mut backoff = RECONNECT_MIN;
    loop {
        let will = edge.will(Timestamp::now());
        // The node's name first: an enrolled device may use only `<name>` and `<name>-*`.
        let mut options = ClientOptions::new(format!("{}-{}", s.edge_node_id, s.group_id));
        options.keep_alive = Duration::from_secs(10);
        options.connect_timeout = Duration::from_secs(5);
        options.will = to_will(&will);
        if let Some((user, password)) = &credentials {
            options.username = Some(user.clone());
            options.password = Some(password.clone().into_bytes().into());
        }
        let (client, mut events) = Client::connect_with(connector.clone(), options);
        let was_up = session(&s, &client, &mut events, &mut edge, &mut readings).await;
        // Stops the client's own reconnecting: the next connection needs a new will.
        client.disconnect().await;
        if was_up {
            backoff = RECONNECT_MIN;
        }
        edge.reconnect();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// One MQTT connection. Returns whether it got connected at all.
async fn session(
    s: &EdgeSettings,
    client: &Client,
    events: &mut mpsc::Receiver<Event>,
    edge: &mut EdgeNode,
    readings: &mut watch::Receiver<Readings>,
) -> bool {
    loop {
        match events.recv().await {
            Some(Event::Connected { .. }) => break,
            Some(Event::Disconnected { error }) => {
                tracing::debug!(broker = %s.broker, %error, "sparkplug edge node cannot connect");
                return false;
            }
            Some(Event::Publish(_)) => {}
            None => return false,
        }
    }
    let ncmd = format!("spBv1.0/{}/NCMD/{}", s.group_id, s.edge_node_id);
    if let Err(e) = client.subscribe(&[(ncmd.as_str(), QoS::AtMostOnce)]).await {
        tracing::warn!(error = %e, "sparkplug edge node cannot subscribe to its commands");
        return true;
    }
    tracing::info!(broker = %s.broker, group = %s.group_id, node = %s.edge_node_id, bd_seq = edge.bd_seq(), "sparkplug edge node connected");
    if birth(s, client, edge, readings).await.is_err() {
        return true;
    }
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Publish(p)) => {
                    if edge.is_rebirth_request(p.topic.as_str(), &p.payload) {
                        tracing::info!("sparkplug edge node: rebirth requested");
                        if birth(s, client, edge, readings).await.is_err() {
                            return true;
                        }
                    }
                }
                Some(Event::Disconnected { error }) => {
                    tracing::info!(%error, "sparkplug edge node disconnected");
                    return true;
                }
                Some(Event::Connected { .. }) => {}
                None => return true,
            },
            _ = tick.tick() => {
                if readings.has_changed().unwrap_or(false) {
                    let r = readings.borrow_and_update().clone();
                    if data(s, client, edge, &r).await.is_err() {
                        return true;
                    }
                }
            }
        }
    }
}

/// NBIRTH + DBIRTH with the latest values.
async fn birth(
    s: &EdgeSettings,
    client: &Client,
    edge: &mut EdgeNode,
    readings: &mut watch::Receiver<Readings>,
) -> Result<(), ()> {
    let r = readings.borrow_and_update().clone();
    let values = metric_values(&r);
    let updates: Vec<(&str, MetricValue)> = METRICS.iter().map(|(n, _)| *n).zip(values).collect();
    let now = Timestamp::now();
    // Brings the declared values up to date; the message itself is not sent (the birth
    // restarts seq at 0 and carries the same values).
    if let Err(e) = edge.device_data(&s.device_id, &updates, now) {
        tracing::error!(error = %e, "sparkplug edge node: metric update rejected");
    }
    for m in edge.birth(now) {
        send(client, m).await?;
    }
    Ok(())
}

/// A DDATA with the metrics that changed since the last message, if any did.
async fn data(
    s: &EdgeSettings,
    client: &Client,
    edge: &mut EdgeNode,
    r: &Readings,
) -> Result<(), ()> {
    let current = metric_values(r);
    let updates: Vec<(&str, MetricValue)> = METRICS
        .iter()
        .zip(current)
        .filter(|((name, _), v)| edge.value(Some(&s.device_id), name) != Some(v))
        .map(|((name, _), v)| (*name, v))
        .collect();
    if updates.is_empty() {
        return Ok(());
    }
    match edge.device_data(&s.device_id, &updates, Timestamp::now()) {
        Ok(m) => send(client, m).await,
        Err(e) => {
            tracing::error!(error = %e, "sparkplug edge node: metric update rejected");
            Ok(())
        }
    }
}

async fn send(client: &Client, m: Publish) -> Result<(), ()> {
    let qos = match m.qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    };
    client
        .publish(&m.topic, m.payload, qos, m.retain)
        .await
        .map_err(
            |e| tracing::info!(error = %e, topic = %m.topic, "sparkplug edge node cannot publish"),
        )
}

fn to_will(m: &Publish) -> Option<Will> {
    Some(Will {
        topic: MqttString::try_from(m.topic.as_str()).ok()?,
        payload: m.payload.clone().into(),
        qos: match m.qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        },
        retain: m.retain,
        properties: WillProperties::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::Plant;
    use ironplant_sparkplug::{Host, HostAction, Payload};

    #[test]
    fn the_edge_node_births_every_metric_with_units_and_data_sends_changes() {
        let mut plant = Plant::new(7);
        plant.step(Duration::from_secs(1));
        assert_eq!(plant.state(), MachineState::Running, "a new plant runs");
        let s = EdgeSettings::default();
        let mut edge = edge_node(&s, plant.readings()).expect("valid ids");
        let mut host = Host::new("t").expect("id");
        let now = Timestamp::now();
        let mut actions = Vec::new();
        for m in edge.birth(now) {
            actions.extend(host.handle(&m.topic, &m.payload, now));
        }
        let speed =
            ironplant_core::TagPath::parse("bottling/sim-edge/line1/Filler/Speed").expect("path");
        let info = host.metric_info(&speed).expect("born");
        assert_eq!(info.unit.as_deref(), Some("bpm"));
        let value = actions.iter().find_map(|a| match a {
            HostAction::Sample(t) if t.path == speed => Some(t.value.clone()),
            _ => None,
        });
        let expected = round(plant.readings().speed, 1);
        assert!(expected > 300.0, "{:?}", plant.readings());
        assert_eq!(value, Some(ironplant_core::Value::Float(expected)));

        // Nothing changed: no DDATA metrics; after a step some changed, and only those.
        let r = plant.readings().clone();
        let same: Vec<_> = METRICS
            .iter()
            .zip(metric_values(&r))
            .filter(|((n, _), v)| edge.value(Some("line1"), n) != Some(v))
            .collect();
        assert!(same.is_empty());
        plant.step(Duration::from_secs(2));
        assert_eq!(plant.state(), MachineState::Running);
        let changed: Vec<_> = METRICS
            .iter()
            .zip(metric_values(plant.readings()))
            .filter(|((n, _), v)| edge.value(Some("line1"), n) != Some(v))
            .map(|((n, _), _)| *n)
            .collect();
        assert!(changed.contains(&"Filler/GoodCount"), "{changed:?}");
        assert!(!changed.contains(&"Filler/State"), "{changed:?}");
        let msg = edge
            .device_data(
                "line1",
                &[("Filler/GoodCount", MetricValue::UInt64(1))],
                now,
            )
            .expect("declared");
        let p = Payload::decode_bytes(&msg.payload).expect("payload");
        assert_eq!(p.metrics.len(), 1);
    }
}
