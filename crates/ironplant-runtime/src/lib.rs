//! Ironplant runtime: builds the namespace and tag bus from a configuration, starts one task per
//! device, collects metrics, and offers the operations the API and CLI need (live values, writes).

pub mod metrics;

use std::collections::HashMap;
use std::sync::Arc;

use ironplant_core::config::{Config, Protocol};
use ironplant_core::{Namespace, TagBus, TagMeta, Value};
use ironplant_modbus::{DeviceHandle, DevicePoller, PollPoint, WriteError};

pub use metrics::Metrics;

/// Why a write through the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeWriteError {
    #[error("unknown tag {0}")]
    UnknownTag(String),
    #[error("tag {0} is not writable")]
    NotWritable(String),
    #[error("tag {0} has no device")]
    NoDevice(String),
    #[error("device {device}: {source}")]
    Device { device: String, source: WriteError },
}

/// A running platform: namespace, bus, metrics and device tasks. Dropping it stops the devices.
pub struct Runtime {
    pub namespace: Arc<Namespace>,
    pub bus: TagBus,
    pub metrics: Arc<Metrics>,
    devices: HashMap<String, DeviceHandle>,
}

impl Runtime {
    /// Starts every configured device on the current tokio runtime.
    pub fn start(config: &Config) -> Runtime {
        let namespace = Arc::new(config.namespace());
        let bus = TagBus::new(namespace.len());
        let metrics = Arc::new(Metrics::new(config.devices.iter().map(|d| d.id.clone())));
        let mut devices = HashMap::new();
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
                    tracing::info!(device = %dev.id, address = %dev.address, tags = points.len(), interval = ?dev.poll_interval, "starting device");
                    let poller = DevicePoller {
                        config: dev.clone(),
                        points,
                        bus: bus.clone(),
                        observer: metrics.clone(),
                    };
                    devices.insert(dev.id.clone(), poller.spawn());
                }
            }
        }
        Runtime {
            namespace,
            bus,
            metrics,
            devices,
        }
    }

    /// Writes `value` to a writable tag through its device (the command path builds on this).
    pub async fn write(&self, path: &str, value: Value) -> Result<(), RuntimeWriteError> {
        let meta: &TagMeta = self
            .namespace
            .lookup(path)
            .ok_or_else(|| RuntimeWriteError::UnknownTag(path.to_owned()))?;
        if !meta.writable {
            return Err(RuntimeWriteError::NotWritable(path.to_owned()));
        }
        let device_id = meta
            .device
            .as_deref()
            .ok_or_else(|| RuntimeWriteError::NoDevice(path.to_owned()))?;
        let device = self
            .devices
            .get(device_id)
            .ok_or_else(|| RuntimeWriteError::NoDevice(path.to_owned()))?;
        device
            .write(meta.id, value)
            .await
            .map_err(|source| RuntimeWriteError::Device {
                device: device_id.to_owned(),
                source,
            })
    }
}
