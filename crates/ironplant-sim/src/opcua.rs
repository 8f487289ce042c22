//! The labeller ([`crate::labeller`]) as an OPC UA server, the way a modern machine exposes
//! itself: SignAndEncrypt, a user and password, its variables under `Objects/Labeller`, with
//! units and ranges, the glue setpoint writable. Built on Ironplant's own OPC UA server
//! (`ironplant_opcua::server`), whose address space and security are the same code that serves
//! the platform's Unified Namespace; the platform reads it through its OPC UA connector, like
//! any third-party server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ironplant_core::{BoxFuture, Quality, Timestamp, Value, ValueType};
use ironplant_opcua::pki::Pki;
use ironplant_opcua::server::{
    Backend, ServerError, ServerSettings, ServerTag, ServerUser, UnsServer, WriteRefusal,
};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::labeller::{Labeller, GLUE_RANGE};
use crate::plant::Readings;

/// The labeller's namespace URI (its NodeIds are `nsu=<this>;s=Labeller/<Name>`).
pub const NAMESPACE_URI: &str = "urn:ironplant-sim:labeller";
/// The labeller server's application URI.
pub const APPLICATION_URI: &str = "urn:ironplant-sim:labeller:server";

/// One of the labeller's variables: name, type, unit, range, writable.
pub type Variable = (
    &'static str,
    ValueType,
    Option<&'static str>,
    Option<(f64, f64)>,
    bool,
);

/// The labeller's variables.
pub const VARIABLES: [Variable; 6] = [
    (
        "Speed",
        ValueType::Float,
        Some("bpm"),
        Some((0.0, 700.0)),
        false,
    ),
    ("LabelsApplied", ValueType::Int, Some("labels"), None, false),
    (
        "LabelRoll",
        ValueType::Float,
        Some("%"),
        Some((0.0, 100.0)),
        false,
    ),
    (
        "GlueTemperature",
        ValueType::Float,
        Some("°C"),
        Some((0.0, 200.0)),
        false,
    ),
    (
        "GlueSetpoint",
        ValueType::Float,
        Some("°C"),
        Some(GLUE_RANGE),
        true,
    ),
    ("Ready", ValueType::Bool, None, None, false),
];

/// How to run the labeller's server.
#[derive(Debug, Clone)]
pub struct LabellerSettings {
    /// Its own certificates (a machine has its own).
    pub pki_dir: PathBuf,
    pub host: String,
    /// 0: any free port.
    pub port: u16,
    /// The one user it knows.
    pub user: String,
    pub password: String,
    pub seed: u64,
}

/// The running labeller.
pub struct LabellerServer {
    server: Arc<UnsServer>,
    task: tokio::task::JoinHandle<()>,
    /// Its application instance certificate (DER), for the platform to trust.
    pub certificate: Vec<u8>,
}

impl LabellerServer {
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Ok(server) = Arc::try_unwrap(self.server) {
            server.stop().await;
        }
    }
}

struct Machine {
    user: String,
    password: String,
    labeller: Arc<Mutex<Labeller>>,
}

impl Backend for Machine {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> BoxFuture<'static, Result<ServerUser, String>> {
        // Constant-time enough for a simulator: both compared in full.
        let ok = (user == self.user) & (password == self.password);
        let name = user.to_owned();
        Box::pin(async move {
            if ok {
                Ok(ServerUser {
                    name,
                    can_write: true,
                })
            } else {
                Err("unknown user or wrong password".to_owned())
            }
        })
    }

    fn write(
        &self,
        _user: &ServerUser,
        tag: &str,
        value: Value,
    ) -> BoxFuture<'static, Result<(), WriteRefusal>> {
        let result = match (tag, value.as_f64()) {
            ("Labeller/GlueSetpoint", Some(v)) => self
                .labeller
                .lock()
                .set_glue_setpoint(v)
                .map_err(WriteRefusal::OutOfRange),
            _ => Err(WriteRefusal::Refused(format!("{tag} is read-only"))),
        };
        Box::pin(async move { result })
    }
}

/// Starts the labeller's server following the filler's `readings` (a 100 ms step).
pub async fn start(
    s: LabellerSettings,
    mut readings: watch::Receiver<Readings>,
) -> Result<LabellerServer, ServerError> {
    let pki = Pki::open_or_create(&s.pki_dir, SystemTime::now()).map_err(|source| {
        ServerError::Certificate {
            dir: s.pki_dir.clone(),
            source,
        }
    })?;
    let labeller = Arc::new(Mutex::new(Labeller::new(s.seed)));
    let tags = VARIABLES
        .iter()
        .map(|(name, value_type, unit, range, writable)| ServerTag {
            path: format!("Labeller/{name}"),
            value_type: *value_type,
            unit: unit.map(str::to_owned),
            range: *range,
            writable: *writable,
            description: None,
        })
        .collect();
    let settings = ServerSettings {
        host: s.host.clone(),
        port: s.port,
        hostnames: vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
        application_uri: APPLICATION_URI.to_owned(),
        namespace_uri: NAMESPACE_URI.to_owned(),
        root: "Machine".to_owned(),
        allow_none: false,
        sign_only: false,
        writes: true,
        max_sessions: 8,
    };
    let backend = Arc::new(Machine {
        user: s.user.clone(),
        password: s.password.clone(),
        labeller: labeller.clone(),
    });
    let server = Arc::new(UnsServer::start(&pki, settings, tags, backend).await?);
    let certificate = pki
        .application_certificate(
            APPLICATION_URI,
            &["127.0.0.1".to_owned(), "localhost".to_owned()],
            SystemTime::now(),
        )
        .map_err(|source| ServerError::Certificate {
            dir: s.pki_dir.clone(),
            source,
        })?
        .der;
    let feed = server.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let filler = readings.borrow_and_update().clone();
            let r = {
                let mut l = labeller.lock();
                l.step(Duration::from_millis(100), &filler);
                l.readings().clone()
            };
            let now = Timestamp::now();
            let values = [
                Value::Float(r.speed),
                Value::Int(i64::try_from(r.labels_applied).unwrap_or(i64::MAX)),
                Value::Float(r.label_roll),
                Value::Float(r.glue_temp),
                Value::Float(r.glue_setpoint),
                Value::Bool(r.ready),
            ];
            let paths: Vec<String> = VARIABLES
                .iter()
                .map(|(n, ..)| format!("Labeller/{n}"))
                .collect();
            feed.publish(
                paths
                    .iter()
                    .zip(&values)
                    .map(|(p, v)| (p.as_str(), v, Quality::GOOD, now)),
            );
        }
    });
    Ok(LabellerServer {
        server,
        task,
        certificate,
    })
}

/// The `[opcua]` part of the demo's config: the labeller's connection (at `url`, user
/// `user`, password `password`) and its variables as tags under `asset`.
pub fn demo_config(url: &str, user: &str, password: &str, asset: &str) -> String {
    let mut out = format!(
        "\n# The labeller speaks OPC UA (the simulator's own server, SignAndEncrypt).\n\
         [[opcua.connection]]\nid = \"labeller\"\nurl = \"{url}\"\nuser = \"{user}\"\n\
         password = \"{password}\"\npublishing_interval = \"500ms\"\nsampling_interval = \"250ms\"\n"
    );
    for (name, value_type, unit, range, writable) in VARIABLES {
        let tag = snake(name);
        out.push_str(&format!(
            "\n[[opcua.node]]\nconnection = \"labeller\"\nnode = \"nsu={NAMESPACE_URI};s=Labeller/{name}\"\ntag = \"{asset}/{tag}\"\ntype = \"{}\"\n",
            value_type.as_str()
        ));
        if let Some(u) = unit {
            out.push_str(&format!("unit = \"{u}\"\n"));
        }
        if let Some((lo, hi)) = range {
            out.push_str(&format!("range = [{lo:?}, {hi:?}]\n"));
        }
        if writable {
            out.push_str("writable = true\n");
        }
        if name == "GlueTemperature" {
            out.push_str("deadband = 0.1\n");
        }
    }
    out
}

/// `LabelRoll` → `label_roll`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_tag_levels() {
        assert_eq!(snake("GlueSetpoint"), "glue_setpoint");
        assert_eq!(snake("Speed"), "speed");
    }
}
