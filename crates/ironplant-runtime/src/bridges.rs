//! Starts the configured MQTT bridges (`[[bridge]]`) next to the broker: translates the
//! config model into the bridge's settings and puts each queue under
//! `<data-dir>/bridge/<name>/`.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use ironplant_mqtt::bridge::{
    Bridge, BridgeError, BridgeSettings, InRule, OutRule, Overflow, QueueLimits,
};
use ironplant_mqtt::client::ClientOptions;
use ironplant_mqtt::codec::{ProtocolVersion, QoS};
use ironplant_mqtt::settings::{BridgeConfig, BridgeOverflow, MqttVersion};
use ironplant_mqtt::Broker;

/// Each local subscription's channel: generous, so bursts reach the disk queue, not the floor.
const LOCAL_CAPACITY: usize = 65_536;
/// Messages in flight to a remote at once.
const WINDOW: usize = 64;
/// How long a remote keeps a persistent (MQTT 5.0) bridge session while the bridge is away.
const SESSION_EXPIRY_SECS: u32 = 86_400;

/// The bridge's settings for one `[[bridge]]`; reads its signing key if it signs.
pub fn settings(cfg: &BridgeConfig, data_dir: &Path) -> Result<BridgeSettings, BridgeError> {
    let signer = match &cfg.sign {
        None => None,
        Some(sign) => {
            let fail = |reason: String| BridgeError::SigningKey {
                bridge: cfg.name.clone(),
                path: sign.key.display().to_string(),
                reason,
            };
            let pkcs8 = std::fs::read(&sign.key).map_err(|e| fail(e.to_string()))?;
            let signer = ironplant_mqtt::signed::Signer::from_pkcs8(&sign.signer, &pkcs8)
                .map_err(|e| fail(e.to_string()))?;
            tracing::info!(bridge = %cfg.name, signer = %sign.signer, public_key = %signer.public_key_hex(), "the bridge signs what it sends");
            Some(std::sync::Arc::new(signer))
        }
    };
    let qos = |q: u8| QoS::from_u8(q).unwrap_or(QoS::AtLeastOnce);
    let mut client = ClientOptions::new(cfg.client_id.clone());
    client.version = match cfg.protocol {
        MqttVersion::V311 => ProtocolVersion::V311,
        MqttVersion::V5 => ProtocolVersion::V5,
    };
    client.clean_start = cfg.clean_session;
    client.session_expiry = if cfg.clean_session {
        0
    } else {
        SESSION_EXPIRY_SECS
    };
    client.keep_alive = cfg.keep_alive;
    client.username = cfg.username.clone();
    client.password = cfg.password.clone().map(Bytes::from);
    client.reconnect_min = Duration::from_millis(100).min(cfg.reconnect_max);
    client.reconnect_max = cfg.reconnect_max;
    client.max_inflight = WINDOW as u16;
    Ok(BridgeSettings {
        name: cfg.name.clone(),
        address: cfg.address.clone(),
        client,
        out: cfg
            .out
            .iter()
            .map(|o| OutRule {
                local: o.local.clone(),
                remote_prefix: o.remote_prefix.clone(),
                qos: qos(o.qos),
            })
            .collect(),
        inbound: cfg
            .inbound
            .iter()
            .map(|i| InRule {
                remote: i.remote.clone(),
                local_prefix: i.local_prefix.clone(),
                qos: qos(i.qos),
            })
            .collect(),
        limits: QueueLimits {
            max_messages: cfg.queue.max_messages,
            max_bytes: cfg.queue.max_bytes,
            overflow: match cfg.queue.overflow {
                BridgeOverflow::DropOldest => Overflow::DropOldest,
                BridgeOverflow::DropNewest => Overflow::DropNewest,
            },
        },
        queue_dir: data_dir.join("bridge").join(&cfg.name),
        local_capacity: LOCAL_CAPACITY,
        window: WINDOW,
        signer,
    })
}

/// Starts every configured bridge on `broker`.
pub async fn start(
    broker: &Broker,
    configs: &[BridgeConfig],
    data_dir: &Path,
) -> Result<Vec<Bridge>, BridgeError> {
    let mut bridges = Vec::with_capacity(configs.len());
    for cfg in configs {
        let bridge = Bridge::start(broker.clone(), settings(cfg, data_dir)?).await?;
        tracing::info!(bridge = %cfg.name, remote = %cfg.address, "MQTT bridge started");
        bridges.push(bridge);
    }
    Ok(bridges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_becomes_bridge_settings() {
        let cfg = crate::config::parse(
            "b.toml",
            r#"
[[bridge]]
name = "ent"
address = "h:1883"
protocol = "5"
username = "u"
password = "p"
reconnect_max = "5s"
out = [{ local = "acme/#", remote_prefix = "site1/", qos = 2 }]
in = [{ remote = "cmd/#", local_prefix = "acme/" }]
queue = { max_messages = 10, max_bytes = 1000, overflow = "drop_newest" }
"#,
        )
        .expect("valid config");
        let s = settings(
            &cfg.get::<ironplant_mqtt::settings::Bridges>()[0],
            Path::new("/data"),
        )
        .expect("no signing key to read");
        assert_eq!(s.queue_dir, Path::new("/data/bridge/ent"));
        assert_eq!(s.client.client_id, "ironplant-ent");
        assert_eq!(s.client.version, ProtocolVersion::V5);
        assert!(!s.client.clean_start);
        assert_eq!(s.client.session_expiry, SESSION_EXPIRY_SECS);
        assert_eq!(s.client.password, Some(Bytes::from_static(b"p")));
        assert_eq!(s.client.reconnect_max, Duration::from_secs(5));
        assert_eq!(s.out[0].qos, QoS::ExactlyOnce);
        assert_eq!(s.inbound[0].qos, QoS::AtLeastOnce);
        assert_eq!(
            s.limits,
            QueueLimits {
                max_messages: 10,
                max_bytes: 1000,
                overflow: Overflow::DropNewest
            }
        );
        assert!(s.signer.is_none());
    }

    #[test]
    fn a_signing_bridge_reads_its_key_and_says_what_is_wrong() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("site-lyon.sign.key");
        let text = format!(
            "[[bridge]]\nname = \"ent\"\naddress = \"h:1883\"\nsign_key = {:?}\nout = [{{ local = \"acme/#\" }}]\n",
            key.display().to_string()
        );
        let cfg = crate::config::parse("b.toml", &text).expect("valid config");
        let b = &cfg.get::<ironplant_mqtt::settings::Bridges>()[0];
        assert_eq!(
            b.sign.as_ref().map(|s| s.signer.as_str()),
            Some("site-lyon")
        );
        // No key file yet: a clear error naming it.
        let e = settings(b, dir.path()).expect_err("no key file");
        assert!(e.to_string().contains("site-lyon.sign.key"), "{e}");
        let (signer, pkcs8) = ironplant_mqtt::signed::Signer::generate("x").expect("key");
        std::fs::write(&key, &pkcs8).expect("write key");
        let s = settings(b, dir.path()).expect("key read");
        let loaded = s.signer.expect("signs");
        assert_eq!(loaded.name(), "site-lyon");
        assert_eq!(loaded.public_key_hex(), signer.public_key_hex());
        // sign_as without a key is a config error.
        let bad = crate::config::parse(
            "b.toml",
            "[[bridge]]\nname = \"ent\"\naddress = \"h:1883\"\nsign_as = \"x\"\n",
        )
        .expect_err("sign_as alone");
        assert!(
            bad.to_string().contains("sign_as without sign_key"),
            "{bad}"
        );
    }
}
