//! The running platform's audit witness: every minute and at shutdown, the audit log's signed
//! head statement goes out as a retained MQTT message on `$SYS/ironplant/audit/head` (a
//! bridge can carry it to another site) and, when `IRONPLANT_AUDIT_WITNESS` names a file
//! outside the data directory, is appended to it. `ironplant audit verify --witness FILE`
//! later proves the log was not rolled back or wiped since.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ironplant_mqtt::codec::{MqttString, Publish};
use ironplant_mqtt::Broker;
use ironplant_security::audit::HEAD_TOPIC;
use ironplant_security::AuditLog;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The environment variable naming the witness file.
pub const WITNESS_ENV: &str = "IRONPLANT_AUDIT_WITNESS";

/// How often the head is published while the platform runs.
pub const EVERY: Duration = Duration::from_secs(60);

/// The witness file from [`WITNESS_ENV`], refused when it lies inside the data directory
/// (whoever can roll back the data directory could roll it back too).
pub fn witness_from_env(data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Some(raw) = std::env::var_os(WITNESS_ENV).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(raw);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let parent = parent.canonicalize().with_context(|| {
        format!(
            "{WITNESS_ENV}={}: its directory {} does not exist; create it (outside the data directory) or unset {WITNESS_ENV}",
            path.display(),
            parent.display()
        )
    })?;
    let data = data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve the data directory {}", data_dir.display()))?;
    if parent.starts_with(&data) {
        anyhow::bail!(
            "{WITNESS_ENV}={} is inside the data directory {}: a witness must live elsewhere (another disk, a log host's mount) so that rolling back the data directory cannot roll it back too",
            path.display(),
            data.display()
        );
    }
    Ok(Some(parent.join(path.file_name().unwrap_or_default())))
}

/// The periodic publisher; [`HeadPublisher::stop`] publishes a last time.
pub struct HeadPublisher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts publishing the head of `audit` now and every `every`.
pub fn start(
    audit: Arc<AuditLog>,
    broker: Option<Broker>,
    witness: Option<PathBuf>,
    every: Duration,
) -> HeadPublisher {
    if let Some(w) = &witness {
        tracing::info!(witness = %w.display(), topic = HEAD_TOPIC, "audit head: published and appended to the witness file every {}s and at shutdown", every.as_secs());
    }
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut stopped => true,
            };
            let (a, b, w) = (audit.clone(), broker.clone(), witness.clone());
            let done = tokio::task::spawn_blocking(move || publish(&a, b.as_ref(), w.as_deref()));
            if let Err(e) = done.await {
                tracing::error!(error = %e, "audit head: the publishing task failed");
            }
            if last {
                break;
            }
        }
    });
    HeadPublisher { stop, task }
}

impl HeadPublisher {
    /// Publishes the final head (call before the broker closes) and ends the task.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "audit head: the publisher ended abnormally");
        }
    }
}

/// One head statement: to the broker (retained) and to the witness file (one line, fsynced).
fn publish(audit: &AuditLog, broker: Option<&Broker>, witness: Option<&Path>) {
    let statement = match audit.head_statement() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "audit head: cannot sign the head of the audit log; run `ironplant audit verify`");
            return;
        }
    };
    let line = statement.to_line();
    if let Some(broker) = broker {
        let topic = MqttString::try_from(HEAD_TOPIC).expect("a valid constant topic");
        let mut p = Publish::new(topic, line.clone().into_bytes().into());
        p.retain = true;
        broker.publish(p);
    }
    if let Some(path) = witness {
        let written = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| {
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_data()
            });
        if let Err(e) = written {
            tracing::error!(witness = %path.display(), error = %e, "audit head: cannot append to the witness file");
        }
    }
}
