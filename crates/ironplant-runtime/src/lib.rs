//! Ironplant runtime: builds the namespace and tag bus from a configuration, starts one task per
//! device, collects metrics, and offers the operations the API and CLI need (live values, writes).
//!
//! The composition root is [`Platform`] (module [`platform`]): it owns start-up order,
//! supervision ([`component`]) and ordered shutdown, and runs processors ([`pipeline`]) on the
//! bus's publish path. A sample published before a subscriber exists is never delivered to it,
//! so every subscriber exists before the first source starts.

pub mod alarms;
pub mod bridges;
pub mod commands;
pub mod component;
pub mod config;
pub mod control;
pub mod events;
pub mod integrity;
pub mod metrics;
pub mod pipeline;
pub mod platform;
pub mod saved;
pub mod sparkplug;
pub mod uns;
/// The write path's directory (in core, so connectors register their writers themselves).
pub use ironplant_core::writers;

use std::path::Path;
use std::sync::Arc;

use ironplant_core::config::{Config, Protocol};
use ironplant_core::{
    BoxFuture, ComponentError, DeviceWriteError, EventBus, LiveNamespace, Overflow, RegisterError,
    Sink, SinkContext, SinkQueue, Source, TagBus, TagId, TagMeta, Value, WriteAck,
};
use ironplant_historian::lossy::LossySpec;
use ironplant_historian::settings::{HistorianSettings, LossyMethod};
use ironplant_historian::{Historian, HistorianConfig, HistorianError};
use ironplant_modbus::{ModbusSource, PollPoint};
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
    /// The `[[ingest.json]]` mappings (JSON over MQTT and HTTP), shared by the MQTT source and
    /// the API's ingest route.
    pub ingest: Arc<ironplant_ingest::JsonIngest>,
    /// The configured alarms (`[[alarm]]`), when there are any.
    pub alarms: Option<Arc<alarms::Alarms>>,
    /// The command path (`[[command]]`, `[[interlock]]`): every write from the API and MQTT.
    pub commands: Arc<commands::Commands>,
    /// The data integrity checks (`[integrity]`, on by default).
    pub integrity: Arc<integrity::Integrity>,
    /// Runs the components (sources, sinks, services): restarts and ordered shutdown.
    pub(crate) supervisor: component::Supervisor,
}

/// Why the platform cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the historian: {0}")]
    Historian(#[from] HistorianError),
    #[error(transparent)]
    Sparkplug(#[from] sparkplug::SparkplugError),
    #[error(transparent)]
    Alarms(#[from] alarms::AlarmStartError),
    #[error(transparent)]
    Logic(#[from] control::LogicStartError),
    #[error(transparent)]
    Integrity(#[from] integrity::IntegrityStartError),
    #[error("cannot start the OPC UA connectors: {0}")]
    Opcua(String),
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
    c.event_retention = Some(s.event_retention);
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

/// The historian as a sink: every sample of the bus, lossless (`Block`: a slow disk slows the
/// sources rather than losing data). Each batch is handed to the historian on a blocking
/// thread (its submit blocks while its writer is saturated, which must not stall async
/// workers). Historian ids survive the sink's restarts.
pub struct HistorianSink {
    historian: Historian,
    ids: Arc<Mutex<HistorianIds>>,
}

impl HistorianSink {
    /// A sink for `historian`, registering the namespace's tags now.
    pub fn new(
        historian: Historian,
        namespace: &LiveNamespace,
    ) -> Result<HistorianSink, HistorianError> {
        let mut ids = HistorianIds { hids: Vec::new() };
        ids.catch_up(&historian, namespace)?;
        Ok(HistorianSink {
            historian,
            ids: Arc::new(Mutex::new(ids)),
        })
    }
}

impl Sink for HistorianSink {
    fn name(&self) -> String {
        "historian".to_owned()
    }

    fn queue(&self) -> SinkQueue {
        SinkQueue {
            capacity: 256,
            overflow: Overflow::Block,
        }
    }

    fn run(self: Arc<Self>, ctx: SinkContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            let mut input = ctx.input().await;
            while let Some(batch) = input.next().await {
                self.store(batch, &ctx.namespace).await?;
            }
            Ok(())
        })
    }
}

impl HistorianSink {
    async fn store(
        &self,
        batch: ironplant_core::Batch,
        namespace: &Arc<LiveNamespace>,
    ) -> Result<(), ComponentError> {
        let h = self.historian.clone();
        let ids = self.ids.clone();
        let namespace = namespace.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let mut ids = ids.lock();
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
            h.ingest(samples)
        })
        .await;
        match stored {
            Ok(Ok(_)) => Ok(()),
            // Closed: the platform is shutting down; nothing more can be stored.
            Ok(Err(e)) => Err(ComponentError::new(format!(
                "the historian refused a batch: {e}"
            ))),
            Err(e) => Err(ComponentError::new(format!("historian ingest failed: {e}"))),
        }
    }
}

impl Runtime {
    /// Builds and starts the platform `config` describes without a broker (no UNS, no
    /// Sparkplug host): the historian in `data_dir/historian` when given and enabled, and the
    /// devices. The runtime is shared; [`Runtime::shutdown`] stops it.
    pub fn start(config: &Config, data_dir: Option<&Path>) -> Result<Arc<Runtime>, StartError> {
        Ok(Platform::builder(config.clone(), data_dir).start()?.runtime)
    }

    /// Builds the namespace, the buses, the metrics, the historian and the supervisor, without
    /// starting anything ([`Platform::builder`] starts the components in order).
    pub fn build(config: &Config, data_dir: Option<&Path>) -> Result<Runtime, StartError> {
        Runtime::build_with(config, data_dir, component::RestartPolicy::default())
    }

    pub(crate) fn build_with(
        config: &Config,
        data_dir: Option<&Path>,
        policy: component::RestartPolicy,
    ) -> Result<Runtime, StartError> {
        let namespace = Arc::new(LiveNamespace::new(config.namespace()));
        let bus = TagBus::new(namespace.len());
        let events = EventBus::new();
        let writers = writers::Writers::new();
        let metrics = Arc::new(Metrics::new(config.devices.iter().map(|d| d.id.clone())));
        let historian = match data_dir {
            Some(dir) if config.get::<HistorianSettings>().enabled => {
                let h = Historian::open(historian_config(dir, &config.get::<HistorianSettings>()))?;
                events::attach_store(h.events(), &events).map_err(|e| {
                    HistorianError::Storage(format!(
                        "cannot start the event store's ingest thread: {e}"
                    ))
                })?;
                Some(h)
            }
            _ => None,
        };
        metrics.attach_events(
            events.clone(),
            historian.as_ref().map(|h| h.events().clone()),
        );
        let ingest = Arc::new(ironplant_ingest::JsonIngest::new(
            ironplant_ingest::IngestSettings::clone(
                &config.get::<ironplant_ingest::IngestSettings>(),
            ),
        ));
        // Fixed paths exist before any payload arrives; templated ones are born at first sight.
        for e in ingest.register_tags(&namespace) {
            tracing::error!(error = %e, "an [[ingest.json]] tag is not recorded");
        }
        // Restored before the first sample: a restart re-raises nothing and loses no
        // unacknowledged alarm.
        control::register_alarm_inputs(config, &namespace)?;
        control::register_finding_inputs(config, &namespace)?;
        let integrity = integrity::Integrity::open(config, &namespace, data_dir, &events)?;
        let alarms = alarms::Alarms::open(
            config,
            &namespace.read(),
            data_dir,
            &events,
            historian.as_ref().map(|h| h.events()),
            integrity.alarm_defs(),
        )?;
        let commands = commands::Commands::open(config, &namespace.read(), data_dir, &events);
        let supervisor = component::Supervisor::new(
            bus.clone(),
            events.clone(),
            namespace.clone(),
            writers.clone(),
            policy,
        );
        Ok(Runtime {
            namespace,
            bus,
            events,
            metrics,
            writers,
            historian,
            ingest,
            alarms,
            commands,
            integrity,
            supervisor,
        })
    }

    /// The configured devices as sources (one per `[[device]]`), in config order.
    pub(crate) fn device_sources(&self, config: &Config) -> Vec<Arc<dyn Source>> {
        let mut out: Vec<Arc<dyn Source>> = Vec::new();
        for dev in &config.devices {
            match dev.protocol {
                Protocol::ModbusTcp => {
                    let points: Vec<PollPoint> = config
                        .tags
                        .iter()
                        .filter(|t| t.device.as_deref() == Some(dev.id.as_str()))
                        .filter_map(|t| {
                            let meta = self.namespace.lookup(t.path.as_str())?;
                            Some(PollPoint {
                                tag: meta.id,
                                point: t.modbus.clone()?,
                                range: t.range,
                            })
                        })
                        .collect();
                    out.push(Arc::new(ModbusSource::new(
                        dev.clone(),
                        points,
                        self.metrics.clone(),
                    )));
                }
            }
        }
        out
    }

    /// Every component with its role, state and restarts.
    pub fn components(&self) -> Vec<Arc<component::ComponentStats>> {
        self.supervisor.components()
    }

    /// Adds a tag while running (a Sparkplug metric's birth), or updates the metadata of the
    /// same source's tag at that path, keeping its id. Publish its samples only after this
    /// returns: every consumer learns of the tag from the namespace when it meets the id.
    pub fn register_tag(&self, meta: TagMeta) -> Result<TagId, RegisterError> {
        self.namespace.register(meta)
    }

    /// Asks every component to stop (without waiting) and closes the historian, flushing
    /// what it holds into chunks. [`Platform::shutdown`] stops them in order and waits first.
    pub fn shutdown(&self) {
        self.supervisor.request_stop();
        if let Some(h) = &self.historian {
            h.close();
        }
    }

    /// Prometheus text of every metric.
    pub fn render_metrics(&self) -> String {
        let historian = self.historian.as_ref().map(Historian::stats);
        let mut text =
            self.metrics
                .render(&self.bus.stats(), self.namespace.len(), historian.as_ref());
        text.push_str(&self.ingest.render_metrics());
        metrics::render_components(&mut text, &self.components());
        text
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
