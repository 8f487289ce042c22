//! Ironplant runtime: builds the namespace and tag bus from a configuration, starts one task per
//! device, collects metrics, and offers the operations the API and CLI need (live values, writes).
//!
//! The composition root is [`Platform`] (module [`platform`]): it owns start-up order,
//! supervision ([`component`]) and ordered shutdown, and runs processors ([`pipeline`]) on the
//! bus's publish path. A sample published before a subscriber exists is never delivered to it,
//! so every subscriber exists before the first source starts.

pub mod bridges;
pub mod component;
pub mod config;
pub mod metrics;
pub mod pipeline;
pub mod platform;
pub mod sparkplug;
pub mod uns;
pub mod writers;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use ironplant_core::config::{Config, Protocol};
use ironplant_core::{
    DeviceWriteError, EventBus, LiveNamespace, Overflow, RegisterError, TagBus, TagId, TagMeta,
    Value, WriteAck,
};
use ironplant_historian::lossy::LossySpec;
use ironplant_historian::settings::{HistorianSettings, LossyMethod};
use ironplant_historian::{Historian, HistorianConfig, HistorianError};
use ironplant_modbus::{DeviceHandle, DevicePoller, PollPoint};
use ironplant_mqtt::Broker;
use parking_lot::Mutex;

pub use metrics::Metrics;
pub use platform::{Platform, PlatformBuilder};

/// Why a write through the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeWriteError {
    #[error("unknown tag {0}")]
    UnknownTag(String),
    #[error("tag {0} is not writable")]
    NotWritable(String),
    #[error("tag {0} has no device")]
    NoDevice(String),
    #[error("tag {path}: nothing writes to its source {device} (the connector is not running)")]
    NoWriter { path: String, device: String },
    #[error("cannot write to {path} ({device}): {source}")]
    Device {
        path: String,
        device: String,
        source: DeviceWriteError,
    },
}

/// A running platform: namespace, bus, metrics, historian and device tasks. Dropping it stops
/// the devices; [`Runtime::shutdown`] also closes the historian cleanly.
pub struct Runtime {
    /// The configured tags plus those added while running ([`Runtime::register_tag`]).
    pub namespace: Arc<LiveNamespace>,
    pub bus: TagBus,
    /// Events (alarms, commands, security and system events) beside the samples.
    pub events: EventBus,
    pub metrics: Arc<Metrics>,
    /// The device writers by source, filled by each connector as it starts (see [`writers`]).
    pub writers: writers::Writers,
    /// The historian, when the platform has a data directory and it is enabled.
    pub historian: Option<Historian>,
    /// The device tasks, once [`Runtime::start_sources`] ran.
    devices: OnceLock<HashMap<String, DeviceHandle>>,
    /// Device pollers built but not started yet.
    pending: Mutex<Vec<DevicePoller>>,
}

/// Why the platform cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the historian: {0}")]
    Historian(#[from] HistorianError),
    #[error(transparent)]
    Sparkplug(#[from] sparkplug::SparkplugError),
}

/// The platform with its standard components: [`Platform::builder`] with `broker` when there is
/// one, started. Call on a tokio runtime.
pub fn start_platform(
    config: &Config,
    data_dir: Option<&Path>,
    broker: Option<&Broker>,
) -> Result<Platform, StartError> {
    let mut b = Platform::builder(config.clone(), data_dir);
    if let Some(broker) = broker {
        b = b.broker(broker.clone());
    }
    b.start()
}

/// The historian's settings from the config, for a data directory.
pub fn historian_config(data_dir: &Path, s: &HistorianSettings) -> HistorianConfig {
    let mut c = HistorianConfig::new(data_dir.join("historian"));
    c.commit_interval = s.commit_interval;
    c.flush_interval = s.flush_interval;
    c.flush_samples = s.flush_samples;
    c.retention = s
        .retention
        .iter()
        .map(|r| ironplant_historian::Retention {
            prefix: r.prefix.clone(),
            keep: r.keep,
        })
        .collect();
    c.lossy = s
        .lossy
        .iter()
        .map(|l| {
            let spec = match l.method {
                LossyMethod::Deadband(deadband) => LossySpec::Deadband { deadband },
                LossyMethod::SwingingDoor {
                    deviation,
                    max_interval,
                } => LossySpec::SwingingDoor {
                    deviation,
                    max_interval_us: max_interval
                        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
                },
            };
            (l.prefix.clone(), spec)
        })
        .collect();
    c
}

/// Historian ids by tag id, extended when samples of tags added while running arrive.
struct HistorianIds {
    hids: Vec<u32>,
}

impl HistorianIds {
    /// Registers the namespace's tags the table does not cover yet (paths are registered once
    /// and keep their historian id across restarts).
    fn catch_up(
        &mut self,
        historian: &Historian,
        namespace: &LiveNamespace,
    ) -> Result<(), HistorianError> {
        if self.hids.len() >= namespace.len() {
            return Ok(());
        }
        let paths: Vec<_> = namespace
            .read()
            .tags()
            .skip(self.hids.len())
            .map(|t| t.path.clone())
            .collect();
        self.hids.extend(historian.register(&paths)?);
        Ok(())
    }
}

/// Feeds every sample of the bus into the historian, on its own thread (the historian's
/// submit blocks when its writer is saturated, which must not stall async workers). The bus
/// subscription is lossless (`Block`): a slow disk slows the adapters rather than losing data.
fn attach_historian(
    historian: &Historian,
    bus: &TagBus,
    namespace: Arc<LiveNamespace>,
) -> Result<(), HistorianError> {
    let mut ids = HistorianIds { hids: Vec::new() };
    ids.catch_up(historian, &namespace)?;
    let mut sub = bus.subscribe("historian", 256, Overflow::Block);
    let h = historian.clone();
    std::thread::Builder::new()
        .name("historian-ingest".into())
        .spawn(move || {
            while let Some(batch) = sub.blocking_recv() {
                // A tag added while running: its id is past the table (the namespace got it
                // before its first sample was published).
                if batch.iter().any(|s| s.tag.index() >= ids.hids.len()) {
                    if let Err(e) = ids.catch_up(&h, &namespace) {
                        tracing::error!(error = %e, "cannot register new tags in the historian; their samples are not stored");
                    }
                }
                let hids = &ids.hids;
                let samples = batch.iter().filter_map(|s| {
                    let hid = *hids.get(s.tag.index())?;
                    Some((hid, s.source_ts.0, s.value.clone(), s.quality))
                });
                if h.ingest(samples).is_err() {
                    return; // closed: the platform is shutting down
                }
            }
        })
        .map_err(|e| HistorianError::Storage(format!("cannot start the ingest thread: {e}")))?;
    Ok(())
}

impl Runtime {
    /// Starts every configured device on the current tokio runtime, and the historian in
    /// `data_dir/historian` when a data directory is given and the config enables it. A caller
    /// with more bus subscribers uses [`start_platform`] (or [`Runtime::build`], subscribes,
    /// then [`Runtime::start_sources`]) so they do not miss the first samples.
    pub fn start(config: &Config, data_dir: Option<&Path>) -> Result<Runtime, HistorianError> {
        let rt = Runtime::build(config, data_dir)?;
        rt.start_sources();
        Ok(rt)
    }

    /// Builds the namespace, the bus, the metrics and the historian (subscribed to the bus), and
    /// prepares the device pollers without starting them.
    pub fn build(config: &Config, data_dir: Option<&Path>) -> Result<Runtime, HistorianError> {
        let namespace = Arc::new(LiveNamespace::new(config.namespace()));
        let bus = TagBus::new(namespace.len());
        let metrics = Arc::new(Metrics::new(config.devices.iter().map(|d| d.id.clone())));
        let historian = match data_dir {
            Some(dir) if config.get::<HistorianSettings>().enabled => {
                let h = Historian::open(historian_config(dir, &config.get::<HistorianSettings>()))?;
                attach_historian(&h, &bus, namespace.clone())?;
                Some(h)
            }
            _ => None,
        };
        let mut pending = Vec::new();
        for dev in &config.devices {
            match dev.protocol {
                Protocol::ModbusTcp => {
                    let points: Vec<PollPoint> = config
                        .tags
                        .iter()
                        .filter(|t| t.device.as_deref() == Some(dev.id.as_str()))
                        .filter_map(|t| {
                            let meta = namespace.lookup(t.path.as_str())?;
                            Some(PollPoint {
                                tag: meta.id,
                                point: t.modbus.clone()?,
                                range: t.range,
                            })
                        })
                        .collect();
                    pending.push(DevicePoller {
                        config: dev.clone(),
                        points,
                        bus: bus.clone(),
                        observer: metrics.clone(),
                    });
                }
            }
        }
        Ok(Runtime {
            namespace,
            bus,
            events: EventBus::new(),
            metrics,
            writers: writers::Writers::new(),
            historian,
            devices: OnceLock::new(),
            pending: Mutex::new(pending),
        })
    }

    /// Starts the sources (one task per device) on the current tokio runtime; a second call
    /// does nothing. Returns the bus subscribers that exist now: they see every sample.
    pub fn start_sources(&self) -> Vec<String> {
        let subscribers: Vec<String> = self
            .bus
            .stats()
            .subscribers
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        let pollers = std::mem::take(&mut *self.pending.lock());
        if self.devices.get().is_some() {
            return subscribers;
        }
        let mut devices = HashMap::new();
        for poller in pollers {
            tracing::info!(device = %poller.config.id, address = %poller.config.address, tags = poller.points.len(), interval = ?poller.config.poll_interval, "starting device");
            let id = poller.config.id.clone();
            let handle = poller.spawn();
            if let Err(e) = self.writers.register(&id, Arc::new(handle.writer())) {
                tracing::error!(device = %id, error = %e, "device not writable");
            }
            devices.insert(id, handle);
        }
        tracing::debug!(?subscribers, "sources started after these bus subscribers");
        let _ = self.devices.set(devices);
        subscribers
    }

    /// Adds a tag while running (a Sparkplug metric's birth), or updates the metadata of the
    /// same source's tag at that path, keeping its id. Publish its samples only after this
    /// returns: every consumer learns of the tag from the namespace when it meets the id.
    pub fn register_tag(&self, meta: TagMeta) -> Result<TagId, RegisterError> {
        self.namespace.register(meta)
    }

    /// Stops the devices and closes the historian, flushing what it holds into chunks.
    pub fn shutdown(&self) {
        if let Some(h) = &self.historian {
            h.close();
        }
    }

    /// Prometheus text of every metric.
    pub fn render_metrics(&self) -> String {
        let historian = self.historian.as_ref().map(Historian::stats);
        self.metrics
            .render(&self.bus.stats(), self.namespace.len(), historian.as_ref())
    }

    /// Writes `value` to a writable tag through the writer of its source (a Modbus device, a
    /// Sparkplug edge node or device), resolving when the device acknowledged it. The command
    /// path (authorisation, limits, interlocks, audit) builds on this.
    pub async fn write(&self, path: &str, value: Value) -> Result<WriteAck, RuntimeWriteError> {
        let meta: TagMeta = self
            .namespace
            .lookup(path)
            .ok_or_else(|| RuntimeWriteError::UnknownTag(path.to_owned()))?;
        if !meta.writable {
            return Err(RuntimeWriteError::NotWritable(path.to_owned()));
        }
        let device = meta
            .device
            .clone()
            .ok_or_else(|| RuntimeWriteError::NoDevice(path.to_owned()))?;
        let writer = self
            .writers
            .get(&device)
            .ok_or_else(|| RuntimeWriteError::NoWriter {
                path: path.to_owned(),
                device: device.clone(),
            })?;
        writer
            .write(&meta, value)
            .await
            .map_err(|source| RuntimeWriteError::Device {
                path: path.to_owned(),
                device,
                source,
            })
    }
}
