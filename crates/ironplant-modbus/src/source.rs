//! A Modbus TCP device as a platform [`Source`]: the runtime registers one per `[[device]]`,
//! and its supervisor restarts it (with a fresh connection) if its task fails.
//!
//! The write channel belongs to the source, not to a run: the [`ModbusWriter`] registered in
//! the platform's writers keeps working across restarts (writes queued while the device task
//! restarts wait for the next run).

use std::sync::Arc;

use ironplant_core::config::DeviceConfig;
use ironplant_core::{BoxFuture, ComponentError, Source, SourceContext};
use tokio::sync::{mpsc, Mutex};

use crate::poller::{DevicePoller, ModbusWriter, PollObserver, PollPoint, WriteCmd};

/// Writes waiting for the device task.
const WRITE_QUEUE: usize = 64;

/// One Modbus device: its configuration, the tags it serves, and its write channel.
pub struct ModbusSource {
    config: DeviceConfig,
    points: Vec<PollPoint>,
    observer: Arc<dyn PollObserver>,
    writer: Arc<ModbusWriter>,
    cmds: Mutex<mpsc::Receiver<WriteCmd>>,
}

impl ModbusSource {
    pub fn new(
        config: DeviceConfig,
        points: Vec<PollPoint>,
        observer: Arc<dyn PollObserver>,
    ) -> ModbusSource {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        ModbusSource {
            config,
            points,
            observer,
            writer: Arc::new(ModbusWriter { cmds: tx }),
            cmds: Mutex::new(rx),
        }
    }

    /// The device's writer (the same one for the life of the source).
    pub fn writer(&self) -> Arc<ModbusWriter> {
        self.writer.clone()
    }
}

impl Source for ModbusSource {
    fn name(&self) -> String {
        format!("modbus:{}", self.config.id)
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            if let Err(e) = ctx.writers.register(&self.config.id, self.writer.clone()) {
                tracing::error!(device = %self.config.id, error = %e, "writes to this device are refused");
            }
            let mut cmds = self.cmds.lock().await;
            let poller = DevicePoller {
                config: self.config.clone(),
                points: self.points.clone(),
                bus: ctx.bus.clone(),
                observer: self.observer.clone(),
            };
            tracing::info!(device = %self.config.id, address = %self.config.address, tags = self.points.len(), interval = ?self.config.poll_interval, "starting device");
            let mut shutdown = ctx.shutdown.clone();
            tokio::select! {
                _ = poller.run(&mut cmds) => Err(ComponentError::new("the device task ended")),
                _ = shutdown.requested() => Ok(()),
            }
        })
    }
}
